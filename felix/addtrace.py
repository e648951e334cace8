"""felix.addtrace: per-ADD stage timings, from the CNI request to the BGP announce.

Every CNI ADD the agent serves opens a trace (id: the container id) that each part
of the path marks as it finishes its stage, so the slow stage is named by data:

  cni_start       the shim's start (``L3NET_CNI_STARTED``) -> the agent's plugin begins
  ipam            -> the addresses are claimed (validation, datastore probe, node lock, etcd)
  wire            -> the veth pair, addresses and routes in the pod's namespace
  endpoint_write  -> the WorkloadEndpoint is committed in etcd
  watch_delivery  -> the agent's sync loop has the endpoint (syncer watch, thread hop)
  coalesce        -> a route-side calculation starts that includes it (min_interval, an apply in flight)
  calculation     -> the desired state is computed
  apply           -> the route side has written the kernel (route in the local kernel)
  bgp_announce    -> the advertisements are written to ExaBGP's pipe

The shim sends its own ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every
process (and network namespace) on the host, so the agent can date the shim's start.
A stage's duration is its mark minus the previous stage's mark, so the stages add
up to the whole. The watch may hand the endpoint to the loop before the writing
thread gets etcd's answer: the commit is then dated by the delivery (the earlier
proof that it happened), so marks never go backwards.

The block branch: an ADD whose address lies in a block no node held yet makes IPAM
claim that block (an affinity for this node); the agent installs the block's route and
announces it from that update, in parallel with ``wire`` and ``endpoint_write``. So a
trace also follows the first update under its ``claims`` prefix (this node's
affinities; the loop hands over an affinity only once it is confirmed) delivered
before its endpoint: ``block`` holds that branch's own ``watch_delivery``, ``coalesce``,
``calculation``, ``apply`` and ``bgp_announce`` marks (times from the trace's start).
Two ADDs in flight when one block is claimed both see it: the branch says when the
node's block went out, not which ADD asked for it.

The policy branch: the pod is policed (and an ADD with ``policy_setup_timeout_seconds``
returns) once the policy side has applied a revision that holds its endpoint. That
side runs apart from the route side, so ``policy`` holds its own marks, from the
endpoint's ``watch_delivery``: ``coalesce`` (-> the policy side starts an apply that
covers it: its apply credits, an apply in flight), ``route_wait`` (-> the route apply
in flight is done: the head start the policy side gives it, ``policy_defer``),
``calculation`` (the policy program) and ``apply`` (ipsets and iptables in the
kernel). The branch may end before or after the route side ends the trace; a
finished trace keeps taking its policy marks until its policy apply.

:class:`TraceBook` owns the traces; thread-safe (CNI worker threads mark the first
stages, the loop thread the rest). Memory is bounded: at most ``max_open`` traces
in flight (the oldest is dropped, e.g. an ADD that failed) and the last
``keep`` finished ones. Finished traces feed ``l3net_add_stage_seconds``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from l3net import metrics

STAGES = ("cni_start", "ipam", "wire", "endpoint_write", "watch_delivery", "coalesce", "calculation", "apply",
          "bgp_announce")
BLOCK_STAGES = ("watch_delivery", "coalesce", "calculation", "apply", "bgp_announce")
POLICY_STAGES = ("coalesce", "route_wait", "calculation", "apply")
ENDPOINT, BLOCK, POLICY = "endpoint", "block", "policy"
# What the route side hands back and forth: (trace id, branch).
Token = tuple[str, str]
# A start stamp older than this (or in the future) is not the shim's: the trace starts at the agent.
MAX_SHIM_AGE = 120.0
KEEP = 256
MAX_OPEN = 256


@dataclass
class Trace:
    """One ADD's marks: stage -> monotonic time; ``start`` is the origin (the shim's start when known)."""

    id: str
    key: str
    start: float
    wall_start: float
    claims: str = ""  # key prefix of this node's block affinities ("" : no block branch)
    marks: dict[str, float] = field(default_factory=dict)
    revision: int | None = None  # the model revision the loop saw the endpoint in
    block: dict[str, float] = field(default_factory=dict)  # the block branch's marks (BLOCK_STAGES)
    block_revision: int | None = None
    policy: dict[str, float] = field(default_factory=dict)  # the policy branch's marks (POLICY_STAGES)
    done: bool = False

    def branch(self, name: str) -> dict[str, float]:
        return self.block if name == BLOCK else self.policy if name == POLICY else self.marks

    def policy_stages(self) -> list[tuple[str, float]]:
        """(stage, its duration) of the policy branch in path order, from the endpoint's ``watch_delivery``."""
        out: list[tuple[str, float]] = []
        prev = self.marks.get("watch_delivery")
        if prev is None:
            return out
        for name in POLICY_STAGES:
            if name in self.policy:
                out.append((name, self.policy[name] - prev))
                prev = self.policy[name]
        return out

    def last(self) -> float:
        return max(self.marks.values(), default=self.start)

    def stages(self) -> list[tuple[str, float, float]]:
        """(stage, its mark, its duration) in path order, for the stages that were marked."""
        out, prev = [], self.start
        for name in STAGES:
            if name in self.marks:
                at = self.marks[name]
                out.append((name, at, at - prev))
                prev = at
        return out

    def to_dict(self) -> dict[str, Any]:
        stages = [{"stage": n, "seconds": round(d, 6), "at_s": round(at - self.start, 6), "mono": round(at, 6)}
                  for n, at, d in self.stages()]
        block = [{"stage": n, "at_s": round(self.block[n] - self.start, 6), "mono": round(self.block[n], 6)}
                 for n in BLOCK_STAGES if n in self.block]
        policy = [{"stage": n, "seconds": round(d, 6), "at_s": round(self.policy[n] - self.start, 6),
                   "mono": round(self.policy[n], 6)} for n, d in self.policy_stages()]
        return {"id": self.id, "key": self.key, "complete": self.done, "start_mono": round(self.start, 6),
                "start_wall": round(self.wall_start, 6), "total_s": round(self.last() - self.start, 6),
                "stages": stages, "block": block, "policy": policy,
                "policy_complete": "apply" in self.policy}


class TraceBook:
    """Open and finished ADD traces; see the module docstring. Never raises for an unknown id or key."""

    def __init__(self, *, keep: int = KEEP, max_open: int = MAX_OPEN, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, observe: bool = True) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall = wall
        self._observe = observe
        self.max_open = max_open
        self._open: collections.OrderedDict[str, Trace] = collections.OrderedDict()
        # Traces whose policy branch is still running: open ones, and finished ones whose policy side is later.
        self._policy_open: collections.OrderedDict[str, Trace] = collections.OrderedDict()
        self._by_key: dict[str, str] = {}
        self._finished: collections.deque[Trace] = collections.deque(maxlen=keep)
        self.dropped = 0

    # -- CNI side (worker threads) -------------------------------------------------
    def begin(self, trace_id: str, key: str, shim_started: float | None = None, claims: str = "") -> None:
        """Open a trace for an ADD whose endpoint will be written at ``key``; a reused id starts over.

        ``claims``: the key prefix of this node's block affinities (the block branch; "" for none).
        """
        now = self._clock()
        with self._lock:
            self._discard(trace_id)
            start = now
            if shim_started is not None and 0 <= now - shim_started <= MAX_SHIM_AGE:
                start = shim_started
            tr = Trace(trace_id, key, start, self._wall() - (now - start), claims)
            tr.marks["cni_start"] = now
            self._open[trace_id] = tr
            self._policy_open[trace_id] = tr
            self._by_key[key] = trace_id
            while len(self._open) > self.max_open:
                _old_id, old = self._open.popitem(last=False)
                self._by_key.pop(old.key, None)
                self._policy_open.pop(old.id, None)
                self.dropped += 1
            while len(self._policy_open) > self.max_open:  # finished traces whose policy apply never came
                self._policy_open.popitem(last=False)

    def mark(self, trace_id: str, stage: str) -> None:
        """``stage`` of ``trace_id`` ends now (kept at or after the marks already made)."""
        with self._lock:
            tr = self._open.get(trace_id)
            if tr is not None and stage not in tr.marks:
                tr.marks[stage] = self._clock()

    def abandon(self, trace_id: str) -> None:
        """The ADD failed: its trace is dropped (a failed ADD has no later stages to wait for)."""
        with self._lock:
            self._discard(trace_id)

    # -- loop side (the agent's event-loop thread) ---------------------------------
    def delivered(self, keys: Iterable[str], revision: int) -> None:
        """The loop's model now holds these keys (at model ``revision``): ``watch_delivery`` for open traces."""
        if not self._by_key:
            return
        now = self._clock()
        with self._lock:
            # Traces still waiting for a block claim share one or two prefixes: test each key once per prefix,
            # not once per open trace (a resync delivers thousands of keys).
            claims = {tr.claims for tr in self._open.values() if tr.claims and not tr.block}
            for key in keys:
                if claims and any(key.startswith(c) for c in claims):
                    self._claimed(key, revision, now)
                tid = self._by_key.get(key)
                tr = self._open.get(tid) if tid is not None else None
                if tr is None or "watch_delivery" in tr.marks:
                    continue
                # The commit happened no later than its delivery, whichever thread heard of it first.
                tr.marks["endpoint_write"] = min(tr.marks.get("endpoint_write", now), now)
                for earlier in ("ipam", "wire"):
                    tr.marks.setdefault(earlier, tr.marks["endpoint_write"])
                tr.marks["watch_delivery"] = now
                tr.revision = revision

    def _claimed(self, key: str, revision: int, now: float) -> None:
        """A block affinity of this node arrived: the block branch of traces still waiting for their endpoint."""
        for tr in self._open.values():
            if tr.claims and key.startswith(tr.claims) and not tr.block and "watch_delivery" not in tr.marks:
                tr.block["watch_delivery"] = now
                tr.block_revision = revision

    def calculating(self, revision: int) -> list[Token]:
        """A route-side calculation of model ``revision`` starts: the branches it covers (``coalesce`` ends)."""
        if not self._open:
            return []
        now = self._clock()
        tokens: list[Token] = []
        with self._lock:
            for tid, tr in self._open.items():
                if tr.block_revision is not None and tr.block_revision <= revision and "coalesce" not in tr.block:
                    tr.block["coalesce"] = now
                    tokens.append((tid, BLOCK))
                if tr.revision is not None and tr.revision <= revision and "coalesce" not in tr.marks:
                    tr.marks["coalesce"] = now
                    tokens.append((tid, ENDPOINT))
        return tokens

    def policy_calculating(self, revision: int) -> list[Token]:
        """The policy side starts an apply that will compute model ``revision`` or later: the policy branches of
        the traces whose endpoint it holds (their ``coalesce`` ends); each is covered once."""
        if not self._policy_open:
            return []
        now = self._clock()
        tokens: list[Token] = []
        with self._lock:
            for tid, tr in self._policy_open.items():
                if tr.revision is not None and tr.revision <= revision and "coalesce" not in tr.policy:
                    tr.policy["coalesce"] = now
                    tokens.append((tid, POLICY))
        return tokens

    def _branch_owner(self, tid: str, branch: str) -> Trace | None:
        return (self._policy_open if branch == POLICY else self._open).get(tid)

    def mark_all(self, tokens: Iterable[Token], stage: str) -> None:
        now = self._clock()
        with self._lock:
            for tid, branch in tokens:
                tr = self._branch_owner(tid, branch)
                if tr is not None:
                    tr.branch(branch).setdefault(stage, now)

    def finish(self, tokens: Iterable[Token]) -> None:
        """These branches have reached their last stage: an endpoint branch ends its trace (observed into the
        histogram and kept), a policy branch is observed (its trace may still be open, or already kept)."""
        with self._lock:
            for tid, branch in tokens:
                if branch == POLICY:
                    self._finish_policy(tid)
                if branch != ENDPOINT:
                    continue  # the block and policy branches end with their own marks; the trace, with its endpoint
                tr = self._open.pop(tid, None)
                if tr is None:
                    continue
                self._by_key.pop(tr.key, None)
                tr.done = True
                self._finished.append(tr)
                if self._observe:
                    for name, _at, seconds in tr.stages():
                        metrics.ADD_STAGE_TIME.labels(stage=name).observe(max(0.0, seconds))

    def _finish_policy(self, tid: str) -> None:
        tr = self._policy_open.pop(tid, None)
        if tr is not None and self._observe:
            for name, seconds in tr.policy_stages():
                metrics.ADD_STAGE_TIME.labels(stage=f"policy_{name}").observe(max(0.0, seconds))

    def requeue(self, tokens: Iterable[Token]) -> None:
        """The apply that covered these branches failed: a later calculation covers them again."""
        with self._lock:
            for tid, branch in tokens:
                tr = self._branch_owner(tid, branch)
                if tr is not None:
                    for name in ("coalesce", "route_wait", "calculation", "apply", "bgp_announce"):
                        tr.branch(branch).pop(name, None)

    # -- readers -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The last finished traces (oldest first) and those still open, as JSON-ready values."""
        with self._lock:
            return {"stages": list(STAGES), "policy_stages": list(POLICY_STAGES),
                    "finished": [t.to_dict() for t in self._finished],
                    "open": [t.to_dict() for t in self._open.values()], "dropped": self.dropped}

    def _discard(self, trace_id: str) -> None:
        old = self._open.pop(trace_id, None)
        self._policy_open.pop(trace_id, None)
        if old is not None:
            self._by_key.pop(old.key, None)


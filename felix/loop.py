"""felix.loop: the agent's one asyncio loop: inputs mark dirty, each dataplane side applies on its own.

Inputs (datastore updates, in-sync and status from the syncer, link snapshots,
learned BGP routes) only update the model and mark both sides dirty. The two
sides are independent (DESIGN §7): the route side (interfaces, routes) and the
policy side (ipsets, iptables) each have their own dirty flag, in-flight apply,
I/O thread, failure count and backoff with jitter, so a held xtables lock or a
refused ruleset never delays a new pod's route, and a netlink error never holds
back policy. :meth:`SyncLoop.run` starts a side's apply when the datastore is in
sync, the side is dirty and idle, and its throttle admits; a full refresh every
``refresh_interval`` re-reads the kernel and heals drift.

The throttle is a rate limit, not a delay (kube-proxy's bounded-frequency runner):
each side holds up to ``burst`` apply credits, one refilled per ``min_interval``, and
an apply spends one. So the first event after a quiet period is applied at once,
and so are the few that follow it closely (one pod ADD makes at most two: IPAM's
confirmed block claim and the WorkloadEndpoint; IPAM's pending claim and the new
veth, before an endpoint names it, change nothing and mark nothing); events that
arrive while an apply runs are coalesced into the next one, and under a sustained
stream of events the side applies at most once per ``min_interval``. (A window
timed from the previous apply made the second and third event of every ADD wait
out most of it.)

One exception to the throttle: a change of the learned routes makes the route
side *urgent*, and an urgent side applies as soon as it is idle, whatever its
credits. A withdraw (a prefix gone, or one of its next hops gone: a BGP or BFD
session down) because traffic to a dead next hop is black-holed until the route
goes; an addition because it is what makes a new pod on another node reachable,
and it comes while the same ADD's block claim and endpoint have spent this node's
credits (BIRD on a Calico node installs both at once). An urgent apply spends no
credit either: on a Calico node BIRD's installs never touch Felix's throttle, and here
every new block anywhere in the cluster would otherwise spend the credits this
node's own pods then wait for. Learned routes stay batched by the apply itself:
changes that arrive while one runs go into the next.

Degrade, never die: a failed apply is retried with backoff (capped at
``retry_max``), forever, with the side reported not ready; after
``max_failures`` in a row the log escalates to ERROR, and the agent never exits
for it. What the kernel refuses is narrowed to the object at fault: a route is
skipped (``l3net_routes_refused``, retried when the links change or on the next
refresh), a policy or endpoint is quarantined (:mod:`felix.quarantine`); both
are listed under ``warnings`` in the readiness body while the node stays ready.

Nothing is written before the first in-sync. Learned routes that disappear are
kept until BGP has converged or the startup sweep delay has passed, so a
restarted agent does not withdraw routes its peers are about to re-send.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from felix.addtrace import Token, TraceBook
from felix.calc import BuildBGPView, BuildPolicy, Calculation, KeyUpdateLike, Model
from felix.dataplane import Dataplane
from felix.desired import DesiredState
from felix.links import Link
from felix.quarantine import REFUSALS, PolicyBuilder, PolicyConverger
from felix.setaside import SetAside
from l3net import metrics
from l3net.constants import WORKLOAD_IFACE_PREFIX
from l3net.health import HealthState

_log = logging.getLogger(__name__)


@dataclass
class _Side:
    """One independent side of the dataplane: its own dirty flag, in-flight apply, retries and backoff."""

    name: str
    component: str  # the readiness component it reports as
    dirty: bool = True
    failures: int = 0
    retry_at: float = 0.0
    last_apply: float = float("-inf")
    revision: int = 0  # the model revision of its last successful apply
    escalated: bool = False
    stuck: bool = False  # in flight for longer than LoopConfig.stuck_after
    urgent: bool = False  # a withdraw is pending: the next apply skips the min_interval window
    task: asyncio.Task[None] | None = None
    credit: float = float("inf")  # apply credits at credit_at (capped at LoopConfig.burst; inf: full)
    credit_at: float = float("-inf")


@dataclass(frozen=True)
class LoopConfig:
    min_interval: float = 0.05  # one apply credit refills per min_interval: the sustained rate bound
    burst: int = 4  # apply credits a quiet side holds: closely following events are applied without waiting
    refresh_interval: float = 90.0
    startup_sweep_delay: float = 30.0
    retry_base: float = 0.1
    retry_max: float = 10.0
    max_failures: int = 10  # failures in a row of one side before the log escalates to ERROR (never an exit)
    stuck_after: float = 30.0  # an apply in flight this long (a held xtables lock) makes its side not ready
    # The longest a policy calculation waits for the route apply in flight (see SyncLoop._after_route_apply).
    policy_defer: float = 0.05
    jitter: float = 0.2


class SyncLoop:
    """Owns the model, the links and learned routes, and when the dataplane is applied.

    Every ``on_*`` input must be called on the loop's own event-loop thread (use
    :class:`ThreadSafeSink` from other threads). Route and interface work runs on
    ``io_executor``, iptables and ipset work on ``policy_executor`` (one thread each,
    so a driver never races itself, and neither side waits for the other beyond the
    route side's head start, ``LoopConfig.policy_defer``). Never raises for a failed
    apply: each side retries with backoff, forever.
    """

    def __init__(self, model: Model, node: str, dataplane: Dataplane, *, config: LoopConfig = LoopConfig(),
                 health: HealthState | None = None, node_ips: Iterable[str] = (),
                 policy_builder: BuildPolicy | None = None, bgp_builder: BuildBGPView | None = None,
                 on_applied: Callable[[DesiredState], None] | None = None,
                 on_config: Callable[[Mapping[str, bytes]], None] | None = None,
                 io_executor: concurrent.futures.Executor | None = None,
                 policy_executor: concurrent.futures.Executor | None = None,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random,
                 traces: TraceBook | None = None) -> None:
        self.model = model
        self.node = node
        self.dataplane = dataplane
        self.config = config
        self.health = health or HealthState()
        self.node_ips = tuple(node_ips)
        # The calculation owns the builders and what it keeps between runs (felix.calc.Calculation).
        self.calculation = Calculation(node, policy_builder=policy_builder, bgp_builder=bgp_builder)
        self.on_applied = on_applied
        self.on_config = on_config
        self.io = io_executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="l3net-routes")
        self.clock = clock
        self.rand = rand
        # ADD stage timings: delivery is marked in on_updates, coalesce/calculation/apply by each side (the policy
        # side on its own branch).
        self.traces = traces
        self.tracing: tuple[Token, ...] = ()  # the ADD traces the apply being reported to on_applied covers
        self.links: dict[str, Link] = {}
        self.learned: dict[str, tuple[str, ...]] = {}
        self.in_sync = False
        self.ever_in_sync = False
        self.bgp_converged = False
        self.routes_side = _Side("routes", "dataplane")
        self.sides = [self.routes_side]
        self.policy_side: _Side | None = None
        self.converger: PolicyConverger | None = None
        self.policy_io = policy_executor
        if policy_builder is not None and dataplane.has_policy:
            self.policy_side = _Side("policy", "policy")
            self.sides.append(self.policy_side)
            self.health.set_ready("policy", False, "no policy apply yet")
            self.policy_io = policy_executor or concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="l3net-policy")
            if isinstance(policy_builder, PolicyBuilder):
                self.converger = PolicyConverger(policy_builder)
        self.applies = 0
        self.policy_applies = 0
        self.last_desired: DesiredState | None = None
        self.last_program: Any = None
        self.last_writes = 0
        self.last_policy_writes = 0
        self._pending_updates = 0
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._started = clock()
        self._next_refresh = self._started + config.refresh_interval
        self._grace_over = config.startup_sweep_delay <= 0
        self._warned: set[str] = set()
        self.set_aside = SetAside(model.keys)
        self._rejected: tuple[str, ...] = ()  # the last calculation's rejected local endpoints

    # -- inputs (event-loop thread) --------------------------------------------
    def _mark(self, *sides: _Side) -> None:
        """Mark ``sides`` (all when none given) dirty and wake the loop."""
        for side in sides or self.sides:
            side.dirty = True
        if self._wake is not None:
            self._wake.set()

    @property
    def policy_builder(self) -> BuildPolicy | None:
        return self.calculation.policy_builder

    @policy_builder.setter
    def policy_builder(self, builder: BuildPolicy | None) -> None:
        self.calculation.policy_builder = builder

    @property
    def bgp_builder(self) -> BuildBGPView | None:
        return self.calculation.bgp_builder

    def on_updates(self, updates: Sequence[KeyUpdateLike]) -> None:
        confirmed_before = {u.key for u in updates if self._confirmed(u.key)}
        n = self.model.apply(updates)
        if self.traces is not None:
            self.traces.delivered(self._traced_keys(updates), self.model.revision)
        self._pending_updates += n
        if self.on_config is not None and any(u.key.startswith(self.model.config_prefix) for u in updates):
            self.on_config(dict(self.model.config))
        # Blocks, handles, status: nothing to calculate (and no apply credit spent). Block affinities feed the
        # routes and BGP only: the policy program never reads them, so an ADD's block claim runs no
        # iptables-restore (whose cost grows with the node's pods).
        # Only a confirmed affinity installs or announces a block: IPAM's pending claim (written just before the
        # confirmation) changes nothing, and an apply for it would spend a credit the pod's own apply then waits for.
        tracked = [u.key for u in updates if self.model.tracks(u.key)]
        if any(not k.startswith(self.model.keys.affinities) for k in tracked):
            self._mark()
        elif any(k in confirmed_before or self._confirmed(k) for k in tracked):
            self._mark(self.routes_side)

    def _confirmed(self, key: str) -> bool:
        affinity = self.model.affinities.get(key)
        return affinity is not None and affinity.state == "confirmed"

    def _traced_keys(self, updates: Sequence[KeyUpdateLike]) -> list[str]:
        """The keys an ADD trace may wait for; a block affinity only once confirmed (IPAM writes it pending
        first, and a pending affinity installs and announces nothing)."""
        prefix = self.model.keys.affinities
        return [u.key for u in updates if not u.key.startswith(prefix) or self._confirmed(u.key)]

    def set_config(self, config: LoopConfig) -> None:
        """New timing (datastore configuration changed): used from the next wakeup on."""
        if config.refresh_interval != self.config.refresh_interval:
            self._next_refresh = min(self._next_refresh, self.clock() + config.refresh_interval)
        self.config = config
        self._mark()

    def on_in_sync(self) -> None:
        if not self.in_sync:
            _log.info("datastore in sync revision=%d", self.model.revision)
        self.in_sync = True
        self.ever_in_sync = True
        metrics.DATASTORE_IN_SYNC.set(1)
        self.health.set_ready("datastore", True)
        self._mark()

    def on_status(self, status: str) -> None:
        """``resync`` or ``down`` from the syncer: hold the dataplane exactly as it is."""
        log = _log.warning if self.ever_in_sync else _log.info
        log("datastore status=%s: dataplane held as is until in sync again", status)
        if status in ("resync", "down"):
            self.in_sync = False
            metrics.DATASTORE_IN_SYNC.set(0)
            self.health.set_ready("datastore", False, f"datastore {status}")
            if status == "resync":
                metrics.RESYNCS_STARTED.inc()

    def on_links(self, links: Mapping[str, Link]) -> None:
        # Links, learned routes and BGP convergence feed the route side only (the policy program is built from
        # the model alone): a pod's veth appearing must not start an iptables-restore beside its wiring.
        new = dict(links)
        if new != self.links:
            changed = {name for name in new.keys() | self.links.keys() if new.get(name) != self.links.get(name)}
            self.links = new
            if self._links_matter(changed):
                self._mark(self.routes_side)

    def _links_matter(self, names: set[str]) -> bool:
        """Whether a change to these links can change what the route side writes.

        A workload interface matters once a local endpoint names it (its route, its settings); the CNI creates
        the veth before it writes the endpoint, and an apply for the bare veth would write nothing yet spend
        the credit the endpoint's apply then waits for. Any other interface (an uplink going down or up)
        always matters: routes the kernel refused through it are retried when links change.
        """
        if any(not name.startswith(WORKLOAD_IFACE_PREFIX) for name in names):
            return True
        named = {w.ifname for w in self.model.workloads_by_key(self.node).values()}
        return not names.isdisjoint(named)

    def on_learned_routes(self, routes: Mapping[str, Sequence[str]]) -> None:
        new = {p: tuple(sorted(h)) for p, h in routes.items()}
        metrics.BGP_LEARNED_ROUTES.set(len(new))
        if new != self.learned:
            if withdraws_any(self.learned, new):
                metrics.URGENT_WITHDRAWS.inc()
            # Any change: a withdraw stops black-holing, an addition makes a remote pod reachable (BIRD on a
            # Calico node installs both at once); see the module docstring.
            self.routes_side.urgent = True
            self.learned = new
            self._mark(self.routes_side)

    def on_bgp_converged(self) -> None:
        """BGP has seen End-of-RIB from its peers: stale learned routes may be swept now."""
        if not self.bgp_converged:
            _log.info("BGP converged: stale learned routes may be swept")
        self.bgp_converged = True
        self._mark(self.routes_side)

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    # -- the loop ----------------------------------------------------------------
    @property
    def failures(self) -> int:
        """Failed applies in a row of the worse side (0 when both sides' last apply succeeded)."""
        return max(s.failures for s in self.sides)

    @property
    def dirty(self) -> bool:
        return any(s.dirty for s in self.sides)

    @dirty.setter
    def dirty(self, value: bool) -> None:
        for s in self.sides:
            s.dirty = value

    @property
    def _retry_at(self) -> float:
        return min((s.retry_at for s in self.sides if s.failures), default=0.0)

    @property
    def applied_revision(self) -> int:
        """The model revision both sides have applied (route and policy of an endpoint at or after it)."""
        return min(s.revision for s in self.sides)

    def kernel_quarantined(self) -> list[dict[str, Any]]:
        """The objects the policy side quarantined because the kernel refused them (:mod:`felix.quarantine`)."""
        return self.converger.builder.quarantine.report() if self.converger is not None else []

    def quarantined(self) -> list[dict[str, Any]]:
        """Every object set aside, for the node status (:mod:`felix.setaside`): kernel refusals, invalid
        datastore values and rejected local endpoints, each with its kind, effect, reason and cause."""
        return self.set_aside.report(self.model, self._rejected, self.kernel_quarantined())

    def desired(self, *, policy: bool = True, bgp: bool = True) -> DesiredState:
        """The desired state; ``policy``/``bgp`` False leave out the policy program / the BGP view (a side that
        does not use them: each is built from the whole node or cluster, on this thread, on every apply)."""
        with metrics.CALC_TIME.time():
            return self.calculation.desired(self.model, self.links, self.learned, node_ips=self.node_ips,
                                            policy=policy, bgp=bgp)

    def _credit(self, side: _Side, now: float) -> float:
        """The side's apply credits at ``now``: one more per ``min_interval`` since the last count, up to ``burst``."""
        cap = float(max(1, self.config.burst))
        if self.config.min_interval <= 0:
            return cap
        return min(cap, side.credit + (now - side.credit_at) / self.config.min_interval)

    def _due(self, side: _Side) -> float:
        # When the side's credit reaches one apply. An urgent side skips the throttle, never a failure's backoff.
        if side.urgent or self.config.min_interval <= 0:
            due = float("-inf")
        else:
            credit = min(side.credit, float(max(1, self.config.burst)))
            due = side.credit_at + max(0.0, 1.0 - credit) * self.config.min_interval
        return max(due, side.retry_at) if side.failures else due

    def _next_deadline(self, now: float) -> float:
        deadlines = [self._next_refresh]
        if not self._grace_over:
            deadlines.append(self._started + self.config.startup_sweep_delay)
        if self.in_sync:
            deadlines += [self._due(s) for s in self.sides if s.dirty and s.task is None]
        deadlines += [s.last_apply + self.config.stuck_after for s in self.sides
                      if s.task is not None and not s.stuck]
        return max(now, min(deadlines))

    def _check_stuck(self, now: float) -> None:
        """A side whose apply has been in flight too long reports not ready (the other side goes on)."""
        for side in self.sides:
            if side.task is not None and not side.stuck and now - side.last_apply >= self.config.stuck_after:
                side.stuck = True
                _log.error("dataplane side stuck side=%s in_flight=%.1fs (a held xtables lock?)", side.name,
                           now - side.last_apply)
                self.health.set_ready(side.component, False,
                                      f"{side.name} apply in flight for over {self.config.stuck_after:.0f}s")

    async def run(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.io, self.dataplane.start)
        try:
            while not self._stopping:
                self.health.beat()
                now = self.clock()
                timeout = self._next_deadline(now) - now
                if timeout > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                else:
                    await asyncio.sleep(0)  # let started applies run before deciding again
                self._wake.clear()
                if self._stopping:
                    break
                await self._maybe_apply(loop, wait=False)
        finally:
            # A side blocked in the kernel (a held xtables lock) is abandoned, not awaited: the process is ending.
            for side in self.sides:
                if side.task is not None and not side.task.done():
                    side.task.cancel()

    async def _maybe_apply(self, loop: asyncio.AbstractEventLoop, *, wait: bool = True) -> None:
        """Start an apply on every side that is dirty, idle and due; ``wait``: until they end (tests)."""
        now = self.clock()
        self._check_stuck(now)
        if not self._grace_over and (self.bgp_converged or now >= self._started + self.config.startup_sweep_delay):
            self._grace_over = True
            self.routes_side.dirty = True
        if now >= self._next_refresh:
            self._next_refresh = now + self.config.refresh_interval
            if self.in_sync:
                # Queued on each side's own thread: it runs after an apply in flight there, never during it.
                refreshes = [loop.run_in_executor(self.io, self.dataplane.refresh_routes, "periodic refresh")]
                if self.policy_side is not None:
                    refreshes.append(loop.run_in_executor(self.policy_io, self.dataplane.refresh_policy,
                                                          "periodic refresh"))
                self.dirty = True
                if wait:
                    await asyncio.gather(*refreshes)
        if not self.in_sync:
            return
        due = [s for s in self.sides if s.dirty and s.task is None and now >= self._due(s)]
        if not due:
            return
        tasks = [self._start(s, loop) for s in due]
        if wait:
            await asyncio.gather(*tasks)

    def _start(self, side: _Side, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
        urgent = side.urgent
        side.dirty = False
        side.urgent = False  # this apply computes from the current learned routes: the withdraw is in it
        side.last_apply = self.clock()
        if not urgent:
            # Learned-route applies spend no credit: the credits bound datastore-driven applies, and remote
            # churn (each new block anywhere in the cluster) must not hold back this node's own pods.
            side.credit = max(0.0, self._credit(side, side.last_apply) - 1.0)
            side.credit_at = side.last_apply
        side.task = loop.create_task(self._apply_side(side, loop))
        return side.task

    async def apply_once(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """One calculation and apply of both sides, awaited (the retry/backoff bookkeeping included)."""
        loop = loop or asyncio.get_running_loop()
        for side in self.sides:
            if side.task is not None:
                await asyncio.gather(side.task, return_exceptions=True)
        await asyncio.gather(*(self._start(s, loop) for s in self.sides))

    def _calculate(self, side: _Side) -> tuple[int, DesiredState]:
        """The desired state ``side`` applies, and the model revision it was computed from: the route side
        (routes, interfaces, the BGP view) leaves out the policy program; the policy side computes only the
        policy program and NAT outgoing (:func:`felix.calc.compute_policy`)."""
        revision = self.model.revision  # before computing: updates may arrive while the apply runs
        if self._pending_updates:
            metrics.MSG_BATCH_SIZE.observe(self._pending_updates)
            self._pending_updates = 0
        if side is not self.routes_side:
            with metrics.CALC_TIME.time():
                return revision, self.calculation.policy_side(self.model)
        desired = self.desired(policy=False, bgp=True)
        metrics.LOCAL_ENDPOINTS.set(desired.local_endpoints)
        metrics.REJECTED_ENDPOINTS.set(len(desired.rejected_workloads))
        self._rejected = desired.rejected_workloads
        metrics.LOCAL_BLOCKS.set(desired.local_blocks)
        metrics.CLUSTER_ENDPOINTS.set(len(self.model.workloads))
        metrics.CLUSTER_HOSTS.set(len(self.model.resources_of("Node")))
        metrics.INVALID_VALUES.set(len(self.model.invalid))
        return revision, desired

    async def _apply_side(self, side: _Side, loop: asyncio.AbstractEventLoop) -> None:
        traced: list[Token] = []
        if self.traces is not None:
            traced = (self.traces.calculating(self.model.revision) if side is self.routes_side
                      else self.traces.policy_calculating(self.model.revision))
        if side is not self.routes_side:
            await self._after_route_apply()
            if self.traces is not None:
                # endpoints delivered during the wait are in this calculation too (it reads the model after it)
                traced += self.traces.policy_calculating(self.model.revision)
                if traced:
                    self.traces.mark_all(traced, "route_wait")
        revision, desired = self._calculate(side)
        if traced:
            self.traces.mark_all(traced, "calculation")  # type: ignore[union-attr]
        try:
            if side is self.routes_side:
                await self._apply_routes(desired, loop)
            else:
                await self._apply_policy(desired, loop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if traced:
                self.traces.requeue(traced)  # type: ignore[union-attr]  # the retry's apply covers them
            self._failed(side, exc)
        else:
            side.failures = 0
            side.escalated = False
            side.revision = revision
            self.health.set_ready(side.component, True)
            if traced:
                self.traces.mark_all(traced, "apply")  # type: ignore[union-attr]
            self.tracing = tuple(traced) if side is self.routes_side else ()  # what the BGP announce covers
            try:
                if self.on_applied is not None and self.last_desired is not None:
                    self.on_applied(self.last_desired)
            finally:
                self.tracing = ()
                if traced:
                    self.traces.finish(traced)  # type: ignore[union-attr]
        finally:
            side.task = None
            side.stuck = False
            if self._wake is not None:
                self._wake.set()  # re-evaluate: this side may be dirty again, or the other one due

    async def _after_route_apply(self) -> None:
        """Wait for the route side's apply in flight, up to ``policy_defer``.

        The policy compile runs on this (the loop's) thread and takes milliseconds at hundreds of pods
        (~4 ms at 500). Started while a new block's or pod's route is being applied, it held that apply's
        completion and its BGP announcement until it finished. The route apply is short, so the policy
        side gives it this head start; the bound keeps a hung route driver from holding policy.
        """
        route_task = self.routes_side.task
        if route_task is not None and not route_task.done() and self.config.policy_defer > 0:
            await asyncio.wait([route_task], timeout=self.config.policy_defer)

    async def _apply_routes(self, desired: DesiredState, loop: asyncio.AbstractEventLoop) -> None:
        metrics.APPLIES.inc()
        keep = not self._grace_over
        try:
            with metrics.APPLY_TIME.time():
                report = await loop.run_in_executor(self.io, lambda: self.dataplane.apply_routes(
                    desired, self.links, keep_stale_learned=keep))
        finally:
            self._publish_warnings()
        self.applies += 1
        self.last_writes = report.writes
        self.last_desired = desired

    async def _apply_policy(self, desired: DesiredState, loop: asyncio.AbstractEventLoop) -> None:
        program = desired.policy
        if program is None:
            return

        async def apply(p: Any) -> int:
            return await loop.run_in_executor(self.policy_io, self.dataplane.apply_policy, p, desired.nat)

        try:
            with metrics.POLICY_APPLY_TIME.time():
                if self.converger is not None:
                    program, writes = await self.converger.apply(self.model, self.node, program, apply)
                else:
                    writes = await apply(program)
        finally:
            self._publish_warnings()
        self.policy_applies += 1
        self.last_policy_writes = writes
        self.last_program = program

    def _publish_warnings(self) -> None:
        """Routes refused, in conflict or malformed, objects quarantined: in the readiness body, never unready."""
        now = self.dataplane.warnings()
        quarantined = self.kernel_quarantined()
        if quarantined:
            shown = "; ".join(f"{q['object']} ({q['effect']}): {q['reason']}" for q in quarantined[:10])
            now["quarantined"] = f"{len(quarantined)} objects quarantined (the kernel refused their rules): {shown}"
        for name in self._warned - now.keys():
            self.health.set_warning(name, None)
        for name, text in now.items():
            self.health.set_warning(name, text)
        self._warned = set(now)

    def _failed(self, side: _Side, exc: BaseException) -> None:
        """A failed apply of one side: retried with backoff and jitter, forever; the other side goes on."""
        side.failures += 1
        side.dirty = True
        metrics.APPLY_FAILURES.inc()
        metrics.DRIVER_FAILURES.labels(side=side.name).inc()
        self.health.set_ready(side.component, False, f"last {side.name} apply failed: {exc}")
        backoff = min(self.config.retry_max, self.config.retry_base * 2 ** (side.failures - 1))
        backoff *= 1 + self.config.jitter * self.rand()
        side.retry_at = self.clock() + backoff
        known = isinstance(exc, REFUSALS) or type(exc).__name__ in ("RouteWriteError", "NetlinkError")
        if side.failures >= self.config.max_failures and not side.escalated:
            side.escalated = True
            _log.error("dataplane side keeps failing side=%s attempts=%d retry_in=%.3fs error=%r routes_held=%d",
                       side.name, side.failures, backoff, exc, len(self.dataplane.routes.programmed),
                       exc_info=not known)
        else:
            _log.warning("dataplane apply failed side=%s attempt=%d retry_in=%.3fs error=%r", side.name,
                         side.failures, backoff, exc, exc_info=not known)


def withdraws_any(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> bool:
    """Whether going from ``old`` to ``new`` learned routes removes a prefix or one of a prefix's next hops."""
    return any(prefix not in new or not set(hops) <= set(new[prefix]) for prefix, hops in old.items())


class ThreadSafeSink:
    """The syncer's sink (``on_updates``/``on_in_sync``/``on_status``), called on the syncer thread,
    forwarded to a :class:`SyncLoop` on its event loop."""

    def __init__(self, target: SyncLoop, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop

    def on_updates(self, updates: Iterable[Any]) -> None:
        self.loop.call_soon_threadsafe(self.target.on_updates, list(updates))

    def on_in_sync(self) -> None:
        self.loop.call_soon_threadsafe(self.target.on_in_sync)

    def on_status(self, status: str) -> None:
        self.loop.call_soon_threadsafe(self.target.on_status, status)

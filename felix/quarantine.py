"""felix.quarantine: narrows a policy apply the kernel refuses to the objects that caused it, and sets them aside.

The objects are the policies (NetworkPolicy, GlobalNetworkPolicy) and this node's
WorkloadEndpoints: each renders to its own chains and sets. When
``ipset restore`` or ``iptables-restore`` refuses the program, the suspects are
the objects whose content is not the one last applied successfully (an object
that applied before is not to blame). The program without any suspect is tried
first: if the kernel refuses that too, the fault is not in the data (a held
lock, a kernel error) and the apply fails as a whole, to be retried with
backoff. Otherwise the suspects are bisected (each trial is a real, consistent
apply), and those that still fail alone are quarantined:

* a policy keeps its **last good version** if it had one (the content last
  applied successfully); a policy that never applied is **absent**;
* a workload endpoint's own chains **fail closed** (both directions drop);
* a host endpoint of this node is left out: its interface goes unpoliced rather than
  cutting the node off its own network (the failsafe principle of host endpoints).

A quarantined object is never retried as it is: it stays set aside until its
content changes (then it is a suspect again, tried once) or it is deleted, or
the agent restarts. Each quarantine is logged with the object's name,
counted in ``l3net_quarantined_objects{kind}``, shown as a readiness warning and
published in the node's status record (``l3netctl node status``).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import policy.compiler
import policy.host_endpoints
from felix.calc import Model, outside_pools, pool_index
from felix.config import AgentConfig
from felix.drivers.ipsets import IpsetError
from felix.drivers.iptables import IptablesError
from l3net import metrics
from l3net.model import Resource

_log = logging.getLogger(__name__)

__all__ = ["KINDS", "REFUSALS", "PolicyBuilder", "PolicyConverger", "Quarantine", "QuarantineEntry", "object_ref"]

# What the kernel (or the command running it) raises when it refuses a program.
REFUSALS: tuple[type[BaseException], ...] = (IptablesError, IpsetError, OSError, subprocess.SubprocessError)
KINDS = ("GlobalNetworkPolicy", "CalicoNetworkPolicy", "NetworkPolicy", "WorkloadEndpoint")
_POLICY_KINDS = ("NetworkPolicy", "CalicoNetworkPolicy", "GlobalNetworkPolicy")
_REASON_MAX = 300


def object_ref(res: Resource) -> str:
    """``Kind/name`` or ``Kind/namespace/name``: how logs, metrics and the node status name an object."""
    return f"{res.kind}/{res.namespace}/{res.name}" if res.namespace else f"{res.kind}/{res.name}"


def _kind(ref: str) -> str:
    return ref.split("/", 1)[0]


@dataclass(frozen=True)
class QuarantineEntry:
    """One object set aside: the content the kernel refused, why, and since when (wall clock)."""

    ref: str
    version: Resource
    reason: str
    since: float
    fallback: str  # "last good version", "absent" or "fail closed"

    def describe(self) -> dict[str, Any]:
        return {"object": self.ref, "kind": _kind(self.ref), "reason": self.reason, "since": round(self.since, 3),
                "effect": self.fallback}


@dataclass
class Quarantine:
    """Owns the quarantined objects and the last good content of every object. Loop thread only."""

    entries: dict[str, QuarantineEntry] = field(default_factory=dict)
    last_good: dict[str, Resource] = field(default_factory=dict)

    def excluded(self, objects: Mapping[str, Resource]) -> frozenset[str]:
        """The refs to leave out now; entries whose object changed or vanished are dropped first."""
        for ref in [r for r, e in self.entries.items() if objects.get(r) != e.version]:
            _log.info("quarantine lifted object=%s reason=%s", ref,
                      "deleted" if ref not in objects else "content changed")
            del self.entries[ref]
        self._export()
        return frozenset(self.entries)

    def add(self, ref: str, version: Resource, reason: str, clock: Callable[[], float] = time.time) -> None:
        if _kind(ref) == "WorkloadEndpoint":
            fallback = "fail closed"
        else:
            fallback = "last good version" if ref in self.last_good else "absent"
        self.entries[ref] = QuarantineEntry(ref, version, reason[:_REASON_MAX], clock(), fallback)
        _log.warning("object quarantined: the kernel refused its rules object=%s effect=%s reason=%s", ref,
                     fallback, reason[:_REASON_MAX])
        self._export()

    def record_good(self, applied: Mapping[str, Resource], objects: Iterable[str]) -> None:
        """``applied`` went into the kernel; forget last good content of objects that no longer exist."""
        self.last_good.update(applied)
        alive = set(objects)
        for ref in [r for r in self.last_good if r not in alive]:
            del self.last_good[ref]

    def report(self) -> list[dict[str, Any]]:
        return [e.describe() for _, e in sorted(self.entries.items())]

    def _export(self) -> None:
        counts = dict.fromkeys(KINDS, 0)
        for ref in self.entries:
            counts[_kind(ref)] = counts.get(_kind(ref), 0) + 1
        for kind, n in counts.items():
            metrics.QUARANTINED_OBJECTS.labels(kind=kind).set(n)


class PolicyBuilder:
    """The agent's policy builder: model → ``PolicyProgram``, leaving quarantined objects out.

    Callable as a ``felix.calc.BuildPolicy`` (uses the current quarantine); :meth:`build`
    takes an explicit set of refs to leave out (the converger's trials). Owns the
    agent's one long-lived ``PolicyCompiler``; loop thread only, one call at a time.
    """

    def __init__(self, compiler: policy.compiler.PolicyCompiler | None = None,
                 settings: Callable[[], AgentConfig] | None = None) -> None:
        self.compiler = compiler or policy.compiler.PolicyCompiler()
        self.settings = settings
        self.quarantine = Quarantine()

    def objects(self, model: Model, node: str) -> dict[str, Resource]:
        """Every object a refusal can be narrowed to, by ref: the policies and this node's endpoints.

        Kept while the model is unchanged: every policy apply asks for it (the converger's bookkeeping), and
        answering walks the node's endpoints.
        """
        return model.derived(f"policy-objects/{node}", lambda: self._objects_of(model, node))

    @staticmethod
    def _objects_of(model: Model, node: str) -> dict[str, Resource]:
        out = {object_ref(p): p for kind in _POLICY_KINDS for p in model.resources_of(kind)}
        pools = pool_index(model)
        for w in model.workloads_on(node):
            if not outside_pools(w, pools):
                out[object_ref(w.resource)] = w.resource
        for hep in policy.host_endpoints.node_host_endpoints(model.resources_of("HostEndpoint"), node):
            out[object_ref(hep)] = hep
        return out

    def __call__(self, model: Model, node: str) -> policy.compiler.PolicyProgram:
        # Nothing quarantined (the usual case): nothing to look up, so the node's endpoints are not walked here.
        objects = self.objects(model, node) if self.quarantine.entries else {}
        return self.build(model, node, self.quarantine.excluded(objects))

    def build(self, model: Model, node: str, excluded: frozenset[str]) -> policy.compiler.PolicyProgram:
        applied: dict[str, Resource] = {}
        policies: list[Resource] = []
        for kind in _POLICY_KINDS:
            for pol in model.resources_of(kind):
                ref = object_ref(pol)
                if ref not in excluded:
                    policies.append(pol)
                    applied[ref] = pol
                elif ref in self.quarantine.last_good:
                    policies.append(self.quarantine.last_good[ref])
        local: list[Resource] = []
        fail_closed: set[Hashable] = set()
        # A workload with an address outside every pool gets no route (felix.calc.compute) and is
        # no selector member either: else a WorkloadEndpoint could put any address into a policy's set.
        pools = pool_index(model)
        for w in model.workloads_on(node):
            if outside_pools(w, pools):
                continue
            ref = object_ref(w.resource)
            local.append(w.resource)
            if ref in excluded:
                fail_closed.add((w.resource.namespace or "", w.resource.name))
            else:
                applied[ref] = w.resource
        workloads = [w.resource for w in model.workloads.values() if not outside_pools(w, pools)]
        # Network sets and host endpoints are selector-set members too (their nets and expectedIPs).
        heps = model.resources_of("HostEndpoint")
        workloads += [*model.resources_of("GlobalNetworkSet"), *model.resources_of("NetworkSet"), *heps]
        local_heps = []
        for hep in policy.host_endpoints.node_host_endpoints(heps, node):
            if object_ref(hep) not in excluded:
                local_heps.append(hep)
                applied[object_ref(hep)] = hep
        cfg = self.settings() if self.settings is not None else None
        action = cfg.default_endpoint_to_host_action if cfg is not None else "Drop"
        failsafe = cfg.failsafe_inbound_host_ports if cfg is not None and cfg.workload_to_host_failsafe else ()
        host_in = cfg.failsafe_inbound_host_ports if cfg is not None else ()
        host_out = cfg.failsafe_outbound_host_ports if cfg is not None else ()
        program = policy.compiler.compile_policy(local, workloads, policies, model.resources_of("Namespace"),
                                                 endpoint_to_host_action=action, failsafe_ports=failsafe,
                                                 compiler=self.compiler, fail_closed=frozenset(fail_closed),
                                                 host_endpoints=local_heps, host_failsafe_in=host_in,
                                                 host_failsafe_out=host_out)
        return replace(program, applied_objects=applied)


Apply = Callable[[policy.compiler.PolicyProgram], Awaitable[int]]


class PolicyConverger:
    """Applies a policy program; on a refusal narrows it to the objects at fault and quarantines them.

    Runs as a coroutine on the agent's event loop (compilation happens there; each
    ``apply`` runs on the policy I/O thread). Raises the original error when the
    fault is not in the data (the loop retries with backoff); never retries an
    object's refused content. ``trials`` counts the applies made while narrowing.
    """

    def __init__(self, builder: PolicyBuilder, clock: Callable[[], float] = time.time) -> None:
        self.builder = builder
        self.clock = clock
        self.trials = 0

    async def apply(self, model: Model, node: str, program: policy.compiler.PolicyProgram,
                    apply: Apply) -> tuple[policy.compiler.PolicyProgram, int]:
        """Apply ``program`` (built by the builder); returns the program in the kernel and the writes made."""
        quarantine = self.builder.quarantine
        objects = self.builder.objects(model, node)
        try:
            writes = await apply(program)
        except REFUSALS as exc:
            program, writes = await self._narrow(model, node, program, objects, exc, apply)
        quarantine.record_good(program.applied_objects, objects)
        return program, writes

    async def _trial(self, model: Model, node: str, excluded: frozenset[str],
                     apply: Apply) -> tuple[policy.compiler.PolicyProgram, int, BaseException | None]:
        self.trials += 1
        metrics.QUARANTINE_TRIALS.inc()
        program = self.builder.build(model, node, excluded)
        try:
            return program, await apply(program), None
        except REFUSALS as exc:
            return program, 0, exc

    async def _narrow(self, model: Model, node: str, program: policy.compiler.PolicyProgram,
                      objects: Mapping[str, Resource], first: BaseException,
                      apply: Apply) -> tuple[policy.compiler.PolicyProgram, int]:
        quarantine = self.builder.quarantine
        base = frozenset(objects) - frozenset(program.applied_objects)  # already left out
        suspects = sorted(r for r in program.applied_objects if quarantine.last_good.get(r) != objects.get(r))
        if not suspects:
            raise first  # every object in it applied before: the fault is not in the data
        _, _, err = await self._trial(model, node, base | frozenset(suspects), apply)
        if err is not None:
            _log.warning("policy apply refused even without the changed objects: not a data fault suspects=%d "
                         "error=%s", len(suspects), err)
            raise first
        _log.warning("policy apply refused: narrowing to the objects at fault suspects=%d error=%s", len(suspects),
                     str(first)[:_REASON_MAX])
        accepted: set[str] = set()
        bad: dict[str, BaseException] = {}
        # The whole group is known to fail (the apply that brought us here): start from its halves.
        half = len(suspects) // 2
        queue: list[list[str]] = [suspects[:half], suspects[half:]] if half else []
        if not half:
            bad[suspects[0]] = first
        while queue:
            group = queue.pop(0)
            left_out = base | (frozenset(suspects) - accepted - set(group))
            _, _, err = await self._trial(model, node, left_out, apply)
            if err is None:
                accepted.update(group)
            elif len(group) == 1:
                bad[group[0]] = err
            else:
                half = len(group) // 2
                queue[:0] = [group[:half], group[half:]]
        for ref, err in bad.items():
            quarantine.add(ref, objects[ref], _first_line(err), clock=self.clock)
        final = self.builder.build(model, node, base | frozenset(bad))
        writes = await apply(final)
        return final, writes


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

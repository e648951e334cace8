"""policy.host_endpoints: a node's HostEndpoints and the Calico policy that applies to them, as iptables chains.

Owns which GlobalNetworkPolicies police which of this node's own interfaces, at which stage,
and the chains that do it. Calico's rules for host endpoint policy (its "host endpoints"
reference, summarised):

* **Untracked** (``doNotTrack``), raw table, before connection tracking: ingress rules on
  packets arriving through the interface, egress rules on packets the host sends out of it.
  Allow marks the packet host-accepted and untracked; Deny drops; no verdict goes on.
* **Pre-DNAT** (``preDNAT``), mangle table, before DNAT: ingress rules only, on packets arriving
  through the interface (not yet established). Allow marks it host-accepted; Deny drops; no
  verdict goes on.
* **Normal**, filter table: traffic to the host (ingress) and from the host (egress) through the
  interface. The failsafe ports pass first; then the policies as a tier; with no policy, or
  none that allows: drop (a host endpoint is default-deny for the host's own traffic).
* **Forwarded** through the interface (in: ingress, out: egress), filter table: only normal
  policies with ``applyOnForward``; with none for that direction the traffic is allowed.
* A host-accepted packet (untracked or pre-DNAT Allow) skips the later normal policy of the
  interface it came in by and, for the host's own traffic, of the host; not the forward egress
  policy of the interface it leaves by, nor workload policy. The bit is cleared in raw
  PREROUTING and raw OUTPUT, so only l3net's own Allow can have set it.
* Failsafe ports pass every stage; untracked policy also passes their replies (source port of
  the other direction's list), since no conntrack answers for untracked traffic.
* Host traffic that was DNAT'd (to a Service) is policed in mangle POSTROUTING, not filter
  OUTPUT, where the interface is still the one routed before DNAT (as Felix does).

What "allowed" means here: the chain returns, and whatever follows decides (the workload
chains for a pod's traffic, the host's own rules otherwise). A Pass ends the tier; with no
Profiles after it, the filter-table chains then drop, as Calico does for an endpoint without
profiles. Only GlobalNetworkPolicies can select a host endpoint: a namespaced policy applies in
its namespace only, and a host endpoint has none. Pure. A HostEndpoint is read through the model's typed
spec (:mod:`l3net.model.hostendpoint_spec`): one built by hand that the model refuses raises its
ValidationError, it is never half-read. A policy's stage and ``applyOnForward`` are read from its typed
spec (:mod:`l3net.model.policy_spec`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from l3net.constants import CHAIN_PREFIX
from l3net.model import Resource
from l3net.model.hostendpoint_spec import hostendpoint_spec
from l3net.model.policy_spec import CalicoPolicySpec, calico_policy_spec
from l3net.model.selectors import Selector
from policy.model import own_labels
from policy.rules import (
    CLEAR_BOTH,
    CLEAR_HOST_ACCEPTED,
    CT_INVALID,
    IF_ACCEPTED,
    RETURN_IF_ACCEPTED,
    RETURN_IF_HOST_ACCEPTED,
    SET_HOST_ACCEPTED,
    UNLESS_PASSED,
    chain_name,
    failsafe_rules,
    hash_rules,
)

_log = logging.getLogger(__name__)

__all__ = ["CHAIN_HOST_ACCEPTED", "CHAIN_UNTRACKED", "HostEndpointRender", "HostPolicy", "local_host_endpoints",
           "node_host_endpoints", "render_host_endpoints"]

# Raw and mangle: where an Allow of an untracked or a pre-DNAT policy goes (mark it; raw also untracks it).
CHAIN_UNTRACKED = f"{CHAIN_PREFIX}untracked"
CHAIN_HOST_ACCEPTED = f"{CHAIN_PREFIX}host-accepted"
CHAIN_RAW_OUTPUT = f"{CHAIN_PREFIX}OUTPUT"
CHAIN_MANGLE_PREROUTING = f"{CHAIN_PREFIX}PREROUTING"
CHAIN_MANGLE_POSTROUTING = f"{CHAIN_PREFIX}POSTROUTING"
_CT_RETURN = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"


class HostPolicy(Protocol):
    """What this module needs of a compiled policy (:class:`policy.compiled.CompiledPolicy` has it)."""

    resource: Resource
    is_global: bool
    types: tuple[str, ...]
    applies: Selector
    chains: dict[str, tuple[str, list[str]]]


@dataclass
class HostEndpointRender:
    """Rule bodies to append to the base chains, whole chains per table, and the kernel hooks they need."""

    filter_input: list[str] = field(default_factory=list)
    filter_output: list[str] = field(default_factory=list)
    filter_forward: list[str] = field(default_factory=list)
    raw_prerouting: list[str] = field(default_factory=list)
    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # table -> chain -> hashed rules
    hooks: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> kernel chain -> our chain
    policies: list[tuple[HostPolicy, str]] = field(default_factory=list)  # (policy, direction) rendered


def local_host_endpoints(host_endpoints: Iterable[Resource]) -> list[Resource]:
    """The HostEndpoints with an interface to police, ordered by interface; a repeated interface keeps
    the first by name (logged), so one interface never has two sets of chains."""
    by_iface: dict[str, Resource] = {}
    for hep in sorted((h for h in host_endpoints if h.kind == "HostEndpoint"), key=lambda h: h.name):
        iface = hostendpoint_spec(hep).interface_name
        if iface in by_iface:
            _log.warning("host endpoint ignored: interface already has one iface=%s hep=%s kept=%s",
                         iface, hep.name, by_iface[iface].name)
            continue
        by_iface[iface] = hep
    return [by_iface[i] for i in sorted(by_iface)]


def _stage(spec: CalicoPolicySpec) -> str:
    if spec.do_not_track:
        return "untracked"
    if spec.pre_dnat:
        return "preDNAT"
    return "normal"


def _select(hep: Resource, ordered: Sequence[HostPolicy]) -> dict[str, list[HostPolicy]]:
    """The policies that apply to ``hep``, in evaluation order, per (stage, direction) slot."""
    labels = own_labels(hep)
    slots: dict[str, list[HostPolicy]] = {k: [] for k in (
        "untracked-in", "untracked-out", "prednat-in", "in", "out", "fwd-in", "fwd-out")}
    for pol in ordered:
        if not pol.is_global or not pol.applies.matches(labels):
            continue
        spec = calico_policy_spec(pol.resource)
        stage = _stage(spec)
        forward = spec.apply_on_forward
        for d in pol.types:
            side = "in" if d == "Ingress" else "out"
            if stage == "untracked":
                slots[f"untracked-{side}"].append(pol)
            elif stage == "preDNAT":
                if side == "in":
                    slots["prednat-in"].append(pol)
            else:
                slots[side].append(pol)
                if forward:
                    slots[f"fwd-{side}"].append(pol)
    return slots


def _tier(pols: Sequence[HostPolicy], direction: str, on_allow: str) -> list[str]:
    """Jump to each policy unless one passed; ``on_allow`` runs when one set the accept mark."""
    if not pols:
        return []
    rules = [CLEAR_BOTH]
    for pol in pols:
        rules += [f"{UNLESS_PASSED} -j {pol.chains[direction][0]}", on_allow]
    return rules


class _Builder:
    """Accumulates the chains of one node's host endpoints, table by table (bodies, hashed at the end)."""

    def __init__(self, failsafe_in: Sequence[tuple[str, int]], failsafe_out: Sequence[tuple[str, int]]) -> None:
        self.out = HostEndpointRender()
        self.accept_in = failsafe_rules(failsafe_in, "RETURN")
        self.accept_out = failsafe_rules(failsafe_out, "RETURN")
        # Before routing (raw, mangle) only packets to the host's own addresses are failsafe: a forwarded
        # packet to a failsafe port gets no pass from untracked or pre-DNAT policy.
        local = "-m addrtype --dst-type LOCAL "
        self.accept_in_local = failsafe_rules(failsafe_in, "RETURN", match=local)
        # Untracked policy sees every packet, replies too (no conntrack to answer for them): the replies of
        # the failsafe services (source port of the inbound list) and of the host's own failsafe connections
        # (source port of the outbound list) pass as well, or an untracked Deny could cut the node off.
        self.raw_accept_in = [*self.accept_in_local,
                              *failsafe_rules(failsafe_out, "RETURN", match=local, side="sports")]
        self.raw_accept_out = [*self.accept_out, *failsafe_rules(failsafe_in, "RETURN", side="sports")]
        self.tables: dict[str, dict[str, list[str]]] = {"filter": {}, "raw": {}, "mangle": {}}
        self.used: dict[tuple[str, str], tuple[HostPolicy, str]] = {}
        # The host-accepted bit is cleared where every packet enters (raw PREROUTING, raw OUTPUT): only our own
        # untracked or pre-DNAT Allow may set it, never a mark the packet arrived with.
        self.out.raw_prerouting.append(CLEAR_HOST_ACCEPTED)
        # Host traffic that was DNAT'd (to a Service) still carries the interface routed before DNAT in filter
        # OUTPUT: it is policed in mangle POSTROUTING instead, on the interface it really leaves by (as Felix).
        self.out.filter_output.append("-m conntrack --ctstate DNAT -j RETURN")
        self.mangle_post: list[str] = []
        self.raw_output: list[str] = [CLEAR_HOST_ACCEPTED]
        self.mangle_pre: list[str] = [RETURN_IF_HOST_ACCEPTED, _CT_RETURN]

    def _use(self, table: str, pols: Sequence[HostPolicy], direction: str) -> None:
        for pol in pols:
            self.used[(table, pol.chains[direction][0])] = (pol, direction)

    def filter(self, iface: str, slots: dict[str, list[HostPolicy]]) -> None:
        """The host's own traffic through ``iface`` (default deny), then traffic forwarded through it."""
        host_in, host_out = chain_name("hi", iface), chain_name("ho", iface)
        chains = self.tables["filter"]
        chains[host_in] = [RETURN_IF_HOST_ACCEPTED, _CT_RETURN, CT_INVALID, *self.accept_in,
                           *_tier(slots["in"], "Ingress", RETURN_IF_ACCEPTED), "-j DROP"]
        chains[host_out] = [RETURN_IF_HOST_ACCEPTED, _CT_RETURN, CT_INVALID, *self.accept_out,
                            *_tier(slots["out"], "Egress", RETURN_IF_ACCEPTED), "-j DROP"]
        self.out.filter_input.append(f"-i {iface} -g {host_in}")
        self.out.filter_output.append(f"-o {iface} -g {host_out}")
        self._use("filter", slots["in"], "Ingress")
        self._use("filter", slots["out"], "Egress")
        # The same egress chain in mangle, for the host's DNAT'd traffic (see __init__).
        dnat_out = chain_name("hmo", iface)
        self.tables["mangle"][dnat_out] = chains[host_out]
        self.mangle_post.append(f"-m conntrack --ctstate DNAT -m addrtype --src-type LOCAL -o {iface} -g {dnat_out}")
        self._use("mangle", slots["out"], "Egress")
        # An untracked or pre-DNAT Allow skips the forward policy of the interface the packet came in by, not
        # that of the one it leaves by (as in Felix: only the from-host-endpoint side honours the mark).
        for key, direction, flag, kind, skip in (("fwd-in", "Ingress", "-i", "hfi", [RETURN_IF_HOST_ACCEPTED]),
                                                 ("fwd-out", "Egress", "-o", "hfo", [])):
            if slots[key]:  # none for this direction: forwarded traffic is allowed
                name = chain_name(kind, iface)
                chains[name] = [*skip, _CT_RETURN, CT_INVALID,
                                *_tier(slots[key], direction, RETURN_IF_ACCEPTED), "-j DROP"]
                self.out.filter_forward.append(f"{flag} {iface} -j {name}")
                self._use("filter", slots[key], direction)

    def raw(self, iface: str, slots: dict[str, list[HostPolicy]]) -> None:
        """Untracked policy, both directions: Allow marks and untracks; no verdict goes on."""
        for key, direction, flag, kind, accept, into in (
                ("untracked-in", "Ingress", "-i", "hri", self.raw_accept_in, self.out.raw_prerouting),
                ("untracked-out", "Egress", "-o", "hro", self.raw_accept_out, self.raw_output)):
            if slots[key]:
                name = chain_name(kind, iface)
                self.tables["raw"][name] = [*accept, *_tier(slots[key], direction,
                                                            f"{IF_ACCEPTED} -g {CHAIN_UNTRACKED}")]
                into.append(f"{flag} {iface} -g {name}")
                self._use("raw", slots[key], direction)

    def mangle(self, iface: str, slots: dict[str, list[HostPolicy]]) -> None:
        """Pre-DNAT policy, ingress only: Allow marks the packet host-accepted; no verdict goes on."""
        if slots["prednat-in"]:
            name = chain_name("hpi", iface)
            self.tables["mangle"][name] = [*self.accept_in_local, *_tier(slots["prednat-in"], "Ingress",
                                                                   f"{IF_ACCEPTED} -g {CHAIN_HOST_ACCEPTED}")]
            self.mangle_pre.append(f"-i {iface} -g {name}")
            self._use("mangle", slots["prednat-in"], "Ingress")

    def finish(self) -> HostEndpointRender:
        raw, mangle = self.tables["raw"], self.tables["mangle"]
        if raw:
            raw[CHAIN_UNTRACKED] = [SET_HOST_ACCEPTED, "-j CT --notrack"]
        raw[CHAIN_RAW_OUTPUT] = self.raw_output
        self.out.hooks.setdefault("raw", {})["OUTPUT"] = CHAIN_RAW_OUTPUT
        if any(name.startswith(f"{CHAIN_PREFIX}hpi") for name in mangle):  # some pre-DNAT policy
            mangle[CHAIN_HOST_ACCEPTED] = [SET_HOST_ACCEPTED]
            mangle[CHAIN_MANGLE_PREROUTING] = self.mangle_pre
            self.out.hooks.setdefault("mangle", {})["PREROUTING"] = CHAIN_MANGLE_PREROUTING
        mangle[CHAIN_MANGLE_POSTROUTING] = self.mangle_post
        self.out.hooks.setdefault("mangle", {})["POSTROUTING"] = CHAIN_MANGLE_POSTROUTING
        for table, chains in self.tables.items():
            if chains:
                self.out.chains[table] = {name: hash_rules(name, rules) for name, rules in chains.items()}
        for (table, chain), (pol, direction) in self.used.items():
            self.out.chains[table][chain] = pol.chains[direction][1]  # already hashed by the compiler
            self.out.policies.append((pol, direction))
        return self.out


def render_host_endpoints(host_endpoints: Sequence[Resource], ordered: Sequence[HostPolicy], *,
                          failsafe_in: Sequence[tuple[str, int]] = (),
                          failsafe_out: Sequence[tuple[str, int]] = ()) -> HostEndpointRender:
    """The chains that police ``host_endpoints`` (this node's, see :func:`local_host_endpoints`).

    ``ordered``: every compiled policy in evaluation order; ``failsafe_in``/``failsafe_out``:
    (protocol, port) pairs always open to and from the host (Calico's failsafe ports).
    """
    if not host_endpoints:
        return HostEndpointRender()
    builder = _Builder(failsafe_in, failsafe_out)
    for hep in host_endpoints:
        iface = hostendpoint_spec(hep).interface_name
        slots = _select(hep, ordered)
        builder.filter(iface, slots)
        builder.raw(iface, slots)
        builder.mangle(iface, slots)
    return builder.finish()


def node_host_endpoints(host_endpoints: Iterable[Resource], node: str) -> list[Resource]:
    """The HostEndpoints whose ``node`` is ``node``."""
    return [h for h in host_endpoints if h.kind == "HostEndpoint" and hostendpoint_spec(h).node == node]

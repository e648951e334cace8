"""policy.index: the incremental index behind a policy compile (what selects what, which sets hold what).

Owns, between two compiles of one node: the compiled policies by identity (recompiled only when
their content changed), every endpoint and network set with its labels and addresses, the
namespaces' labels, which endpoints each selector set holds and which local endpoints each
policy applies to (two :class:`policy.selectors.SelectorIndex`), the members of every set the
rules reference, and what changed since the last call (the *dirty* sets). It also keeps the
members of the Kubernetes tier's combined sets (``l3nk:``/``l3nu:``), patched per atom when a
selector set they are made of changes (a pod that comes or goes costs one member per atom).

Data only: set members in ipset's spelling, never a rule. Not thread-safe (its owner's loop).
Never raises on content: a policy that does not compile is absent (its ``compile_one`` logs it).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l3net.model import Resource
from l3net.model.workload_spec import workload_spec
from policy.compiled import Atom, CompiledPolicy, PolicyKey, SetSpec, policy_key
from policy.model import (
    HOST_ENDPOINT_KIND,
    NETWORK_SET_KINDS,
    POLICY_KINDS,
    endpoint_labels,
    host_endpoint_ips,
    is_host_only,
    namespace_labels,
    network_set_labels,
    network_set_nets,
    own_labels,
    workload_ips,
    workload_ports,
)
from policy.rules import set_nets
from policy.selectors import SelectorIndex

__all__ = ["Changes", "PolicyIndex"]

IpsetValues = dict[str, tuple[str, frozenset[str]]]  # set name -> (ipset type, members)
TierSetSpec = tuple[str, str, tuple[Atom, ...]]  # (combined set name, ipset type, its atoms)


@dataclass
class _Endpoint:
    resource: Resource
    labels: dict[str, str]
    ips: tuple[str, ...]
    ports: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class Changes:
    """What one :meth:`PolicyIndex.sync` found changed, and the local endpoints it found."""

    policies_changed: bool  # a policy came, went or changed: every local endpoint's selection was redone
    dirty: set[str]  # set names whose members may have changed
    local: dict[Hashable, Resource]  # (namespace, name) -> the local WorkloadEndpoints with an interface
    relabelled: set[Hashable]  # local endpoints that are new or whose labels changed


class PolicyIndex:
    """Owns the policy compile's incremental state; each :meth:`sync` brings it to the given inputs.

    ``compile_one`` turns one policy into its :class:`CompiledPolicy` (None: it does not compile);
    it is called only for a policy that is new or whose content changed. Entries not in the last
    inputs are dropped, so memory follows the current inputs. Not thread-safe: one caller at a time.
    """

    def __init__(self, compile_one: Callable[[Resource], CompiledPolicy | None]) -> None:
        self._compile_one = compile_one
        self._policies: dict[PolicyKey, tuple[Resource, CompiledPolicy | None]] = {}
        self._endpoints: dict[Hashable, _Endpoint] = {}
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._members = SelectorIndex()   # selector-set name -> endpoint keys (all endpoints)
        self._set_specs: dict[str, SetSpec] = {}
        self._set_cache: dict[str, tuple[str, frozenset[str]]] = {}
        self._applies = SelectorIndex()   # policy key -> local endpoint keys
        # combined set name -> (the selector set values it was made from, its value)
        self._combined: dict[str, tuple[tuple[frozenset[str], ...], tuple[str, frozenset[str]]]] = {}
        # selector atom -> (the selector set's members, the atom's members of a tier set)
        self._atoms: dict[Atom, tuple[frozenset[str], frozenset[str]]] = {}
        self._ordered: list[CompiledPolicy] = []
        self._local_labels: dict[Hashable, dict[str, str]] = {}
        self._selected: dict[Hashable, dict[str, list[CompiledPolicy]]] = {}
        self.policies_recompiled = 0  # policies compiled since this index was made

    # ---- inputs -> index ----
    def sync(self, namespaces: Iterable[Resource], policies: Iterable[Resource], all_endpoints: Iterable[Resource],
             local_endpoints: Iterable[Resource]) -> Changes:
        """Bring the index to these inputs (see ``PolicyCompiler.compile`` for what each holds)."""
        changed_ns = self._sync_namespaces(namespaces)
        policies_changed = self._sync_policies(policies)
        dirty = self._sync_endpoints(all_endpoints, changed_ns)
        dirty |= self._members.pop_changes()
        local = _local_workloads(local_endpoints)
        relabelled = self._sync_local_labels(local)
        self._select_policies(local, relabelled, policies_changed)
        return Changes(policies_changed, dirty, local, relabelled)

    def _sync_namespaces(self, namespaces: Iterable[Resource]) -> set[str]:
        new = namespace_labels(namespaces)
        changed = {n for n in set(new) | set(self._ns_labels) if new.get(n) != self._ns_labels.get(n)}
        self._ns_labels = new
        return changed

    def _sync_endpoints(self, all_endpoints: Iterable[Resource], changed_ns: set[str]) -> set[str]:
        """Update the member index; returns set names whose members' addresses or ports changed."""
        dirty: set[str] = set()
        seen: set[Hashable] = set()
        key: Hashable
        for wep in all_endpoints:
            if wep.kind == "WorkloadEndpoint":
                key = (wep.namespace or "", wep.name)
            elif wep.kind in NETWORK_SET_KINDS or wep.kind == HOST_ENDPOINT_KIND:
                key = (wep.kind, wep.namespace or "", wep.name)  # never equal to an endpoint's 2-tuple
            else:
                continue
            seen.add(key)
            old = self._endpoints.get(key)
            if old is not None and (old.resource is wep or old.resource == wep) \
                    and (wep.namespace or "") not in changed_ns:
                continue
            ep = self._endpoint(wep)
            self._endpoints[key] = ep
            self._members.update_item(key, ep.labels)
            if old is None or old.ips != ep.ips or old.ports != ep.ports:
                dirty.update(n for n in self._set_specs if self._set_specs[n][0] != "net"
                             and (self._set_specs[n][0] == "named" or self._members.contains(n, key)))
        for key in [k for k in self._endpoints if k not in seen]:
            gone = self._endpoints.pop(key)
            self._members.remove_item(key)
            if gone.ports:
                dirty.update(n for n, s in self._set_specs.items() if s[0] == "named")
        return dirty

    def _endpoint(self, wep: Resource) -> _Endpoint:
        """A selector-set member: its labels, addresses and named ports."""
        if wep.kind == "WorkloadEndpoint":
            return _Endpoint(wep, endpoint_labels(wep, self._ns_labels), tuple(workload_ips(wep)),
                             tuple(workload_ports(wep)))
        if wep.kind == HOST_ENDPOINT_KIND:
            # A host endpoint is a selector-set member through its expectedIPs (as in Calico).
            return _Endpoint(wep, own_labels(wep), tuple(host_endpoint_ips(wep)), ())
        # A network set is a selector-set member like an endpoint: its nets are its addresses.
        return _Endpoint(wep, network_set_labels(wep, self._ns_labels), tuple(network_set_nets(wep)), ())

    def _sync_policies(self, policies: Iterable[Resource]) -> bool:
        changed = False
        seen: set[PolicyKey] = set()
        for pol in policies:
            if pol.kind not in POLICY_KINDS:
                continue
            key = policy_key(pol)
            seen.add(key)
            cached = self._policies.get(key)
            if cached is not None and (cached[0] is pol or cached[0] == pol):
                continue
            compiled = self._compile_one(pol)
            self.policies_recompiled += 1
            self._policies[key] = (pol, compiled)
            changed = True
            if compiled is None or is_host_only(pol):
                self._applies.remove_selector(key)  # untracked and pre-DNAT policy never applies to a workload
            else:
                self._applies.add_selector(key, compiled.applies)
        for key in [k for k in self._policies if k not in seen]:
            del self._policies[key]
            self._applies.remove_selector(key)
            changed = True
        if changed:
            self._ordered = sorted((c for _, c in self._policies.values() if c is not None), key=lambda c: c.sort_key)
            self._sync_set_specs()
        return changed

    def _sync_set_specs(self) -> None:
        """The sets the current policies reference: new ones are indexed, ones no policy names are forgotten."""
        specs: dict[str, SetSpec] = {}
        for c in self._ordered:
            specs.update(c.sets)
        for name in [n for n in self._set_specs if n not in specs]:
            del self._set_specs[name]
            self._set_cache.pop(name, None)
            self._members.remove_selector(name)
        for name, spec in specs.items():
            if name not in self._set_specs:
                self._set_specs[name] = spec
                if spec[0] == "sel":
                    self._members.add_selector(name, spec[1])
        self._members.pop_changes()  # new sets are not cached yet; nothing else changed here

    def _sync_local_labels(self, local: dict[Hashable, Resource]) -> set[Hashable]:
        """Forget local endpoints that left and index the labels of the rest; returns those whose labels changed."""
        for key in [k for k in self._local_labels if k not in local]:
            self._applies.remove_item(key)
            del self._local_labels[key]
            self._selected.pop(key, None)
        relabelled: set[Hashable] = set()
        for key in local:
            ep = self._endpoints.get(key)
            labels = ep.labels if ep is not None else endpoint_labels(local[key], self._ns_labels)
            if self._local_labels.get(key) != labels:
                self._local_labels[key] = labels
                self._applies.update_item(key, labels)
                relabelled.add(key)
        self._applies.pop_changes()
        return relabelled

    def _select_policies(self, local: dict[Hashable, Resource], relabelled: set[Hashable],
                         policies_changed: bool) -> None:
        # Which policies apply to each local endpoint, in evaluation order; recomputed for every endpoint
        # only when a policy changed, else only for endpoints that are new or relabelled.
        if policies_changed:
            self._selected = {k: {"Ingress": [], "Egress": []} for k in local}
            for c in self._ordered:
                for key in self._applies.members(c.key):
                    per = self._selected.get(key)
                    if per is not None:
                        for d in c.types:
                            per[d].append(c)
            return
        for key in relabelled:
            per = {"Ingress": [], "Egress": []}
            applying = self._applies.matching(key)  # one match per distinct selector, not per policy
            for c in self._ordered:
                if c.key in applying:
                    for d in c.types:
                        per[d].append(c)
            self._selected[key] = per

    # ---- queries ----
    @property
    def ordered(self) -> list[CompiledPolicy]:
        """The policies that compiled, in evaluation order (Calico tier by order and name, then Kubernetes)."""
        return self._ordered

    def policy_counts(self) -> tuple[int, int]:
        """(policies that compiled, GlobalNetworkPolicies among them)."""
        compiled = [c for _, c in self._policies.values() if c is not None]
        return len(compiled), sum(1 for c in compiled if c.is_global)

    def selected(self, key: Hashable) -> dict[str, list[CompiledPolicy]]:
        """direction -> the policies that apply to local endpoint ``key``, in evaluation order."""
        return self._selected[key]

    def endpoint_ips(self, key: Hashable, wep: Resource) -> tuple[str, ...]:
        """The IPv4 and IPv6 addresses of local endpoint ``key`` (the index's, when it holds this very object)."""
        ep = self._endpoints.get(key)
        return ep.ips if ep is not None and ep.resource is wep else tuple(workload_ips(wep))

    def set_value(self, name: str, dirty: set[str]) -> tuple[str, frozenset[str]]:
        """(ipset type, members) of a set a policy's rules name; recomputed only when ``dirty`` says so."""
        cached = self._set_cache.get(name)
        if cached is not None and name not in dirty:
            return cached
        spec = self._set_specs[name]
        if spec[0] == "net":
            value = ("hash:net", spec[1])
        elif spec[0] == "sel":
            value = ("hash:net", set_nets(ip for k in self._members.members(name) for ip in self._endpoints[k].ips))
        else:
            _, proto, pname = spec
            value = ("hash:ip,port", frozenset(
                f"{ip},{proto}:{num}" for ep in self._endpoints.values() for n, p, num in ep.ports
                if n == pname and p.lower() == proto for ip in ep.ips))
        self._set_cache[name] = value
        return value

    # ---- set values for a program ----
    def emit_sets(self, policies: Iterable[Any], dirty: set[str], ipsets: IpsetValues, keep: set[str]) -> None:
        """The sets the chains of ``policies`` name, into ``ipsets``; a dirty set that neither they nor the tier
        sets (``keep``) use is forgotten, to be recomputed when it is next used (reference counting, as Felix)."""
        for c in policies:
            for name in c.chain_sets:
                if name not in ipsets:
                    ipsets[name] = self.set_value(name, dirty)
        for name in dirty:
            if name not in ipsets and name not in keep:
                self._set_cache.pop(name, None)

    def tier_sets(self, specs: Iterable[TierSetSpec], dirty: set[str], ipsets: IpsetValues, keep: set[str]) -> None:
        """The combined sets the endpoint chains look up, into ``ipsets``; the selector sets they are made of
        into ``keep``. A combined set is rebuilt only when one of those selector sets changed value, and
        patched rather than rebuilt when little changed. ``specs``: every tier set in use (repeats allowed)."""
        memo: dict[str, frozenset[str]] = {}
        live: dict[str, tuple[tuple[frozenset[str], ...], tuple[str, frozenset[str]]]] = {}
        atoms_live: dict[Atom, tuple[frozenset[str], frozenset[str]]] = {}
        live_atoms: list[tuple[Atom, ...]] = []
        for name, kind, atoms in specs:
            if name in ipsets:
                continue
            sels = sorted({p for k, p, _, _ in atoms if k == "s"})
            for sn in sels:
                if sn not in memo:
                    memo[sn] = self.set_value(sn, dirty)[1]
            keep.update(sels)
            live[name] = self._combined_value(name, kind, atoms, sels, memo, atoms_live)
            ipsets[name] = live[name][1]
            live_atoms.append(atoms)
        if atoms_live or live.keys() != self._combined.keys():  # else the atoms in use are the same as before
            in_use: set[Atom] = {a for atoms in live_atoms for a in atoms if a[0] == "s"}
            # Any (members, result) pair is a correct base to patch from; keep those of the atoms in use.
            self._atoms = {a: atoms_live.get(a) or self._atoms[a] for a in in_use
                           if a in atoms_live or a in self._atoms}
        self._combined = live

    def _combined_value(self, name: str, kind: str, atoms: tuple[Atom, ...], sels: list[str],
                        memo: dict[str, frozenset[str]], atoms_live: dict[Atom, tuple[frozenset[str], frozenset[str]]],
                        ) -> tuple[tuple[frozenset[str], ...], tuple[str, frozenset[str]]]:
        """(the selector set values it is made of, (type, members)) of one combined set: the last value when
        those are the very same objects, else patched from it, else built from its atoms' members."""
        vals = tuple(memo[sn] for sn in sels)
        cached = self._combined.get(name)
        if cached is not None and len(cached[0]) == len(vals) and not _same(cached[0], vals):
            patched = _patch_combined(atoms, dict(zip(sels, cached[0], strict=True)), memo, cached[1][1])
            if patched is not None:
                cached = (vals, (kind, patched))
        if cached is not None and len(cached[0]) == len(vals) and _same(cached[0], vals):
            return cached
        parts: list[Iterable[str]] = []
        for atom in atoms:
            if atom[0] != "s":
                parts.append((f"{atom[1]},{atom[2]}:{atom[3]}" if atom[2] else atom[1],))
                continue
            done = atoms_live.get(atom)
            if done is None:
                nets = memo[atom[1]]
                done = (nets, _atom_members(atom, nets, self._atoms.get(atom)))
                atoms_live[atom] = done
            parts.append(done[1])
        return (vals, (kind, frozenset().union(*parts)))


def _local_workloads(local_endpoints: Iterable[Resource]) -> dict[Hashable, Resource]:
    """(namespace, name) -> the local WorkloadEndpoints that have an interface to police."""
    local: dict[Hashable, Resource] = {}
    for w in local_endpoints:
        if w.kind == "WorkloadEndpoint" and workload_spec(w).interface_name:
            local[(w.namespace or "", w.name)] = w
    return local


def _same(a: tuple[frozenset[str], ...], b: tuple[frozenset[str], ...]) -> bool:
    """The very same set objects, in order (identity: a set value is a new object whenever it was recomputed)."""
    return all(x is y for x, y in zip(a, b, strict=True))


def _with_port(nets: Iterable[str], proto: str, port: int) -> set[str]:
    return {f"{n},{proto}:{port}" for n in nets}


def _atom_members(atom: Atom, nets: frozenset[str],
                  before: tuple[frozenset[str], frozenset[str]] | None) -> frozenset[str]:
    """One selector atom's members of a tier set: the selector set's members ``nets``, with ``,proto:port``
    when it has a port. ``before``: (the selector members, the result) of the last time, patched by the
    difference when that is small (a pod came or went) instead of formatting every member again."""
    _, _, proto, port = atom
    if not proto:
        return nets
    if before is not None and before[0] is not nets:
        gone, new = before[0] - nets, nets - before[0]
        if len(gone) + len(new) < len(nets) // 2:
            return frozenset((before[1] - _with_port(gone, proto, port)) | _with_port(new, proto, port))
    return frozenset(_with_port(nets, proto, port))


def _member(net: str, proto: str, port: int) -> str:
    return f"{net},{proto}:{port}" if proto else net


def _patch_combined(atoms: Sequence[Atom], before: Mapping[str, frozenset[str]], now: Mapping[str, frozenset[str]],
                    value: frozenset[str]) -> frozenset[str] | None:
    """A tier set's members after some of its selector sets changed, from its members ``value`` when they
    were ``before`` (selector set -> members): only the nets that came or went are formatted, and a member
    that went from one atom stays when another atom still makes it. None when so much changed that
    building it again is as cheap (the caller does)."""
    moved = {sn: (old - now[sn], now[sn] - old) for sn, old in before.items() if old is not now[sn]}
    budget = len(value) // 2 + 16
    gone: dict[str, tuple[str, str, int]] = {}
    new: set[str] = set()
    for kind, peer, proto, port in atoms:
        if kind != "s" or peer not in moved:
            continue
        went, came = moved[peer]
        budget -= len(went) + len(came)
        if budget < 0:
            return None
        for net in went:
            gone[_member(net, proto, port)] = (net, proto, port)
        new.update(_member(net, proto, port) for net in came)
    if gone:
        makers: dict[tuple[str, int], list[Atom]] = {}
        for atom in atoms:
            makers.setdefault((atom[2], atom[3]), []).append(atom)
        for member, (net, proto, port) in list(gone.items()):
            if any((net in now[p]) if k == "s" else p == net for k, p, _, _ in makers[(proto, port)]):
                del gone[member]  # another atom (or the same one, by another selector) still makes it
    if not gone and not new:
        return value
    return value.difference(gone) | new

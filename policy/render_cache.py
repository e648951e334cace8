"""policy.render_cache: the rendered chains kept between two compiles, re-rendered only when their inputs changed.

Owns what :mod:`policy.render` made last time and what it was made from: each local endpoint's
from- and to-workload chains (re-rendered only when its interface, addresses or list of applying
policies changed), the Kubernetes tier of each list of applying NetworkPolicies, the dispatch
chains and the leaves of the dispatch tree, and the host endpoint chains. It also tracks which
rendered workloads have IPv6 addresses: policy is IPv4 only (nothing is written to ip6tables), so
their IPv6 traffic is NOT policed; each one is logged once (a warning) and listed in
``PolicyProgram.ipv6_unpoliced`` (gauge ``l3net_policy_ipv6_unpoliced_workloads``), so the gap is
visible, not silent.

A cache only: what it returns is what the pure renderer returns for the same inputs. Not
thread-safe (its owner's loop). Never raises on content.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any

from l3net.model import Resource
from l3net.model.workload_spec import workload_spec
from policy.compiled import CompiledPolicy
from policy.host_endpoints import HostEndpointRender, local_host_endpoints, render_host_endpoints
from policy.index import Changes, IpsetValues, PolicyIndex, TierSetSpec
from policy.model import workload_ips
from policy.render import Tier, dispatch_chains, dispatch_leaf, endpoint_chains, endpoint_set_name, k8s_tier
from policy.rules import set_nets

_log = logging.getLogger(__name__)

__all__ = ["RenderCache"]

# (signature, fw chain, its rules, tw chain, its rules); signature: (wep, iface, ips, Calico-tier chains out,
# in, Kubernetes tier out, in), so sig[5:7] are the tiers.
_EndpointEntry = tuple[tuple[Any, ...], str, list[str], str, list[str]]


class RenderCache:
    """Owns the rendered chains of the last compile and what they were rendered from (see the module docstring).

    Each call replaces the last call's entries with the ones it used, so memory follows the current
    inputs. Not thread-safe: one caller at a time (the owning ``PolicyCompiler``).
    """

    def __init__(self) -> None:
        self._ep_chains: dict[Hashable, _EndpointEntry] = {}
        # (direction, policy keys) -> (the compiled policies it was made from, their Kubernetes tier)
        self._tiers: dict[tuple[Any, ...], tuple[tuple[CompiledPolicy, ...], Tier]] = {}
        self._dispatch: tuple[tuple[tuple[str, ...], str], dict[str, list[str]]] | None = None
        self._dispatch_leaves: dict[str, tuple[tuple[str, ...], list[str]]] = {}
        self._hosts: tuple[tuple[Any, ...], HostEndpointRender] | None = None
        self._ipv6: dict[Hashable, tuple[str, ...]] = {}  # local endpoint -> its IPv6 addresses (unpoliced)

    def host_endpoints(self, host_endpoints: Iterable[Resource], ordered: Sequence[CompiledPolicy],
                       policies_changed: bool, failsafe_in: Sequence[tuple[str, int]],
                       failsafe_out: Sequence[tuple[str, int]]) -> HostEndpointRender:
        """This node's host endpoint chains; re-rendered only when a policy, an endpoint or a port changed."""
        heps = local_host_endpoints(host_endpoints)
        key = (tuple(heps), tuple(failsafe_in), tuple(failsafe_out))
        if self._hosts is None or policies_changed or self._hosts[0] != key:
            self._hosts = (key, render_host_endpoints(heps, ordered, failsafe_in=failsafe_in,
                                                      failsafe_out=failsafe_out))
        return self._hosts[1]

    def endpoints(self, ordered_locals: list[tuple[Hashable, Resource]], fail_closed: frozenset[Hashable],
                  index: PolicyIndex, changes: Changes, filter_chains: dict[str, list[str]], ipsets: IpsetValues,
                  used: dict[str, tuple[CompiledPolicy, str]]) -> None:
        """Each local endpoint's from- and to-workload chains (and its address set) into ``filter_chains`` and
        ``ipsets``; the policy chains they jump to into ``used``."""
        ep_cache: dict[Hashable, _EndpointEntry] = {}
        for key, wep in ordered_locals:
            iface = str(workload_spec(wep).interface_name)
            if key in fail_closed:
                # Quarantined (the kernel refused what it renders to, its interface name included): nothing
                # of it is rendered, so the dispatch chains' last rule drops its traffic both ways.
                continue
            ips = index.endpoint_ips(key, wep)
            sel = index.selected(key)
            for d in ("Ingress", "Egress"):
                for c in sel[d]:
                    if d in c.residual:
                        used[c.chains[d][0]] = (c, d)
            cached = self._endpoint_chains(key, wep, iface, ips, sel,
                                           changes.policies_changed or key in changes.relabelled)
            ep_cache[key] = cached
            _, fw, fw_rules, tw, tw_rules = cached
            filter_chains[fw] = fw_rules
            filter_chains[tw] = tw_rules
            if len(ips) > 1:
                ipsets[endpoint_set_name(iface)] = ("hash:net", set_nets(ips))
        self._ep_chains = ep_cache
        if len(self._tiers) > 2 * len(ep_cache) + 16:
            live = {id(t) for sig, *_ in ep_cache.values() for t in sig[5:7] if t is not None}
            self._tiers = {k: v for k, v in self._tiers.items() if id(v[1]) in live}
        for key in [k for k in self._ipv6 if k not in ep_cache]:   # gone, or fail-closed: not rendered
            del self._ipv6[key]

    def _endpoint_chains(self, key: Hashable, wep: Resource, iface: str, ips: tuple[str, ...],
                         sel: dict[str, list[CompiledPolicy]], stale: bool) -> _EndpointEntry:
        """(signature, fw chain, its rules, tw chain, its rules) of one endpoint, re-rendered only when what
        they depend on changed (``stale``: its policies may have)."""
        cached = self._ep_chains.get(key)
        if cached is None or cached[0][0] is not wep:
            self._note_ipv6(key, wep)
        if cached is not None and not stale and cached[0][0] is wep:
            return cached
        sig = (wep, iface, ips, *(tuple(c.chains[d][0] for c in sel[d] if c.tiered) for d in ("Egress", "Ingress")),
               *(self._k8s_tier([c for c in sel[d] if not c.tiered], d) for d in ("Egress", "Ingress")))
        if cached is None or cached[0][1:] != sig[1:]:
            return (sig, *endpoint_chains(iface, ips, sig[3:5], sig[5:7]))
        return (sig, *cached[1:])

    def _k8s_tier(self, nps: list[CompiledPolicy], direction: str) -> Tier | None:
        """The Kubernetes tier of an endpoint whose applying NetworkPolicies are ``nps`` (None: none applies)."""
        if not nps:
            return None
        key = (direction, *(c.key for c in nps))
        hit = self._tiers.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], nps, strict=True)):
            return hit[1]
        tier = k8s_tier(nps, direction)
        self._tiers[key] = (tuple(nps), tier)
        return tier

    def tier_sets(self) -> Iterator[TierSetSpec]:
        """(name, ipset type, atoms) of every Kubernetes tier set the endpoint chains of the last
        :meth:`endpoints` look up, in endpoint order (a set shared by several endpoints repeats)."""
        for sig, *_ in self._ep_chains.values():
            for tier in sig[5:7]:
                if tier is None:
                    continue
                if tier.port_set is not None:
                    yield tier.port_set, "hash:net,port", tier.port_atoms
                if tier.any_set is not None:
                    yield tier.any_set, "hash:net", tier.any_atoms

    def dispatch(self, ordered_locals: list[tuple[Hashable, Resource]], fail_closed: frozenset[Hashable],
                 iface_prefix: str) -> dict[str, list[str]]:
        """The dispatch chains of the programmed interfaces (:func:`policy.render.dispatch_chains`); re-rendered
        only when the interfaces changed, and then only the tree's leaves whose interfaces changed."""
        ifaces = tuple(str(workload_spec(w).interface_name) for k, w in ordered_locals if k not in fail_closed)
        if self._dispatch is None or self._dispatch[0] != (ifaces, iface_prefix):
            chains = dispatch_chains(ifaces, iface_prefix, leaf=self._dispatch_leaf)
            self._dispatch = ((ifaces, iface_prefix), chains)
            self._dispatch_leaves = {n: v for n, v in self._dispatch_leaves.items() if n in chains}
        return self._dispatch[1]

    def _dispatch_leaf(self, name: str, direction: str, kind: str, ifaces: tuple[str, ...]) -> list[str]:
        """One sub-chain of the dispatch tree, re-hashed only when its interfaces changed."""
        hit = self._dispatch_leaves.get(name)
        if hit is None or hit[0] != ifaces:
            hit = (ifaces, dispatch_leaf(name, direction, kind, ifaces))
            self._dispatch_leaves[name] = hit
        return hit[1]

    def ipv6_unpoliced(self) -> tuple[str, ...]:
        """``<namespace>/<name>`` of the rendered local workloads with IPv6 addresses, sorted."""
        return tuple(sorted(f"{k[0]}/{k[1]}" for k in self._ipv6))  # type: ignore[index]

    def _note_ipv6(self, key: Hashable, wep: Resource) -> None:
        """Remember (and warn once per change) that this local workload's IPv6 traffic goes unpoliced."""
        v6 = tuple(workload_ips(wep, version=6))
        if not v6:
            self._ipv6.pop(key, None)
            return
        if self._ipv6.get(key) != v6:
            _log.warning("IPv6 traffic of this workload is NOT policed (policy is IPv4 only) wep=%s addresses=%s",
                         wep.ref, ",".join(v6))
        self._ipv6[key] = v6

"""The whole dataplane (routes, interfaces, iptables, ipsets) behind the sync loop, against stateful fakes.

Drift healing: the policy drivers trust their cached view until the loop's periodic
refresh invalidates it; then a clobbered ``l3n-`` chain or ipset is repaired. CNI
adoption: the plugin's own /32 at another metric is adopted, never duplicated.
"""

from __future__ import annotations

import pytest

from felix.drivers.routes import SCOPE_LINK, KernelRoute
from felix.links import Link
from l3net.constants import ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from tests.builders import gnp, netpol, ns
from tests.drivers.loop_builders import KEYS, Upd, res, wep
from tests.drivers.policy_rig import REFRESH, PolicyRig

pytestmark = pytest.mark.drivers

M = WORKLOAD_ROUTE_METRIC

POLICY = [wep("a", "n1", "10.65.0.2/32", "cali1"), wep("b", "n1", "10.65.0.3/32", "cali2"),
          res("namespaces", ns("default")),
          res("networkpolicies", netpol("isolate-b", "default", {"podSelector": {}, "ingress": [
              {"from": [{"podSelector": {}}], "ports": [{"port": 80, "protocol": "TCP"}]},  # a tier set member
              {"from": [{"ipBlock": {"cidr": "10.65.0.0/16", "except": ["10.65.0.9/32"]}}]}]})),  # in l3n-pi-*
          res("globalnetworkpolicies", gnp("deny-db", {"order": 10, "selector": "all()", "types": ["Egress"],
                                                       "egress": [{"action": "Allow"}]}))]


def test_clobbered_chain_and_ipset_are_healed_by_the_periodic_refresh() -> None:
    rig = PolicyRig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates(POLICY)
    rig.sync.on_in_sync()
    rig.step()
    filt = rig.kernel.tables["filter"]
    ours = sorted(c for c in filt if c.startswith("l3n-"))
    assert any(c.startswith("l3n-gi") or c.startswith("l3n-go") for c in ours)  # the GNP is compiled in
    assert any(c.startswith("l3n-pi") for c in ours)                             # and the NetworkPolicy
    assert rig.sync.last_program is not None and rig.sync.last_program.global_policies == 1  # the policy side's
    want_tables = {t: {c: list(r) for c, r in chains.items()} for t, chains in rig.kernel.tables.items()}
    want_sets = {n: (k, set(m)) for n, (k, m) in rig.kernel.ipsets.items()}
    assert "l3n-FORWARD" in filt and filt["FORWARD"][-1] == "-s 198.51.100.0/24 -j DROP"

    # Someone deletes one of our chains (flushed, its hook removed, then -X) and empties one of our sets.
    victim = next(c for c in ours if c.startswith("l3n-pi"))
    for chain, rules in filt.items():
        filt[chain] = [r for r in rules if victim not in r]
    del filt[victim]
    set_name, (kind, _members) = next((n, v) for n, v in rig.kernel.ipsets.items() if n.startswith("l3n") and v[1])
    rig.kernel.ipsets[set_name] = (kind, set())

    # Before the refresh the drivers trust their cache: a dirty apply writes nothing.
    rig.sync.on_updates([POLICY[0]])
    before = rig.writes()
    rig.step()
    assert rig.writes() == before and victim not in filt

    rig.step(REFRESH)  # the periodic refresh: every driver re-reads the kernel and repairs what differs
    assert rig.kernel.tables == want_tables
    assert rig.kernel.ipsets == want_sets
    assert rig.iptables.drift_repairs == 1
    assert rig.sync.failures == 0

    # Healed and cached again: the next apply writes nothing; foreign rules and sets were never touched.
    before = rig.writes()
    rig.sync.on_updates([POLICY[0]])
    rig.step()
    assert rig.writes() == before
    assert rig.kernel.ipsets["foreign-set"] == ("hash:ip", {"192.0.2.1"})


def test_cni_route_at_another_metric_is_adopted_not_duplicated() -> None:
    rig = PolicyRig({"cali1": 11})
    rig.sync.on_updates([wep("a", "n1", "10.65.0.2/32", "cali1")])
    rig.sync.on_in_sync()
    rig.step()
    # The CNI plugin wires a new pod behind the driver's back: veth and its own /32 at metric 0 ...
    rig.nl.links["cali2"] = 12
    rig.sys.add_iface("cali2")
    cni_route = KernelRoute("10.65.0.3/32", ROUTE_PROTO, 0, scope=SCOPE_LINK, oif=12)
    rig.nl.add(cni_route)
    rig.sync.on_links({"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True)})
    # ... then writes the endpoint; the agent re-reads that interface's routes and adopts the plugin's.
    dumps, oif_dumps = rig.nl.dumps, rig.nl.oif_dumps
    rig.sync.on_updates([wep("b", "n1", "10.65.0.3/32", "cali2")])
    rig.step()
    for_b = [r for r in rig.nl.table.values() if r.dst == "10.65.0.3/32"]
    assert for_b == [cni_route]
    # Only the new pod's interface was re-read, not the whole table.
    assert rig.nl.dumps == dumps and rig.nl.oif_dumps == oif_dumps + 1
    assert rig.sync.failures == 0

    # The pod goes: the kernel drops its routes with the veth before the agent hears of it.
    del rig.nl.links["cali2"]
    del rig.nl.table[cni_route.slot]
    rig.sync.on_links({"cali1": Link("cali1", 11, True)})
    rig.step()
    rig.sync.on_updates([Upd(wep("b", "n1", "10.65.0.3/32", "cali2").key, None, 9)])
    rig.step()
    assert rig.sync.failures == 0  # no delete of a route the kernel already removed
    assert set(rig.nl.by_proto(ROUTE_PROTO)) == {("10.65.0.2/32", M)}


def test_a_link_change_applies_the_route_side_only_a_model_change_both() -> None:
    """The policy program comes from the model alone and never reads block affinities: a pod's veth appearing,
    a learned route or a block claim makes no iptables-restore run beside the pod's wiring; an endpoint
    update reaches both sides."""
    rig = PolicyRig({"cali1": 11})
    rig.sync.on_updates(POLICY)
    rig.sync.on_in_sync()
    rig.step()
    routes, policy = rig.sync.applies, rig.sync.policy_applies
    builds: list[int] = []
    build = rig.sync.policy_builder
    assert build is not None
    rig.sync.policy_builder = lambda m, n: (builds.append(1), build(m, n))[1]
    rig.sync.on_links({"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True)})
    rig.sync.on_learned_routes({"10.70.1.0/26": ["10.0.0.2"]})
    assert rig.sync.routes_side.dirty and not rig.sync.policy_side.dirty  # type: ignore[union-attr]
    rig.step()
    assert (rig.sync.applies, rig.sync.policy_applies) == (routes + 1, policy)
    rig.sync.on_updates([Upd(KEYS.affinity("n1", "10.65.7.0/26"), b'{"state": "confirmed"}')])  # a block claim
    assert rig.sync.routes_side.dirty and not rig.sync.policy_side.dirty  # type: ignore[union-attr]
    rig.step()
    assert ("10.65.7.0/26", 1024) in rig.nl.by_proto(ROUTE_PROTO)
    rig.sync.on_updates([wep("c", "n1", "10.65.0.4/32", "cali2")])
    rig.step()
    assert (rig.sync.applies, rig.sync.policy_applies) == (routes + 3, policy + 1)
    assert len(builds) == 1, "the policy program is built for the policy side only, not for each route apply"

"""A GlobalNetworkSet used by a policy, with real traffic: the real agent lets a pod reach an external host
only while the host's address is in the set the policy's egress rule selects by label.

The "external" namespace sits behind the node's router, outside every IPPool, and routes back to
the pod CIDR through the router (no NAT). It answers on two addresses: one the set holds, one it
never holds.
"""

from __future__ import annotations

import pytest

from l3net import netns
from l3net.model.resource import Resource
from tests.netns.felix_rig import MEMBER_IP, NON_MEMBER_IP, Node, external_host, our_rules, reaches
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

POD_IP = "10.65.0.2"
SET = "external-hosts"


def put_set(node: Node, nets: list[str]) -> None:
    res = Resource(kind="GlobalNetworkSet", name=SET, spec={"nets": nets}, labels={"role": "external"})
    node.ds.put(node.keys.resource("globalnetworksets", SET), res.to_json())


def put_policy(node: Node) -> None:
    """Egress of every pod: allowed only to what the label role=external selects."""
    res = Resource(kind="GlobalNetworkPolicy", name="egress-to-external", spec={
        "selector": "all()", "types": ["Egress"],
        "egress": [{"action": "Allow", "destination": {"selector": "role == 'external'"}}]})
    node.ds.put(node.keys.resource("globalnetworkpolicies", res.name), res.to_json())


def set_lines(ns: str) -> list[str]:
    """``add l3ns:...`` lines of the selector sets in the node's kernel."""
    out = netns.run(ns, ["ipset", "save"]).stdout
    return [line for line in out.splitlines() if line.startswith("add l3ns:")]


def test_a_global_network_set_opens_egress_to_its_nets_and_closes_when_the_cidr_is_removed(node: Node) -> None:
    pod = node.add_workload("a", POD_IP)
    external_host(node)
    node.write_affinity("10.65.0.0/26")
    put_policy(node)
    put_set(node, [f"{MEMBER_IP}/32", "2001:db8::/64"])
    node.start_agent()
    wait_for(node.ready, what="readiness")
    wait_for(lambda: reaches(pod, MEMBER_IP), timeout=30, what="the pod reaching the set's external host")
    assert not reaches(pod, NON_MEMBER_IP)  # not in the set: the policy's end-of-tier drop
    assert [line.split()[-1] for line in set_lines(node.ns)] == [MEMBER_IP]  # the IPv6 net is left out
    rules = our_rules(node.ns)

    # Removing the CIDR from the set (an etcd update of the set alone) closes the way ...
    put_set(node, ["198.51.100.0/24"])
    wait_for(lambda: not reaches(pod, MEMBER_IP), timeout=30, what="the removed CIDR blocked")
    assert [line.split()[-1] for line in set_lines(node.ns)] == ["198.51.100.0/24"]
    # ... by moving set members only: not one rule of l3net's chains changed.
    assert our_rules(node.ns) == rules
    assert not reaches(pod, NON_MEMBER_IP)

    # Putting it back opens it again; the non-member address stays blocked throughout.
    put_set(node, ["203.0.113.0/24", f"{MEMBER_IP}/32"])
    wait_for(lambda: reaches(pod, MEMBER_IP), timeout=30, what="the CIDR back in the set")
    assert not reaches(pod, NON_MEMBER_IP)
    assert node.proc is not None and node.proc.poll() is None

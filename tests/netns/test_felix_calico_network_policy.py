"""A Calico (projectcalico.org/v3) NetworkPolicy through the real agent and etcd, with real traffic: stored
beside a Kubernetes NetworkPolicy of the same namespace and name, each under its own key, both enforced;
deleting the Calico one leaves the Kubernetes one in force.

The "external" namespace sits behind the node's router (as in test_felix_network_sets) and answers on
two addresses; the pod lives in namespace ``default``.
"""

from __future__ import annotations

import pytest

from l3net import netns
from l3net.model.resource import Resource
from tests.netns.felix_rig import MEMBER_IP, NON_MEMBER_IP, Node, external_host, our_rules, reaches
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

POD_IP = "10.65.0.2"
NAME = "egress"


def tier_set_members(node: Node) -> set[str]:
    """Members of the Kubernetes tier's any-port sets (``l3nu:``) in the node's kernel."""
    out = netns.run(node.ns, ["ipset", "save"]).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith("add l3nu:")}


def put(node: Node, res: Resource) -> str:
    key = node.keys.resource(res.info.plural, res.name, res.namespace)
    node.ds.put(key, res.to_json())
    return key


def test_calico_and_kubernetes_network_policies_of_one_name_are_both_enforced(node: Node) -> None:
    pod = node.add_workload("a", POD_IP)
    external_host(node)
    node.write_affinity("10.65.0.0/26")
    # Kubernetes: egress only to the member address. Calico, same namespace and name, in the tier before it:
    # deny the member address, pass the rest on to the Kubernetes policy.
    k8s = Resource(kind="NetworkPolicy", name=NAME, namespace="default", spec={
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": f"{MEMBER_IP}/32"}}]}]})
    calico = Resource(kind="CalicoNetworkPolicy", name=NAME, namespace="default", spec={
        "selector": "all()", "types": ["Egress"],
        "egress": [{"action": "Deny", "destination": {"nets": [f"{MEMBER_IP}/32"]}}, {"action": "Pass"}]})
    put(node, k8s)
    calico_key = put(node, calico)
    assert calico_key != node.keys.resource("networkpolicies", NAME, "default")
    node.start_agent()
    wait_for(node.ready, what="readiness")
    # Both in force: the Calico deny takes the member, the Kubernetes policy refuses the other address.
    wait_for(lambda: not reaches(pod, MEMBER_IP) and not reaches(pod, NON_MEMBER_IP), timeout=30,
             what="both policies enforced")
    # The Calico policy has its own chain; the Kubernetes one (an ipBlock on any port) lives in the pod's
    # egress tier set, looked up once whatever the number of policies (policy.compiler).
    chains = {line.split()[1] for line in our_rules(node.ns)}
    assert f"l3n-co-default/{NAME}" in chains, sorted(chains)
    assert tier_set_members(node) == {MEMBER_IP}  # ipset prints a /32 as the bare address
    node.ds.delete(calico_key)
    wait_for(lambda: reaches(pod, MEMBER_IP), timeout=30, what="the Kubernetes policy alone: member reachable")
    assert not reaches(pod, NON_MEMBER_IP)
    chains = {line.split()[1] for line in our_rules(node.ns)}
    assert f"l3n-co-default/{NAME}" not in chains
    assert tier_set_members(node) == {MEMBER_IP}
    assert node.proc is not None and node.proc.poll() is None

"""natOutgoing with real traffic: the real agent masquerades a pool's pods towards a host outside every pool.

The "outside" namespace sits behind the node's router and has a route to the node's
segment only, none to the pod CIDR: a ping from a pod gets its reply only when the
node rewrote the source to its own address.
"""

from __future__ import annotations

import pytest

from l3net import netns
from l3net.model.resource import Resource
from tests.netns.felix_rig import Node
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

POD_IP = "10.65.0.2"
OUTSIDE_IP = "192.0.2.2"
POOL = "rig-10-65-0-0"  # the rig's pool for 10.65.0.0/16 (felix_rig.Node.ensure_pool)
HOST_RULE = "-A POSTROUTING -d 198.51.100.0/24 -j SNAT --to-source 10.0.0.1"


def put_pool(node: Node, nat_outgoing: bool) -> None:
    res = Resource(kind="IPPool", name=POOL, spec={"cidr": "10.65.0.0/16", "blockSize": 26, "disabled": True,
                                                   "natOutgoing": nat_outgoing})
    node.ds.put(node.keys.resource("ippools", POOL), res.to_json())


def outside_host(node: Node) -> str:
    """A namespace behind the node's router: 192.0.2.2/24, routes to the node segment only."""
    out = node.factory("ox")
    node.factory.veth(node.router, "pout", out, "eth0")
    netns.run(node.router, ["ip", "addr", "add", "192.0.2.1/24", "dev", "pout"])
    netns.write_sysctl("net.ipv4.ip_forward", 1, node.router)
    netns.run(out, ["ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0"])
    netns.run(out, ["ip", "route", "add", "10.0.0.0/24", "via", "192.0.2.1"])
    return out


def reaches(pod_ns: str) -> bool:
    # A new ping process per try: a new ICMP id, so a new conntrack entry judged by the current rules.
    return netns.run(pod_ns, ["ping", "-c", "1", "-W", "1", OUTSIDE_IP], check=False).returncode == 0


def nat_table(ns: str) -> str:
    return netns.run(ns, ["iptables-nft-save", "-t", "nat"]).stdout


def our_ipsets(ns: str) -> set[str]:
    out = netns.run(ns, ["ipset", "list", "-n"]).stdout
    return {name for name in out.split() if name.endswith("-ipam-pools")}


def test_pods_of_a_natoutgoing_pool_reach_outside_until_the_flag_is_turned_off(node: Node) -> None:
    pod = node.add_workload("a", POD_IP)
    outside_host(node)
    netns.run(node.ns, ["iptables-nft", "-t", "nat", *HOST_RULE.split()])  # the host's own NAT rule
    node.write_affinity("10.65.0.0/26")
    assert not reaches(pod)  # no natOutgoing yet, no agent: the reply has no way back
    put_pool(node, nat_outgoing=True)
    node.start_agent()
    wait_for(node.ready, what="readiness")
    wait_for(lambda: reaches(pod), timeout=30, what="the pod reaching the outside host through NAT")
    table = nat_table(node.ns)
    assert HOST_RULE in table
    assert ":l3n-POSTROUTING" in table and ":l3n-nat-outgoing" in table
    assert "-j MASQUERADE" in table
    hooks = [line for line in table.splitlines() if line.startswith("-A POSTROUTING")]
    assert len(hooks) == 2 and "-j l3n-POSTROUTING" in hooks[0]  # ours at the top, the host's kept after it
    assert our_ipsets(node.ns) == {"l3n4all-ipam-pools", "l3n4masq-ipam-pools"}

    put_pool(node, nat_outgoing=False)
    wait_for(lambda: "l3n-" not in nat_table(node.ns), what="l3net's nat chains and hook removed")
    assert HOST_RULE in nat_table(node.ns)
    wait_for(lambda: not our_ipsets(node.ns), what="the pool ipsets removed")
    assert not reaches(pod)

    put_pool(node, nat_outgoing=True)
    wait_for(lambda: reaches(pod), timeout=30, what="NAT back after turning the flag on again")
    node.ds.delete(node.keys.resource("ippools", POOL))
    wait_for(lambda: "l3n-" not in nat_table(node.ns), what="nat chains removed with the pool")
    assert HOST_RULE in nat_table(node.ns)
    assert node.proc is not None and node.proc.poll() is None


def test_with_policy_disabled_natoutgoing_is_reported_not_silently_ignored(node: Node) -> None:
    node.add_workload("a", POD_IP)
    node.write_affinity("10.65.0.0/26")
    put_pool(node, nat_outgoing=True)
    node.start_agent(L3NET_POLICY_ENABLED="false")
    wait_for(node.ready, what="readiness")
    wait_for(lambda: "natOutgoing is NOT applied" in node.log(), what="the warning about natOutgoing")
    assert "l3n-" not in nat_table(node.ns)

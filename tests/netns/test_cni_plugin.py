"""l3net-cni end to end: called as a runtime calls it, in two node namespaces, against a real etcd."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from l3net.constants import ROUTE_PROTO
from l3net.model.client import ResourceClient
from tests.netns.cni_rig import UPLINK_MTU, CNIRig, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.integration]


@pytest.fixture
def rig(netns_factory, etcd_server, key_layout, datastore) -> Iterator[CNIRig]:
    r = make_rig(netns_factory, etcd_server, key_layout, datastore)
    r.add_pool("pool1", "10.240.0.0/24")
    yield r


def calico_name(namespace: str, pod: str) -> str:
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def pod_routes(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns.rsplit("/", 1)[1], "-4", "route", "show"], capture_output=True,
                          text=True, check=True).stdout


def test_add_check_del_one_pod(rig: CNIRig) -> None:
    ns = rig.pod_ns("p0")
    res = rig.invoke("node-1", "ADD", "c0", ns, pod="web-0", namespace="shop",
                     conf=rig.conf("node-1", args={"cni": {"labels": [{"key": "app", "value": "web"}]}}))
    assert res.rc == 0, res
    host_if = calico_name("shop", "web-0")
    ip = res.out["ips"][0]["address"].split("/")[0]
    assert res.out["cniVersion"] == "1.0.0"
    assert res.out["interfaces"][0] == {"name": host_if, "mac": "ee:ee:ee:ee:ee:ee"}
    assert res.out["interfaces"][1]["sandbox"] == ns and res.out["ips"][0]["interface"] == 1
    links = rig.links("node-1")
    assert links[host_if]["mac"] == "ee:ee:ee:ee:ee:ee" and links[host_if]["mtu"] == UPLINK_MTU
    assert rig.our_routes("node-1") == {f"{ip}/32": links[host_if]["index"]}
    assert rig.sysctl("node-1", f"net/ipv4/conf/{host_if}/proxy_arp") == "1"
    assert rig.sysctl("node-1", f"net/ipv4/neigh/{host_if}/proxy_delay") == "0"
    assert rig.sysctl("node-1", "net/ipv4/ip_forward") == "1"
    routes = pod_routes(ns)
    assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0 scope link" in routes
    wep = ResourceClient(rig.ds, rig.keys).get("WorkloadEndpoint", "node--1-k8s-web--0-eth0", "shop")
    assert wep is not None and wep.labels["app"] == "web"
    assert wep.spec["ipNetworks"] == [f"{ip}/32"] and wep.spec["interfaceName"] == host_if
    assert wep.spec["containerID"] == "c0" and wep.spec["mac"] == res.out["interfaces"][1]["mac"]
    ping = subprocess.run(["ip", "netns", "exec", ns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "5",
                           rig.node_ip["node-1"]], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout
    conf = rig.conf("node-1", prevResult=res.out)
    assert rig.invoke("node-1", "CHECK", "c0", ns, pod="web-0", namespace="shop", conf=conf).rc == 0
    again = rig.invoke("node-1", "ADD", "c0", ns, pod="web-0", namespace="shop")  # a retried ADD
    assert again.rc == 0 and again.out["ips"] == res.out["ips"]
    assert rig.invoke("node-1", "DEL", "c0", ns, pod="web-0", namespace="shop").rc == 0
    assert rig.leftovers() == []
    assert rig.invoke("node-1", "DEL", "c0", ns, pod="web-0", namespace="shop").rc == 0  # already gone

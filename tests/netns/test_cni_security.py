"""Issue 13, finding 8 and the CNI half of 5 and 6: the real plugin, run as a runtime runs it, refuses the
host's namespace, bad CNI_IFNAME/CNI_CONTAINERID and an unidentifiable GC with CNI error objects, and
leaves the node as it was; implicit labels win over args.cni.labels; IPv6 is off on the host veth."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netns.cni_rig import CNIRig, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


@pytest.fixture
def rig(netns_factory, etcd_server, key_layout, datastore, tmp_path) -> Iterator[CNIRig]:
    r = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path)
    r.add_pool("pool1", "10.242.0.0/24")
    yield r


def node_links(rig: CNIRig, node: str) -> list[str]:
    return sorted(rig.links(node))


def assert_error(res: Any, code: int, needle: str) -> None:
    assert res.rc == 1, res
    assert set(res.out) >= {"cniVersion", "code", "msg"}, res.out
    assert res.out["code"] == code, res.out
    assert needle in res.out["msg"] + res.out.get("details", ""), res.out
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_the_nodes_own_namespace_is_refused(rig: CNIRig, command: str) -> None:
    node_ns = f"/run/netns/{rig.nodes['node-1']}"  # the namespace the plugin itself runs in
    before = node_links(rig, "node-1")
    conf = rig.conf("node-1", prevResult={"cniVersion": "1.0.0", "ips": []}) if command == "CHECK" else None
    # DEL with CNI_IFNAME=up1 would delete the node's uplink if the namespace were accepted.
    res = rig.invoke("node-1", command, "chost", node_ns, ifname="up1", pod="hostile", conf=conf)
    assert_error(res, 4, "host's own network namespace")
    assert node_links(rig, "node-1") == before and "up1" in before
    assert rig.leftovers() == []
    # The same request for a real pod namespace goes through.
    if command == "ADD":
        ok = rig.invoke("node-1", "ADD", "cpod", rig.pod_ns("ph"), pod="fine")
        assert ok.rc == 0, ok


def test_the_machines_initial_namespace_is_refused(rig: CNIRig) -> None:
    # /proc/1/ns/net is the host's real namespace; the interface name is one that exists nowhere, so even a
    # regression could not harm the machine running the test.
    # Where /proc/1 cannot even be examined (this sandbox: permission denied), the request is refused too.
    res = rig.invoke("node-1", "DEL", "cinit", "/proc/1/ns/net", ifname="l3nt-none0", pod="init")
    assert_error(res, 4, "CNI_NETNS '/proc/1/ns/net'")
    assert any(s in res.out["msg"] for s in ("host's own network namespace", "cannot be checked")), res.out


@pytest.mark.parametrize(("var", "value"), [
    ("CNI_IFNAME", "eth%d"), ("CNI_IFNAME", "eth0 x"), ("CNI_IFNAME", "eth0\n"), ("CNI_IFNAME", "caf\u00e9"),
    ("CNI_CONTAINERID", "abc\n"), ("CNI_CONTAINERID", "abc;x"), ("CNI_CONTAINERID", "x" * 256),
])
def test_bad_ifname_and_container_id_are_refused_and_leave_nothing(rig: CNIRig, var: str, value: str) -> None:
    ns = rig.pod_ns("pb")
    res = rig.invoke("node-1", "ADD", "cvalid", ns, pod="bad", env={var: value})
    assert_error(res, 4, var)
    assert rig.leftovers() == []
    pod_links = subprocess.run(["ip", "-n", ns.rsplit("/", 1)[1], "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
    assert "eth" not in pod_links


def test_gc_never_acts_on_an_attachment_it_cannot_identify(rig: CNIRig) -> None:
    pods = {}
    for name in ("a", "b"):
        res = rig.invoke("node-1", "ADD", f"c{name}", rig.pod_ns(f"g{name}"), pod=f"gc-{name}")
        assert res.rc == 0, res
        pods[name] = res.out["ips"][0]["address"].split("/")[0]
    state = (rig.cali_links("node-1"), rig.our_routes("node-1"), sorted(a.ip for a in rig.ipam.check().allocations))
    assert len(state[0]) == 2

    def gc(attachments: Any, drop: bool = False) -> Any:
        conf = rig.conf("node-1", cniVersion="1.1.0")
        if not drop:
            conf["cni.dev/valid-attachments"] = attachments
        return rig.invoke("node-1", "GC", conf=conf)

    # The finding: attachments without ifname made every pod look stale.
    assert_error(gc([{"containerID": "ca"}, {"containerID": "cb"}]), 7, "ifname")
    assert_error(gc([{"containerID": "ca", "ifname": "eth0"}, {"containerID": "cb", "ifname": "eth 0"}]), 7,
                 "valid-attachments[1].ifname")
    assert_error(gc(None, drop=True), 7, "valid-attachments")
    assert (rig.cali_links("node-1"), rig.our_routes("node-1"),
            sorted(a.ip for a in rig.ipam.check().allocations)) == state
    # A well-formed GC still releases exactly what the runtime no longer lists.
    res = gc([{"containerID": "ca", "ifname": "eth0"}])
    assert res.rc == 0, res
    assert sorted(a.ip for a in rig.ipam.check().allocations) == [pods["a"]]
    assert len(rig.cali_links("node-1")) == 1


def test_gc_skips_an_allocation_whose_attributes_do_not_identify_it(rig: CNIRig) -> None:
    res = rig.invoke("node-1", "ADD", "cz", rig.pod_ns("gz"), pod="gc-z")
    assert res.rc == 0, res
    # An allocation made by something else under this network's handle prefix, with no attachment attributes.
    ipam = rig.ipam
    ipam.assign("10.242.0.200", "k8s-pod-network.orphan", "node-1", {})
    out = rig.invoke("node-1", "GC", conf=rig.conf("node-1", cniVersion="1.1.0",
                                                   **{"cni.dev/valid-attachments": []}))
    assert out.rc == 0, out
    assert sorted(a.ip for a in rig.ipam.check().allocations) == ["10.242.0.200"]  # cz released, orphan kept
    assert "cannot identify" in out.stderr


def test_implicit_labels_win_over_cni_args_and_ipv6_is_off_on_the_host_veth(rig: CNIRig) -> None:
    labels = [{"key": "projectcalico.org/namespace", "value": "kube-system"},
              {"key": "pcns.env", "value": "prod"}, {"key": "projectcalico.org/orchestrator", "value": "x"},
              {"key": "pcsa.role", "value": "admin"},
              {"key": "app", "value": "web"}]
    res = rig.invoke("node-1", "ADD", "clab", rig.pod_ns("pl"), pod="labelled", namespace="evil",
                     conf=rig.conf("node-1", args={"cni": {"labels": labels}}))
    assert res.rc == 0, res
    weps, _ = rig.ds.list(rig.keys.resource_dir("workloadendpoints"))
    assert len(weps) == 1
    stored = json.loads(weps[0].value)["metadata"]["labels"]
    assert stored == {"projectcalico.org/namespace": "evil", "projectcalico.org/orchestrator": "k8s", "app": "web"}
    assert "reserved keys ignored" in res.stderr
    host_if = res.out["interfaces"][0]["name"]
    assert rig.sysctl("node-1", f"net/ipv6/conf/{host_if}/disable_ipv6") == "1"
    addrs = subprocess.run(["ip", "-n", rig.nodes["node-1"], "-6", "addr", "show", "dev", host_if],
                           capture_output=True, text=True, check=True).stdout
    assert "inet6" not in addrs

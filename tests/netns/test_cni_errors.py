"""Bad CNI input: the spec's error object and code on stdout, exit status 1, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.netns.cni_rig import CNIRig, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


@pytest.fixture
def rig(netns_factory, etcd_server, key_layout, datastore, tmp_path) -> Iterator[CNIRig]:
    r = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path)
    r.add_pool("pool1", "10.241.0.0/24")
    yield r


def conf_with(**changes: Any) -> Callable[[CNIRig], dict[str, Any]]:
    def build(rig: CNIRig) -> dict[str, Any]:
        conf = rig.conf("node-1")
        for k, v in changes.items():
            if v is None:
                conf.pop(k, None)
            else:
                conf[k] = v
        return conf
    return build


# (id, expected code, env overrides, conf builder, raw stdin, text expected in msg+details)
CASES: list[tuple[str, int, dict[str, str | None], Any, bytes | None, str]] = [
    ("unsupported-version", 1, {}, conf_with(cniVersion="9.9.9"), None, "9.9.9"),
    ("no-command", 4, {"CNI_COMMAND": None}, None, None, "CNI_COMMAND"),
    ("bad-command", 4, {"CNI_COMMAND": "FROB"}, None, None, "FROB"),
    ("no-containerid", 4, {"CNI_CONTAINERID": None}, None, None, "CNI_CONTAINERID"),
    ("bad-containerid", 4, {"CNI_CONTAINERID": "-x/y"}, None, None, "CNI_CONTAINERID"),
    ("no-netns", 4, {"CNI_NETNS": None}, None, None, "CNI_NETNS"),
    ("bad-ifname", 4, {"CNI_IFNAME": "much-too-long-ifname"}, None, None, "CNI_IFNAME"),
    ("bad-cni-args", 4, {"CNI_ARGS": "K8S_POD_NAME"}, None, None, "CNI_ARGS"),
    ("not-json", 6, {}, None, b"{not json", "decode"),
    ("not-object", 6, {}, None, b"[1, 2]", "object"),
    ("wrong-type", 7, {}, conf_with(type="bridge"), None, "type"),
    ("no-name", 7, {}, conf_with(name=None), None, "name"),
    ("bad-mtu", 7, {}, conf_with(mtu="big"), None, "mtu"),
    ("negative-policy-setup-timeout", 7, {}, conf_with(policy_setup_timeout_seconds=-1), None,
     "policy_setup_timeout_seconds"),
    ("policy-setup-timeout-not-a-number", 7, {}, conf_with(policy_setup_timeout_seconds="10s"), None,
     "policy_setup_timeout_seconds"),
    ("policy-setup-timeout-too-long", 7, {}, conf_with(policy_setup_timeout_seconds=3600), None, "0..60"),
    ("bad-endpoint-scheme", 7, {}, conf_with(etcd_endpoints="ftp://x"), None, "etcd_endpoints"),
    ("bad-ipam-type", 7, {}, conf_with(ipam={"type": "host-local"}), None, "ipam.type"),
    ("bad-static-ip", 7, {}, conf_with(args={"cni": {"ips": ["10.241.0.300"]}}), None, "args.cni.ips[0]"),
    ("bad-label", 7, {}, conf_with(args={"cni": {"labels": [{"key": "a b", "value": "x"}]}}), None, "labels"),
    ("etcd-unreachable", 11, {}, conf_with(etcd_endpoints="unix:///nonexistent/etcd.sock"), None, "datastore"),
    ("static-outside-pools", 100, {}, conf_with(runtimeConfig={"ips": ["192.0.2.7"]}), None, "outside every"),
    # fails after the address is allocated: the namespace path does not exist, veth creation fails
    ("netns-missing-after-allocation", 101, {"CNI_NETNS": "/run/netns/l3net-test-does-not-exist"}, None, None,
     "veth"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_error_object_and_leaves_nothing(rig: CNIRig, case: tuple[Any, ...]) -> None:
    _, code, env, build, stdin, needle = case
    ns = rig.pod_ns("pe")
    res = rig.invoke("node-1", "ADD", "cbad", ns, pod="bad-pod", env=env,
                     conf=build(rig) if build else None, stdin=stdin)
    assert res.rc == 1, res
    assert set(res.out) >= {"cniVersion", "code", "msg"}, res.out
    assert res.out["code"] == code, res.out
    assert needle in res.out["msg"] + res.out.get("details", ""), res.out
    assert "Traceback" not in res.stderr
    assert rig.leftovers() == []
    pod_links = subprocess.run(["ip", "-n", ns.rsplit("/", 1)[1], "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
    assert "eth0" not in pod_links


def test_taken_static_address_refused_without_disturbing_the_owner(rig: CNIRig) -> None:
    first = rig.invoke("node-1", "ADD", "own", rig.pod_ns("po"), pod="owner",
                       conf=rig.conf("node-1", args={"cni": {"ips": ["10.241.0.9"]}}))
    assert first.rc == 0 and first.out["ips"][0]["address"] == "10.241.0.9/32", first
    before = (rig.cali_links("node-1"), rig.our_routes("node-1"))
    res = rig.invoke("node-1", "ADD", "thief", rig.pod_ns("pt"), pod="thief",
                     conf=rig.conf("node-1", runtimeConfig={"ips": ["10.241.0.9"]}))
    assert res.rc == 1 and res.out["code"] == 100 and "already in use" in res.out["details"], res
    assert (rig.cali_links("node-1"), rig.our_routes("node-1")) == before
    assert rig.ipam.handle_ips("k8s-pod-network.thief") == []
    assert rig.ipam.handle_ips("k8s-pod-network.own") == ["10.241.0.9"]


def test_conflicting_host_route_rolls_back_the_allocation(rig: CNIRig) -> None:
    subprocess.run(["ip", "-n", rig.nodes["node-1"], "route", "add", "10.241.0.20/32", "dev", "up1"], check=True)
    res = rig.invoke("node-1", "ADD", "cr", rig.pod_ns("pr"), pod="clash",
                     conf=rig.conf("node-1", args={"cni": {"ips": ["10.241.0.20"]}}))
    assert res.rc == 1 and res.out["code"] == 101 and "already points to interface up1" in res.out["details"], res
    assert rig.leftovers() == []


def test_check_reports_drift(rig: CNIRig) -> None:
    ns = rig.pod_ns("pd")
    add = rig.invoke("node-1", "ADD", "cd", ns, pod="drift")
    assert add.rc == 0, add
    ip = add.out["ips"][0]["address"]
    subprocess.run(["ip", "-n", rig.nodes["node-1"], "route", "del", ip], check=True)
    res = rig.invoke("node-1", "CHECK", "cd", ns, pod="drift", conf=rig.conf("node-1", prevResult=add.out))
    assert res.rc == 1 and res.out["code"] == 102 and f"host route {ip}" in res.out["details"], res
    assert rig.invoke("node-1", "DEL", "cd", ns, pod="drift").rc == 0
    assert rig.leftovers() == []


def test_version_status_and_del_of_unknown_container(rig: CNIRig) -> None:
    res = rig.invoke("node-1", "VERSION", stdin=json.dumps({"cniVersion": "1.0.0"}).encode())
    assert res.rc == 0 and "1.0.0" in res.out["supportedVersions"]
    assert rig.invoke("node-1", "STATUS", conf=rig.conf("node-1", cniVersion="1.1.0")).rc == 0
    down = rig.invoke("node-1", "STATUS", conf=rig.conf("node-1", cniVersion="1.1.0",
                                                         etcd_endpoints="unix:///nonexistent/s"))
    assert down.rc == 1 and down.out["code"] == 50
    assert rig.invoke("node-1", "DEL", "never-added", "", pod="ghost").rc == 0

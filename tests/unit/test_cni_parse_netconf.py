"""l3net.cni.config.parse_netconf, by its public behaviour: conflists a runtime hands over, defaults, and
for every field a refusal (CNI code 7, or 1 for a version we do not speak) whose message names that field.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from l3net.cni.config import SUPPORTED_VERSIONS, NetConf, parse_netconf
from l3net.cni.errors import INCOMPATIBLE_VERSION, INVALID_CONFIG, CNIError
from l3net.constants import DEFAULT_ETCD_PREFIX

pytestmark = pytest.mark.unit

MINIMAL: dict[str, Any] = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "l3net-cni"}

FULL_CONFLIST: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "plugins": [{
        "type": "l3net-cni",
        "etcd_endpoints": "https://10.0.0.1:2379, unix:///run/etcd.sock",
        "etcd_prefix": "/cluster-a/",
        "etcd_ca_cert_file": "/etc/l3net/etcd/ca.crt",
        "etcd_cert_file": "/etc/l3net/etcd/client.crt",
        "etcd_key_file": "/etc/l3net/etcd/client.key",
        "nodename": "node-1",
        "mtu": 1450,
        "log_level": "debug",
        "agentSocket": "/run/l3net/cni.sock",
        "policy_setup_timeout_seconds": 2.5,
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/l3net-kubeconfig"},
        "ipam": {"type": "l3net-ipam", "ipv4_pools": ["default-pool", "10.66.0.0/16"], "assign_ipv4": "false"},
    }, {"type": "portmap", "capabilities": {"portMappings": True}}],
}


def from_conflist(conflist: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """What a runtime hands the plugin at ``index``: its own object plus the list's cniVersion and name."""
    return dict(conflist["plugins"][index], cniVersion=conflist["cniVersion"], name=conflist["name"])


def refusal(doc: dict[str, Any], command: str = "ADD") -> CNIError:
    with pytest.raises(CNIError) as info:
        parse_netconf(doc, command)
    return info.value


def names(msg: str, field: str) -> bool:
    """``msg`` names exactly ``field`` (not merely a longer path that starts with it)."""
    return re.search(rf"(?<![\w.]){re.escape(field)}(?![\w.\[])", msg) is not None


# -- valid configurations ---------------------------------------------------------
def test_minimal_config_takes_every_default() -> None:
    conf = parse_netconf(MINIMAL, "ADD")
    assert conf == NetConf(cni_version="1.0.0", name="k8s-pod-network")
    assert (conf.etcd_endpoints, conf.etcd_prefix, conf.mtu, conf.ipv4_pools, conf.assign_ipv4, conf.static_ips,
            conf.labels, conf.log_level, conf.policy_setup_timeout, conf.kubeconfig, conf.valid_attachments) == \
        (None, DEFAULT_ETCD_PREFIX, 0, (), True, (), {}, "warning", 0.0, None, None)


def test_full_conflist_plugin_is_read_field_by_field() -> None:
    doc = from_conflist(FULL_CONFLIST)
    doc["runtimeConfig"] = {"ips": ["10.66.0.7/24"]}  # assign_ipv4 is false: the pod gets this one
    conf = parse_netconf(doc, "ADD")
    assert conf == NetConf(
        cni_version="1.0.0", name="k8s-pod-network", etcd_endpoints="https://10.0.0.1:2379, unix:///run/etcd.sock",
        etcd_prefix="/cluster-a/", etcd_ca_cert_file="/etc/l3net/etcd/ca.crt",
        etcd_cert_file="/etc/l3net/etcd/client.crt", etcd_key_file="/etc/l3net/etcd/client.key", nodename="node-1",
        mtu=1450, ipv4_pools=("default-pool", "10.66.0.0/16"), assign_ipv4=False, static_ips=("10.66.0.7",),
        log_level="debug", agent_socket="/run/l3net/cni.sock", policy_setup_timeout=2.5,
        kubeconfig="/etc/cni/net.d/l3net-kubeconfig")


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_supported_version_is_accepted(version: str) -> None:
    assert parse_netconf({**MINIMAL, "cniVersion": version}, "ADD").cni_version == version


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), ("true", True), ("TRUE", True),
                                            ("False", False)])
def test_assign_ipv4_takes_booleans_and_their_strings(value: object, expected: bool) -> None:
    doc = {**MINIMAL, "ipam": {"assign_ipv4": value}, "args": {"cni": {"ips": ["10.66.0.9"]}}}
    assert parse_netconf(doc, "ADD").assign_ipv4 is expected


def test_runtime_config_ips_win_over_cni_args_and_lose_their_prefix_length() -> None:
    doc = {**MINIMAL, "args": {"cni": {"ips": ["10.66.0.1"]}}, "runtimeConfig": {"ips": ["10.66.0.2/24"]}}
    assert parse_netconf(doc, "ADD").static_ips == ("10.66.0.2",)
    assert parse_netconf({**MINIMAL, "args": {"cni": {"ips": ["10.66.0.1/32"]}}}, "ADD").static_ips == ("10.66.0.1",)


def test_cni_args_labels_and_sticky_key() -> None:
    doc = {**MINIMAL, "args": {"cni": {"labels": [{"key": "app", "value": "web"}, {"key": "tier", "value": ""}],
                                       "sticky_key": "db-0"}}}
    conf = parse_netconf(doc, "ADD")
    assert conf.labels == {"app": "web", "tier": ""} and conf.sticky_key == "db-0"


def test_check_carries_the_previous_result_and_0_4_0_may_omit_it() -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.66.0.7/32"}]}
    assert parse_netconf({**MINIMAL, "prevResult": prev}, "CHECK").prev_result == prev
    assert parse_netconf({**MINIMAL, "cniVersion": "0.4.0"}, "CHECK").prev_result is None
    # Only CHECK needs it.
    assert parse_netconf(MINIMAL, "DEL").prev_result is None


def test_gc_valid_attachments_are_pairs() -> None:
    doc = {**MINIMAL, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"},
                                                    {"containerID": "c-2.x", "ifname": "net1"}]}
    assert parse_netconf(doc, "GC").valid_attachments == (("c1", "eth0"), ("c-2.x", "net1"))
    assert parse_netconf({**MINIMAL, "cni.dev/valid-attachments": []}, "GC").valid_attachments == ()


# -- refusals, each naming its field --------------------------------------------------
_MISSING = object()


def with_field(path: tuple[str, ...], value: object) -> dict[str, Any]:
    """MINIMAL with ``path`` set to ``value`` (removed for ``_MISSING``); objects on the way are created."""
    doc = copy.deepcopy(MINIMAL)
    where = doc
    for key in path[:-1]:
        where = where.setdefault(key, {})
    if value is _MISSING:
        where.pop(path[-1], None)
    else:
        where[path[-1]] = value
    return doc


INVALID: list[tuple[tuple[str, ...], object, str]] = [
    (("cniVersion",), _MISSING, "cniVersion"),
    (("cniVersion",), 1, "cniVersion"),
    (("name",), _MISSING, "name"),
    (("name",), "", "name"),
    (("name",), 5, "name"),
    (("type",), _MISSING, "type"),
    (("type",), "bridge", "type"),
    (("etcd_endpoints",), 5, "etcd_endpoints"),
    (("etcd_endpoints",), "ftp://10.0.0.1:2379", "etcd_endpoints"),
    (("etcd_endpoints",), "http://10.0.0.1:2379,10.0.0.2:2379", "etcd_endpoints"),
    (("etcd_prefix",), "l3net/", "etcd_prefix"),
    (("etcd_prefix",), "/l3net", "etcd_prefix"),
    (("etcd_prefix",), ["/l3net/"], "etcd_prefix"),
    (("etcd_ca_cert_file",), 1, "etcd_ca_cert_file"),
    (("etcd_cert_file",), 1, "etcd_cert_file"),
    (("etcd_key_file",), 1, "etcd_key_file"),
    (("nodename",), ["n1"], "nodename"),
    (("log_level",), 3, "log_level"),
    (("agentSocket",), 3, "agentSocket"),
    (("mtu",), True, "mtu"),
    (("mtu",), "1500", "mtu"),
    (("mtu",), 67, "mtu"),
    (("mtu",), 65536, "mtu"),
    (("mtu",), -1, "mtu"),
    (("mtu",), 1500.0, "mtu"),
    (("policy_setup_timeout_seconds",), -1, "policy_setup_timeout_seconds"),
    (("policy_setup_timeout_seconds",), 61, "policy_setup_timeout_seconds"),
    (("policy_setup_timeout_seconds",), True, "policy_setup_timeout_seconds"),
    (("policy_setup_timeout_seconds",), "5", "policy_setup_timeout_seconds"),
    (("ipam",), [], "ipam"),
    (("ipam", "type"), "host-local", "ipam.type"),
    (("ipam", "ipv4_pools"), "default-pool", "ipam.ipv4_pools"),
    (("ipam", "ipv4_pools"), [""], "ipam.ipv4_pools"),
    (("ipam", "ipv4_pools"), [1], "ipam.ipv4_pools"),
    (("ipam", "assign_ipv4"), "yes", "ipam.assign_ipv4"),
    (("ipam", "assign_ipv4"), 1, "ipam.assign_ipv4"),
    (("ipam", "assign_ipv4"), False, "ipam.assign_ipv4"),  # and no static address: the pod would get none
    (("args",), [], "args"),
    (("args", "cni"), "x", "args.cni"),
    (("args", "cni", "ips"), "10.66.0.1", "args.cni.ips"),
    (("args", "cni", "ips"), ["nope"], "args.cni.ips[0]"),
    (("args", "cni", "ips"), ["10.66.0.1", "fd00::1"], "args.cni.ips[1]"),
    (("args", "cni", "ips"), [7], "args.cni.ips[0]"),
    (("runtimeConfig",), [], "runtimeConfig"),
    (("runtimeConfig", "ips"), ["10.66.0.300"], "runtimeConfig.ips[0]"),
    (("args", "cni", "labels"), {"app": "web"}, "args.cni.labels"),
    (("args", "cni", "labels"), [{"key": "app"}], "args.cni.labels[0]"),
    (("args", "cni", "labels"), [{"key": "app", "value": "web"}, "tier=db"], "args.cni.labels[1]"),
    (("args", "cni", "sticky_key"), 5, "args.cni.sticky_key"),
    (("kubernetes",), "/etc/cni/net.d/l3net-kubeconfig", "kubernetes"),
    (("kubernetes", "kubeconfig"), 5, "kubernetes.kubeconfig"),
    (("prevResult",), [], "prevResult"),
    (("cni.dev/valid-attachments",), {}, "cni.dev/valid-attachments"),
    (("cni.dev/valid-attachments",), ["c1"], "cni.dev/valid-attachments[0]"),
    (("cni.dev/valid-attachments",), [{"containerID": "bad id", "ifname": "eth0"}],
     "cni.dev/valid-attachments[0].containerID"),
    (("cni.dev/valid-attachments",), [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "a/b"}],
     "cni.dev/valid-attachments[1].ifname"),
]


@pytest.mark.parametrize("path,value,field", INVALID, ids=[f"{'.'.join(p)}={v!r}" for p, v, _ in INVALID])
def test_each_invalid_field_is_refused_naming_it(path: tuple[str, ...], value: object, field: str) -> None:
    err = refusal(with_field(path, value))
    assert err.code == INVALID_CONFIG, err
    assert names(err.msg, field), f"{err.msg!r} does not name {field}"


@pytest.mark.parametrize("version", ["0.3.1", "2.0.0", ""])
def test_a_version_we_do_not_speak_is_incompatible_naming_it(version: str) -> None:
    err = refusal({**MINIMAL, "cniVersion": version})
    assert err.code == INCOMPATIBLE_VERSION and names(err.msg, "cniVersion"), err


def test_check_without_a_previous_result_is_refused_naming_it() -> None:
    err = refusal(MINIMAL, "CHECK")
    assert err.code == INVALID_CONFIG and names(err.msg, "prevResult"), err

"""Issue 13, the workload half: no WorkloadEndpoint hijacks the node, no label escapes its namespace,
workload-to-host traffic follows DefaultEndpointToHostAction, and the CNI edges are refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from felix.calc import Model, compute
from felix.config import (
    CALICO_FAILSAFE_INBOUND,
    ConfigError,
    config_key,
    load,
    parse_endpoint_to_host_action,
    parse_failsafe_ports,
    with_datastore,
)
from felix.desired import InterfaceSpec, RouteSpec
from felix.links import Link
from felix.main import policy_builder
from l3net.cni.config import parse_env, parse_netconf
from l3net.cni.errors import CNIError
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document, workload_endpoint_name
from policy.compiler import compile_policy
from policy.evaluator import Packet, is_allowed
from policy.model import CALICO_NAMESPACE_LABEL, endpoint_labels, namespace_labels
from policy.render import CHAIN_INPUT, CHAIN_WL_TO_HOST, wl_to_host_rules
from tests.builders import Upd, netpol, ns, wep

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/sec/")




def wep_doc(ifname: str, nets: list[str], pod: str = "p1", node: str = "n1") -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
            "metadata": {"name": workload_endpoint_name(node, pod, "eth0"), "namespace": "default"},
            "spec": {"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                     "interfaceName": ifname, "ipNetworks": nets}}


def raw_wep(ifname: str, nets: list[str], pod: str = "p1") -> Upd:
    """A WorkloadEndpoint written straight into etcd: nothing validated it on the way in."""
    doc = wep_doc(ifname, nets, pod)
    return Upd(KEYS.resource("workloadendpoints", doc["metadata"]["name"], "default"), json.dumps(doc).encode())


def pool(name: str, cidr: str, **extra: Any) -> Upd:
    return Upd(KEYS.resource("ippools", name), Resource(kind="IPPool", name=name,
                                                         spec={"cidr": cidr, **extra}).to_json())


def model_of(*updates: Upd) -> Model:
    m = Model(KEYS)
    m.apply(list(updates))
    return m


# -- the WorkloadEndpoint validator ---------------------------------------------------------------
@pytest.mark.parametrize(("ifname", "nets", "path", "needle"), [
    ("eth0", ["10.65.0.2/32"], "spec.interfaceName", "workload interface name"),
    ("cali+", ["10.65.0.2/32"], "spec.interfaceName", "workload interface name"),
    ("cali", ["10.65.0.2/32"], "spec.interfaceName", "workload interface name"),
    ("caliABC", ["10.65.0.2/32"], "spec.interfaceName", "lowercase"),
    ("cali0123456789ab", ["10.65.0.2/32"], "spec.interfaceName", "1..11"),
    ("cali1 -j ACCEPT", ["10.65.0.2/32"], "spec.interfaceName", "workload interface name"),
    ("cali1", ["0.0.0.0/1", "128.0.0.0/1"], "spec.ipNetworks[0]", "not a single address"),
    ("cali1", ["10.65.0.0/26"], "spec.ipNetworks[0]", "/32"),
    ("cali1", ["fd00::/64"], "spec.ipNetworks[0]", "/128"),
    ("cali1", ["10.65.0.2"], "spec.ipNetworks[0]", "not a CIDR"),
    ("cali1", ["fd00::2%eth0/128"], "spec.ipNetworks[0]", "scope ID"),
])
def test_validator_refuses_hijacking_interface_names_and_networks(ifname: str, nets: list[str], path: str,
                                                                  needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        resource_from_document(wep_doc(ifname, nets), "test")
    errors = {e.path: e.reason for e in ei.value.errors}
    assert path in errors and needle in errors[path], errors


@pytest.mark.parametrize("ifname", ["cali1", "calia", "cali0123456789a", "cali" + "f" * 11])
def test_validator_accepts_workload_interface_names(ifname: str) -> None:
    res = resource_from_document(wep_doc(ifname, ["10.65.0.2/32", "fd00::2/128"]), "test")
    assert res.spec["interfaceName"] == ifname


# -- the agent's calculation (a raw etcd write bypasses the validator) ------------------------------
LINKS = {"eth0": Link("eth0", 2, True), "cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True)}


def test_hijacking_endpoint_from_a_raw_etcd_write_is_absent_from_the_dataplane() -> None:
    hijack = raw_wep("eth0", ["0.0.0.0/1", "128.0.0.0/1"])
    wildcard = raw_wep("cali+", ["10.65.0.9/32"], pod="p2")
    m = model_of(pool("p", "10.65.0.0/16"), hijack, wildcard)
    assert set(m.invalid) == {hijack.key, wildcard.key}
    assert "spec.interfaceName" in m.invalid[hijack.key]
    d = compute(m, "n1", LINKS, {})
    assert d.routes == frozenset() and d.interfaces == frozenset() and d.advertisements == frozenset()


def test_endpoint_outside_every_pool_is_skipped_whole_and_counted() -> None:
    m = model_of(pool("p", "10.65.0.0/16"), raw_wep("cali1", ["10.65.0.2/32"]),
                 raw_wep("cali2", ["10.65.0.3/32", "192.168.1.1/32"], pod="p2"))
    d = compute(m, "n1", LINKS, {})
    assert d.routes == {RouteSpec("10.65.0.2/32", "workload", ifname="cali1", ifindex=11)}
    assert d.interfaces == {InterfaceSpec("cali1")}  # no proxy ARP on cali2
    assert {a.prefix for a in d.advertisements} == {"10.65.0.2/32"}  # borrowed (no block): nothing of cali2's
    assert d.rejected_workloads == (raw_wep("cali2", [], pod="p2").key,)
    assert d.local_endpoints == 1
    # The pool grows to cover it: the endpoint comes back.
    m.apply([pool("q", "192.168.0.0/16")])
    d = compute(m, "n1", LINKS, {})
    assert {r.dst for r in d.routes} == {"10.65.0.2/32", "10.65.0.3/32", "192.168.1.1/32"}
    assert d.rejected_workloads == ()


def test_disabled_pool_still_covers_running_workloads() -> None:
    # Disabling a pool stops new allocations (Calico); it must not cut the pods already in it.
    m = model_of(pool("p", "10.65.0.0/16", disabled=True), raw_wep("cali1", ["10.65.0.2/32"]))
    assert {r.dst for r in compute(m, "n1", LINKS, {}).routes} == {"10.65.0.2/32"}


def test_no_pool_at_all_means_no_workload_routes() -> None:
    d = compute(model_of(raw_wep("cali1", ["10.65.0.2/32"])), "n1", LINKS, {})
    assert d.routes == frozenset() and d.rejected_workloads != ()


def test_policy_builder_leaves_out_of_pool_endpoints_out_of_selector_sets() -> None:
    from_db = {"podSelector": {"matchLabels": {"app": "db"}}}
    server = Resource(kind="NetworkPolicy", name="allow-db", namespace="default",
                      spec={"podSelector": {}, "ingress": [{"from": [from_db]}]})
    local = raw_wep("cali1", ["10.65.0.2/32"])
    outsider = wep_doc("cali2", ["8.8.8.8/32"], pod="p2", node="n2")
    outsider["metadata"]["labels"] = {"app": "db"}
    inside = wep_doc("cali3", ["10.65.1.5/32"], pod="p3", node="n2")
    inside["metadata"]["labels"] = {"app": "db"}
    m = model_of(pool("p", "10.65.0.0/16"), local,
                 *(Upd(KEYS.resource("workloadendpoints", d["metadata"]["name"], "default"),
                       json.dumps(d).encode()) for d in (outsider, inside)),
                 Upd(KEYS.resource("networkpolicies", "allow-db", "default"), server.to_json()))
    prog = policy_builder()(m, "n1")
    members = set().union(*(m for _, m in prog.ipsets.values()))
    assert "10.65.1.5" in members and "8.8.8.8" not in members


# -- implicit labels win ------------------------------------------------------------------------------
def test_stored_labels_cannot_override_implicit_or_namespace_labels() -> None:
    spoof = wep("evil-pod", "evil", "n1", "10.65.0.9", labels={
        CALICO_NAMESPACE_LABEL: "prod", "pcns.env": "prod", "pcns.kubernetes.io/metadata.name": "prod",
        "projectcalico.org/orchestrator": "openstack", "app": "db"})
    labels = endpoint_labels(spoof, namespace_labels([ns("evil", {"env": "evil"})]))
    assert labels[CALICO_NAMESPACE_LABEL] == "evil"
    assert labels["pcns.env"] == "evil"
    assert labels["pcns.kubernetes.io/metadata.name"] == "evil"
    assert labels["projectcalico.org/orchestrator"] == "k8s"
    assert labels["app"] == "db"  # its own ordinary labels stay


def test_spoofed_namespace_labels_do_not_join_another_namespaces_selectors() -> None:
    namespaces = [ns("prod", {"env": "prod"}), ns("evil", {"env": "evil"})]
    db = wep("db", "prod", "n1", "10.65.0.2", labels={"app": "db"})
    friend = wep("web", "prod", "n2", "10.65.1.2", labels={"app": "web"})
    spoof = wep("evil-pod", "evil", "n2", "10.65.1.9", labels={
        CALICO_NAMESPACE_LABEL: "prod", "pcns.env": "prod", "app": "web"})
    same_ns = netpol("same-ns", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                         "ingress": [{"from": [{"podSelector": {}}]}]})
    by_ns_label = netpol("by-env", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]})
    weps = [db, friend, spoof]
    prog = compile_policy([db], weps, [same_ns, by_ns_label], namespaces)
    # the sets peers are looked up in: selector sets, or the Kubernetes tier's any-port set made of them
    sel_sets = [m for name, (_, m) in prog.ipsets.items() if name.startswith(("l3ns:", "l3nu:"))]
    assert sel_sets and all("10.65.1.2" in m and "10.65.1.9" not in m for m in sel_sets), prog.ipsets
    for pol in ([same_ns], [by_ns_label]):
        assert is_allowed(pol, namespaces, weps, Packet("10.65.1.2", "10.65.0.2", "TCP", 80))
        assert not is_allowed(pol, namespaces, weps, Packet("10.65.1.9", "10.65.0.2", "TCP", 80))


# -- workload to host ---------------------------------------------------------------------------------
def test_wl_to_host_chain_for_each_action() -> None:
    assert wl_to_host_rules("Drop", []) == ["-j l3n-from-wl-dispatch", "-j DROP"]
    assert wl_to_host_rules("Accept", []) == ["-j l3n-from-wl-dispatch", "-j ACCEPT"]
    assert wl_to_host_rules("Return", []) == ["-j l3n-from-wl-dispatch"]
    assert wl_to_host_rules("Drop", [("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 22)]) == [
        "-j l3n-from-wl-dispatch", "-p tcp -m multiport --dports 22,179 -j ACCEPT",
        "-p udp -m multiport --dports 68 -j ACCEPT", "-j DROP"]
    with pytest.raises(ValueError, match="not one of"):
        wl_to_host_rules("drop; -j ACCEPT", [])
    with pytest.raises(ValueError, match="failsafe port"):
        wl_to_host_rules("Drop", [("tcp", 0)])


def test_compiled_program_hooks_workload_to_host_traffic_to_the_default_drop() -> None:
    w = wep("a", "default", "n1", "10.65.0.2")
    prog = compile_policy([w], [w], [], [ns("default")])
    filt = prog.chains["filter"]
    assert [r.split('" ', 1)[1] for r in filt[CHAIN_INPUT]] == [f"-i cali+ -j {CHAIN_WL_TO_HOST}"]
    assert [r.split('" ', 1)[1] for r in filt[CHAIN_WL_TO_HOST]] == ["-j l3n-from-wl-dispatch", "-j DROP"]
    ret = compile_policy([w], [w], [], [ns("default")], endpoint_to_host_action="Return")
    assert [r.split('" ', 1)[1] for r in ret.chains["filter"][CHAIN_WL_TO_HOST]] == ["-j l3n-from-wl-dispatch"]


# -- agent settings -------------------------------------------------------------------------------------
def test_endpoint_to_host_settings_parse_and_default_to_calicos() -> None:
    cfg = load({}, {})
    assert cfg.default_endpoint_to_host_action == "Drop"
    assert cfg.failsafe_inbound_host_ports == (("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379),
                                               ("tcp", 2380), ("tcp", 5473), ("tcp", 6443), ("tcp", 6666),
                                               ("tcp", 6667))
    assert cfg.workload_to_host_failsafe is False
    assert parse_endpoint_to_host_action("return") == "Return"
    assert parse_failsafe_ports("") == ()
    assert parse_failsafe_ports(CALICO_FAILSAFE_INBOUND) == cfg.failsafe_inbound_host_ports
    for bad in ("tcp:0", "tcp:65536", "gre:1", "tcp", "tcp:22 -j ACCEPT", "tcp:1e3", "tcp:-1"):
        with pytest.raises(ValueError):
            parse_failsafe_ports(bad)
    with pytest.raises(ConfigError, match="default_endpoint_to_host_action"):
        load({}, {"L3NET_DEFAULT_ENDPOINT_TO_HOST_ACTION": "Allow"})


def test_endpoint_to_host_action_from_the_datastore_and_bad_value_ignored() -> None:
    base = load({}, {})
    key = config_key(KEYS, "global", "DefaultEndpointToHostAction")
    assert with_datastore(base, {key: b"Accept"}, KEYS, "n1").default_endpoint_to_host_action == "Accept"
    assert with_datastore(base, {key: b"-j ACCEPT"}, KEYS, "n1").default_endpoint_to_host_action == "Drop"


def test_policy_builder_follows_the_live_settings() -> None:
    m = model_of(pool("p", "10.65.0.0/16"), raw_wep("cali1", ["10.65.0.2/32"]))
    settings = {"cfg": load({}, {})}
    build = policy_builder(None, lambda: settings["cfg"])
    rules = [r.split('" ', 1)[1] for r in build(m, "n1").chains["filter"][CHAIN_WL_TO_HOST]]
    assert rules == ["-j l3n-from-wl-dispatch", "-j DROP"]
    settings["cfg"] = load({}, {"L3NET_WORKLOAD_TO_HOST_FAILSAFE": "true", "L3NET_FAILSAFE_INBOUND_HOST_PORTS":
                               "tcp:22", "L3NET_DEFAULT_ENDPOINT_TO_HOST_ACTION": "Drop"})
    rules = [r.split('" ', 1)[1] for r in build(m, "n1").chains["filter"][CHAIN_WL_TO_HOST]]
    assert rules == ["-j l3n-from-wl-dispatch", "-p tcp -m multiport --dports 22 -j ACCEPT", "-j DROP"]


# -- CNI environment and GC ---------------------------------------------------------------------------
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}


@pytest.mark.parametrize(("var", "value"), [
    ("CNI_CONTAINERID", "abc\n"), ("CNI_CONTAINERID", "abc;rm"), ("CNI_CONTAINERID", "a" * 256),
    ("CNI_CONTAINERID", "_abc"), ("CNI_IFNAME", "eth%d"), ("CNI_IFNAME", "eth 0"), ("CNI_IFNAME", "eth0\n"),
    ("CNI_IFNAME", "caf\u00e9"), ("CNI_IFNAME", "a" * 16), ("CNI_IFNAME", ".."), ("CNI_IFNAME", "a/b"),
    ("CNI_IFNAME", "a:b"), ("CNI_IFNAME", "\x00"),
])
def test_cni_env_refuses_bad_container_ids_and_ifnames(var: str, value: str) -> None:
    with pytest.raises(CNIError) as ei:
        parse_env({**ENV, var: value})
    assert ei.value.code == 4 and var in ei.value.msg


def test_cni_env_accepts_ordinary_values() -> None:
    env = parse_env({**ENV, "CNI_CONTAINERID": "0123abcd_x.y-z", "CNI_IFNAME": "net1"})
    assert (env.container_id, env.ifname) == ("0123abcd_x.y-z", "net1")


GC_CONF = {"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "l3net-cni"}


@pytest.mark.parametrize(("attachments", "path"), [
    ([{"containerID": "c1"}], "cni.dev/valid-attachments[0].ifname"),
    ([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": ""}],
     "cni.dev/valid-attachments[1].ifname"),
    ([{"ifname": "eth0"}], "cni.dev/valid-attachments[0].containerID"),
    ([{"containerID": "c1\n", "ifname": "eth0"}], "cni.dev/valid-attachments[0].containerID"),
    (["c1"], "cni.dev/valid-attachments[0]"),
])
def test_gc_with_an_unidentifiable_attachment_is_refused(attachments: list[Any], path: str) -> None:
    with pytest.raises(CNIError) as ei:
        parse_netconf({**GC_CONF, "cni.dev/valid-attachments": attachments}, "GC")
    assert ei.value.code == 7 and ei.value.msg.startswith(path) and "nothing released" in ei.value.msg


def test_gc_attachments_parse() -> None:
    conf = parse_netconf({**GC_CONF, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}, "GC")
    assert conf.valid_attachments == (("c1", "eth0"),)
    assert copy.deepcopy(conf).valid_attachments == conf.valid_attachments


# -- l3netctl apply (the client's cross-resource checks) ------------------------------------------------
def test_client_refuses_a_workload_address_outside_every_pool() -> None:
    from l3net.datastore.memory import MemoryDatastore
    from l3net.model.client import ResourceClient

    client = ResourceClient(MemoryDatastore(), KEYS)
    doc = wep_doc("cali1", ["10.65.0.2/32", "192.168.1.1/32"])
    with pytest.raises(ValidationError) as ei:
        client.apply([resource_from_document(copy.deepcopy(doc))])
    assert [(e.path, "outside every IPPool" in e.reason) for e in ei.value.errors] == [
        ("spec.ipNetworks[0]", True), ("spec.ipNetworks[1]", True)]
    assert client.list("WorkloadEndpoint") == []  # a refused change leaves the datastore as it was
    pool_doc = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
                "spec": {"cidr": "10.65.0.0/16", "disabled": True}}
    client.apply([resource_from_document(pool_doc)])
    with pytest.raises(ValidationError, match=r"192\.168\.1\.1/32 is outside every IPPool"):
        client.apply([resource_from_document(copy.deepcopy(doc))])
    ok = wep_doc("cali1", ["10.65.0.2/32"])
    assert [r.name for r in client.apply([resource_from_document(ok)])] == [ok["metadata"]["name"]]


def test_agent_compiles_calico_and_kubernetes_network_policies_of_one_name_side_by_side() -> None:
    """From stored keys to chains: each kind under its own plural, both compiled; a Calico document
    stored under the Kubernetes plural does not decode (the key names the kind)."""
    # a named port: a rule in the policy's own chain (numbers would be tier set members)
    k8s = Resource(kind="NetworkPolicy", name="web", namespace="default",
                   spec={"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    calico = Resource(kind="CalicoNetworkPolicy", name="web", namespace="default",
                      spec={"selector": "all()", "ingress": [{"action": "Deny"}]})
    m = model_of(pool("p", "10.65.0.0/16"), raw_wep("cali1", ["10.65.0.2/32"]),
                 Upd(KEYS.resource("networkpolicies", "web", "default"), k8s.to_json()),
                 Upd(KEYS.resource("caliconetworkpolicies", "web", "default"), calico.to_json()),
                 Upd(KEYS.resource("networkpolicies", "misfiled", "default"),
                     calico.to_json().replace(b'"web"', b'"misfiled"')))
    assert {r.kind for r in m.resources.values()} >= {"NetworkPolicy", "CalicoNetworkPolicy"}
    assert KEYS.resource("networkpolicies", "misfiled", "default") in m.invalid
    prog = policy_builder()(m, "n1")
    assert prog.policies == 2 and prog.global_policies == 0
    chains = set(prog.chains["filter"])
    assert "l3n-ci-default/web" in chains and "l3n-pi-default/web" in chains

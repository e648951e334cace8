"""policy.model: the policy engine reads endpoints and policies through the model's typed specs, never a raw
spec."""

from __future__ import annotations

import pytest

from l3net.errors import ValidationError
from l3net.model import Resource
from l3net.model.labels import CALICO_ORCHESTRATOR_LABEL, CALICO_SERVICE_ACCOUNT_LABEL
from l3net.model.validation import resource_from_document
from policy.compiler import compile_policy
from policy.host_endpoints import local_host_endpoints, node_host_endpoints
from policy.model import (
    endpoint_labels,
    gnp_order,
    gnp_types,
    host_endpoint_ips,
    is_host_only,
    network_set_nets,
    policy_types,
    service_account_name,
    workload_ips,
    workload_ports,
)
from tests.builders import ns, wep

pytestmark = pytest.mark.unit


def wep_doc(spec: dict[str, object]) -> Resource:
    return resource_from_document({"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
                                   "metadata": {"name": "n1-k8s-web-eth0", "namespace": "shop"}, "spec": spec})


def test_a_workload_is_read_from_its_typed_spec() -> None:
    res = wep_doc({"node": "n1", "orchestrator": "k8s", "pod": "web", "endpoint": "eth0",
                   "ipNetworks": ["10.244.1.2/32", "fd00::2/128"], "interfaceName": "cali0123456789a",
                   "ports": [{"name": "http", "port": 80}, {"name": "dns", "protocol": "UDP", "port": 53}],
                   "serviceAccountName": "web"})
    assert workload_ips(res) == ["10.244.1.2"]
    assert workload_ips(res, version=6) == ["fd00::2"]
    assert workload_ips(res, version=None) == ["10.244.1.2", "fd00::2"]
    assert workload_ports(res) == [("http", "TCP", 80), ("dns", "UDP", 53)]   # the model's default protocol
    assert service_account_name(res) == "web"
    labels = endpoint_labels(res, {})
    assert labels[CALICO_ORCHESTRATOR_LABEL] == "k8s" and labels[CALICO_SERVICE_ACCOUNT_LABEL] == "web"


def test_absent_fields() -> None:
    res = wep_doc({"node": "n1"})
    assert workload_ips(res) == [] and workload_ports(res) == [] and service_account_name(res) == ""
    assert endpoint_labels(res, {})[CALICO_ORCHESTRATOR_LABEL] == "k8s"


@pytest.mark.parametrize("spec", [{"node": "n1", "ipNetworks": ["10.244.1.0/24"]},
                                  {"node": "n1", "ports": [{"name": "http", "port": "80"}]},
                                  {"node": "n1", "serviceAccountName": 7}])
def test_a_hand_built_endpoint_the_model_refuses_is_not_half_read(spec: dict[str, object]) -> None:
    # Before the typed spec, policy skipped what it could not parse and kept the rest: a second grammar.
    res = Resource("WorkloadEndpoint", "n1-k8s-web-eth0", spec, namespace="shop")
    for read in (workload_ips, workload_ports, service_account_name):
        with pytest.raises(ValidationError):
            read(res)


def test_a_host_endpoint_is_read_from_its_typed_spec() -> None:
    res = resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                                  "metadata": {"name": "n1-eth1"},
                                  "spec": {"node": "n1", "interfaceName": "eth1",
                                           "expectedIPs": ["10.0.0.11", "fd00::11"]}})
    assert host_endpoint_ips(res) == ["10.0.0.11"]   # the policy sets are IPv4
    assert local_host_endpoints([res]) == [res] and node_host_endpoints([res], "n1") == [res]
    assert node_host_endpoints([res], "n2") == []


def test_a_hand_built_host_endpoint_the_model_refuses_is_not_half_read() -> None:
    res = Resource("HostEndpoint", "n1-all", {"node": "n1", "interfaceName": "*", "expectedIPs": ["10.0.0.11"]})
    for read in (host_endpoint_ips, lambda h: local_host_endpoints([h]), lambda h: node_host_endpoints([h], "n1")):
        with pytest.raises(ValidationError):
            read(res)


def test_a_network_set_is_read_from_its_typed_spec() -> None:
    res = resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                                  "metadata": {"name": "s1"}, "spec": {"nets": ["192.0.2.0/24", "2001:db8::/64"]}})
    assert network_set_nets(res) == ["192.0.2.0/24"]   # the policy sets are IPv4
    assert network_set_nets(res, version=None) == ["192.0.2.0/24", "2001:db8::/64"]
    with pytest.raises(ValidationError):
        network_set_nets(Resource("GlobalNetworkSet", "s2", {"nets": ["192.0.2.0/24", "192.0.2.1/24"]}))


def test_the_compiler_takes_a_local_interface_only_from_the_typed_spec() -> None:
    # The compiler writes the interface into -i/-o: a wildcard must never reach iptables from a hand-built endpoint.
    good = wep("a", "a", "n1", "10.0.1.2")
    assert compile_policy([good], [good], [], [ns("a")]).policies == 0
    bad = Resource(good.kind, good.name, {**good.spec, "interfaceName": "cali+"}, namespace=good.namespace)
    with pytest.raises(ValidationError):
        compile_policy([bad], [bad], [], [ns("a")])


def test_a_policy_is_read_from_its_typed_spec() -> None:
    def doc(api: str, kind: str, spec: dict[str, object], namespace: str | None = None) -> Resource:
        meta = {"name": "p", **({"namespace": namespace} if namespace else {})}
        return resource_from_document({"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec})

    np = doc("networking.k8s.io/v1", "NetworkPolicy", {"egress": [{}]}, "shop")
    assert policy_types(np) == ("Ingress", "Egress")   # the API server's default, filled in by the model
    g = doc("projectcalico.org/v3", "GlobalNetworkPolicy", {"order": 10, "types": ["Egress"], "doNotTrack": True,
                                                            "applyOnForward": True})
    assert gnp_types(g) == ("Egress",) and gnp_order(g) == 10.0 and is_host_only(g)
    c = doc("projectcalico.org/v3", "NetworkPolicy", {"ingress": [{"action": "Allow"}]}, "shop")
    assert c.kind == "CalicoNetworkPolicy"
    assert gnp_types(c) == ("Ingress",) and gnp_order(c) == float("inf") and not is_host_only(c)


def test_a_hand_built_policy_the_model_refuses_is_not_half_read() -> None:
    g = Resource("GlobalNetworkPolicy", "g", {"order": 1, "doNotTrack": True})   # doNotTrack needs applyOnForward
    for read in (gnp_types, gnp_order, is_host_only):
        with pytest.raises(ValidationError):
            read(g)
    with pytest.raises(ValidationError):
        policy_types(Resource("NetworkPolicy", "np", {"policyTypes": ["Ingress", "Ingress"]}, namespace="shop"))

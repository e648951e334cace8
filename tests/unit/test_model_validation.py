"""Every validation rule: good documents pass (Calico and Kubernetes manifests verbatim), each bad input
is refused with the document, the field path and the reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.documents import load_documents
from l3net.model.validate.workload import workload_ifname_reason
from l3net.model.validation import (
    host_veth_name,
    parse_duration,
    parse_peer_ip,
    resource_from_document,
    workload_endpoint_name,
)
from tests.unit.validation_cases import (
    BAD,
    CALICO_MANIFESTS,
    K8S_DOCS_POLICY,
    meta,
    node,
    np,
    peer_doc,
    pool,
    port,
    wep,
)

pytestmark = pytest.mark.unit

def test_kubernetes_docs_policies_apply_verbatim() -> None:
    res = load_documents(K8S_DOCS_POLICY, "k8s.yaml")
    assert [r.name for r in res] == ["test-network-policy", "default-deny-ingress", "multi-port-egress",
                                     "allow-all-ingress"]
    assert res[1].namespace == "default"
    assert res[0].spec["ingress"][0]["from"][0]["ipBlock"]["except"] == ["172.17.1.0/24"]


def test_calico_manifests_apply_where_fields_exist() -> None:
    text = CALICO_MANIFESTS.replace("    metadata:\n      annotations:\n        from: frontend\n", "")
    res = load_documents(text, "calico.yaml")
    assert [r.kind for r in res] == ["IPPool", "BGPConfiguration", "BGPPeer", "BGPPeer", "GlobalNetworkPolicy"]
    assert res[0].spec["blockSize"] == 26


def test_calico_service_advertisement_applies_on_the_default_configuration() -> None:
    # Implemented by felix.services (issue 19): accepted where it is read, refused where it would be ignored.
    service_ips = "  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n"
    text = CALICO_MANIFESTS.replace("  asNumber: 63400\n", "  asNumber: 63400\n" + service_ips)
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "calico.yaml")
    assert not [e for e in ei.value.errors if e.path == "spec.serviceClusterIPs"]
    per_node = text.replace("name: default", "name: node.n1").replace("  asNumber: 63400\n", "")
    with pytest.raises(ValidationError) as ei:
        load_documents(per_node, "calico.yaml")
    refused = [e for e in ei.value.errors if e.path == "spec.serviceClusterIPs"]
    assert refused and "only be set in the BGPConfiguration named 'default'" in refused[0].reason
    assert refused[0].document == "calico.yaml#2 BGPConfiguration/node.n1"


def test_calico_rule_metadata_is_refused_not_ignored() -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents(CALICO_MANIFESTS, "calico.yaml")
    assert [e.path for e in ei.value.errors] == ["spec.ingress[0].metadata"]
    assert ei.value.errors[0].document == "calico.yaml#5 GlobalNetworkPolicy/allow-tcp-6379"


def test_defaults_are_filled() -> None:
    pool = resource_from_document({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
                                   "spec": {"cidr": "fd00:1::/48"}})
    assert pool.spec["blockSize"] == 122 and pool.spec["nodeSelector"] == "all()"
    np = resource_from_document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                 "metadata": {"name": "p"}, "spec": {"egress": [{}]}})
    assert np.spec["policyTypes"] == ["Ingress", "Egress"] and np.spec["podSelector"] == {}
    assert np.namespace == "default"


def test_asdot_is_normalised() -> None:
    node = resource_from_document({"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "n1"},
                                   "spec": {"bgp": {"asNumber": "1.10", "ipv4Address": "10.0.0.1/24"}}})
    assert node.spec["bgp"]["asNumber"] == 65546


@pytest.mark.parametrize(("doc", "path", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_path_and_reason(doc: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ValidationError) as ei:
        resource_from_document(copy.deepcopy(doc), "file.yaml#1")
    errors = ei.value.errors
    matching = [e for e in errors if e.path == path]
    assert matching, f"no error at {path}; got {[str(e) for e in errors]}"
    assert any(reason in e.reason for e in matching), [str(e) for e in matching]
    assert all(e.document.startswith("file.yaml#1") for e in errors)


def test_document_name_names_kind_namespace_and_name() -> None:
    with pytest.raises(ValidationError) as ei:
        resource_from_document(port({"port": 0}), "policies.yaml#2")
    assert str(ei.value.errors[0]).startswith(
        "policies.yaml#2 NetworkPolicy/default/allow-web: spec.ingress[0].ports[0].port: ")


def test_all_errors_of_a_document_are_collected() -> None:
    doc = np({"podSelector": {}, "ingress": [{"from": [{}], "ports": [{"port": 0}, {"protocol": "GRE"}]}],
              "policyTypes": ["Sideways"]})
    with pytest.raises(ValidationError) as ei:
        resource_from_document(doc)
    assert {e.path for e in ei.value.errors} == {"spec.ingress[0].from[0]", "spec.ingress[0].ports[0].port",
                                                 "spec.ingress[0].ports[1].protocol", "spec.policyTypes[0]"}


def test_good_edge_values_pass() -> None:
    for spec in ({"port": 1}, {"port": 65535}, {"port": "http"}, {"port": "h2c-1"}, {"port": 80, "endPort": 80},
                 {"protocol": "SCTP"}):
        resource_from_document(port(spec))
    resource_from_document(pool({"cidr": "10.0.0.0/20", "blockSize": 20}))
    resource_from_document(pool({"cidr": "10.0.0.0/16", "blockSize": 32}))
    resource_from_document(node({"asNumber": 4294967295, "ipv4Address": "10.0.0.11/24"}))
    resource_from_document(peer_doc({"peerIP": "[fd00::1]:1179", "asNumber": 1}))
    resource_from_document(meta(labels={"app.kubernetes.io/name": "web", "empty": ""}))
    resource_from_document(wep({"mac": "EE:EE:EE:EE:EE:EE", "ipNetworks": ["10.244.1.2/32"]}))


def test_wep_name_helper_doubles_dashes() -> None:
    assert workload_endpoint_name("node-1", "web-0", "eth0") == "node--1-k8s-web--0-eth0"


def test_host_veth_name_is_calicos() -> None:
    # Calico's names for these pods (cali + 11 hex of sha1("<namespace>.<pod>")), written out: the CNI
    # plugin, bench and the tests all call this one function, so the literal values are its oracle.
    assert host_veth_name("default", "nginx") == "calic440f455693"
    assert host_veth_name("shop", "web-0") == "calia4fc3c48bd8"
    assert workload_ifname_reason(host_veth_name("a" * 63, "b" * 253)) is None


def test_duration_and_peer_ip_parsers() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1m30s") == 90 and parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    for bad in ("", "3", "s", "3x", "-3s", "3 s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_peer_ip("10.0.0.1") == ("10.0.0.1", None)
    assert parse_peer_ip("10.0.0.1:180") == ("10.0.0.1", 180)
    assert parse_peer_ip("[fd00::1]:180") == ("fd00::1", 180)
    assert parse_peer_ip("fd00::1") == ("fd00::1", None)
    for bad in ("10.0.0.1:0", "[10.0.0.1]:80", "[fd00::1", "host:80", "10.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_peer_ip(bad)

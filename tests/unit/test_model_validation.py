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

pytestmark = pytest.mark.unit

# From the Kubernetes documentation (concepts/services-networking/network-policies), verbatim.
K8S_DOCS_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: multi-port-egress
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Egress
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 32000
          endPort: 32768
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
spec:
  podSelector: {}
  ingress:
  - {}
  policyTypes:
  - Ingress
"""

# Calico operator manifests (docs.tigera.io examples) in projectcalico.org/v3.
CALICO_MANIFESTS = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 192.168.0.0/16
  blockSize: 26
  ipipMode: Never
  vxlanMode: Never
  natOutgoing: true
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
  communities:
  - name: bgp-large-community
    value: 63400:300:100
  prefixAdvertisements:
  - cidr: 172.218.4.0/26
    communities:
    - bgp-large-community
    - 63400:120
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.20.30.40
  asNumber: 64567
  nodeSelector: rack == 'rack-1'
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-tcp-6379
spec:
  selector: role == 'database'
  types:
  - Ingress
  - Egress
  ingress:
  - action: Allow
    metadata:
      annotations:
        from: frontend
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports:
      - 6379
  egress:
  - action: Allow
"""


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


# -- bad inputs -------------------------------------------------------------------------
def _np(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "default"}, "spec": spec}


def _peer(peer: dict[str, Any]) -> dict[str, Any]:
    return _np({"podSelector": {}, "ingress": [{"from": [peer]}]})


def _port(port: dict[str, Any]) -> dict[str, Any]:
    return _np({"podSelector": {}, "ingress": [{"ports": [port]}]})


def _sel(expr: dict[str, Any]) -> dict[str, Any]:
    return _np({"podSelector": {"matchExpressions": [expr]}})


def _pool(spec: dict[str, Any], name: str = "pool1") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}


def _peer_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"}, "spec": spec}


def _node(bgp: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "node1"}, "spec": {"bgp": bgp}}


def _bgpconf(spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": name},
            "spec": spec}


def _gnp(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "g"},
            "spec": spec}


def _wep(spec: dict[str, Any], name: str = "node1-k8s-pod1-eth0") -> dict[str, Any]:
    base = {"node": "node1", "orchestrator": "k8s", "pod": "pod1", "endpoint": "eth0"}
    return {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default"}, "spec": {**base, **spec}}


def _meta(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "node1", **meta}}


RULE = "spec.ingress[0].from[0]"
PORT = "spec.ingress[0].ports[0]"
EXPR = "spec.podSelector.matchExpressions[0]"

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, document, field path, reason fragment)
    ("unknown-top-field", {**_pool({"cidr": "10.0.0.0/16"}), "status": {}}, "status", "unknown field"),
    ("unknown-spec-field", _np({"podSelector": {}, "ingres": []}), "spec.ingres", "did you mean 'ingress'"),
    ("unknown-nested-field", _peer({"ipBlock": {"cidr": "10.0.0.0/8", "exept": []}}), f"{RULE}.ipBlock.exept",
     "unknown field"),
    ("unknown-kind", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, "kind", "unknown kind"),
    ("wrong-api", {**_np({}), "apiVersion": "l3net.io/v1"}, "apiVersion", "not served"),
    # Under projectcalico.org/v3 a NetworkPolicy is Calico's: a Kubernetes spec is refused field by field.
    ("k8s-spec-as-calico", {**_np({"podSelector": {}}), "apiVersion": "projectcalico.org/v3"}, "spec.podSelector",
     "unknown field"),
    ("calico-np-bad-sa-selector", {**_np({"serviceAccountSelector": "role =="}), "apiVersion": "projectcalico.org/v3"},
     "spec.serviceAccountSelector", "invalid selector"),
    ("calico-np-bad-rule-sa", {**_np({"egress": [{"action": "Allow", "destination": {
        "serviceAccounts": {"names": ["a"], "selector": "has("}}}]}), "apiVersion": "projectcalico.org/v3"},
     "spec.egress[0].destination.serviceAccounts.selector", "invalid selector"),
    ("missing-metadata", {"apiVersion": "l3net.io/v1", "kind": "Node"}, "metadata", "required"),
    ("cidr-invalid", _peer({"ipBlock": {"cidr": "10.0.0.300/8"}}), f"{RULE}.ipBlock.cidr", "not a valid CIDR"),
    ("cidr-no-prefix", _peer({"ipBlock": {"cidr": "10.0.0.1"}}), f"{RULE}.ipBlock.cidr", "not a CIDR"),
    ("cidr-host-bits", _peer({"ipBlock": {"cidr": "10.0.0.1/8"}}), f"{RULE}.ipBlock.cidr", "host bits set"),
    ("except-outside", _peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
     f"{RULE}.ipBlock.except[0]", "not strictly inside"),
    ("except-equal", _peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
     f"{RULE}.ipBlock.except[0]", "not strictly inside"),
    ("except-family", _peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}),
     f"{RULE}.ipBlock.except[0]", "IPv6 but cidr"),
    ("peer-ipblock-and-selector", _peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}), RULE,
     "cannot be combined"),
    ("peer-empty", _peer({}), RULE, "empty peer"),
    ("selector-bad-operator", _sel({"key": "app", "operator": "Equals", "values": ["a"]}), f"{EXPR}.operator",
     "must be one of In, NotIn"),
    ("selector-in-no-values", _sel({"key": "app", "operator": "In", "values": []}), f"{EXPR}.values",
     "non-empty"),
    ("selector-notin-no-values", _sel({"key": "app", "operator": "NotIn"}), f"{EXPR}.values", "non-empty"),
    ("selector-exists-values", _sel({"key": "app", "operator": "Exists", "values": ["x"]}), f"{EXPR}.values",
     "takes no values"),
    ("selector-bad-key", _sel({"key": "-app", "operator": "Exists"}), f"{EXPR}.key", "label key"),
    ("selector-bad-value", _np({"podSelector": {"matchLabels": {"app": "a b"}}}),
     "spec.podSelector.matchLabels.app", "label value"),
    ("port-zero", _port({"port": 0}), f"{PORT}.port", "out of range 1..65535"),
    ("port-too-big", _port({"port": 65536}), f"{PORT}.port", "out of range"),
    ("endport-small", _port({"port": 100, "endPort": 99}), f"{PORT}.endPort", "smaller than port"),
    ("endport-named", _port({"port": "http", "endPort": 99}), f"{PORT}.endPort", "named port"),
    ("endport-no-port", _port({"endPort": 99}), f"{PORT}.endPort", "numeric port"),
    ("endport-range", _port({"port": 1, "endPort": 70000}), f"{PORT}.endPort", "out of range"),
    ("protocol-icmp", _port({"protocol": "ICMP"}), f"{PORT}.protocol", "TCP, UDP, SCTP"),
    ("protocol-lowercase", _port({"protocol": "tcp"}), f"{PORT}.protocol", "TCP, UDP, SCTP"),
    ("named-port-too-long", _port({"port": "abcdefghijklmnop"}), f"{PORT}.port", "IANA service name"),
    ("named-port-upper", _port({"port": "HTTP"}), f"{PORT}.port", "IANA service name"),
    ("named-port-double-dash", _port({"port": "my--port"}), f"{PORT}.port", "IANA service name"),
    ("named-port-no-letter", _port({"port": "8080"}), f"{PORT}.port", "IANA service name"),
    ("named-port-leading-dash", _port({"port": "-http"}), f"{PORT}.port", "IANA service name"),
    ("policy-types", _np({"policyTypes": ["Ingress", "Both"]}), "spec.policyTypes[1]", "Ingress, Egress"),
    ("policy-types-dup", _np({"policyTypes": ["Ingress", "Ingress"]}), "spec.policyTypes[1]", "duplicate"),
    ("name-uppercase", {**_np({}), "metadata": {"name": "Allow-Web"}}, "metadata.name", "DNS-1123 subdomain"),
    ("name-underscore", _pool({"cidr": "10.0.0.0/16"}, name="my_pool"), "metadata.name", "DNS-1123"),
    ("namespace-name-dot", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
     "metadata.name", "DNS-1123 label"),
    ("namespace-field", {**_np({}), "metadata": {"name": "x", "namespace": "Prod"}}, "metadata.namespace",
     "DNS-1123 label"),
    ("cluster-scoped-namespace", {**_pool({"cidr": "10.0.0.0/16"}), "metadata": {"name": "p", "namespace": "x"}},
     "metadata.namespace", "cluster-scoped"),
    ("label-key-bad", _meta(labels={"a/b/c": "x"}), 'metadata.labels["a/b/c"]', "label key"),
    ("label-key-prefix", _meta(labels={"Example.com/app": "x"}), 'metadata.labels["Example.com/app"]',
     "prefix"),
    ("label-key-long", _meta(labels={"a" * 64: "x"}), f"metadata.labels.{'a' * 64}", "longer than 63"),
    ("label-value-long", _meta(labels={"app": "v" * 64}), "metadata.labels.app", "longer than 63"),
    ("label-value-bool", _meta(labels={"enabled": True}), "metadata.labels.enabled", "must be a string"),
    ("pool-overlaps-link-local", _pool({"cidr": "169.254.0.0/24"}), "spec.cidr", "link-local"),
    ("pool-contains-link-local", _pool({"cidr": "169.0.0.0/8", "blockSize": 26}), "spec.cidr", "link-local"),
    ("pool-v6-link-local", _pool({"cidr": "fe80::/64"}), "spec.cidr", "link-local"),
    ("pool-host-bits", _pool({"cidr": "10.0.0.1/16"}), "spec.cidr", "host bits"),
    ("blocksize-small", _pool({"cidr": "10.0.0.0/8", "blockSize": 19}), "spec.blockSize", "outside 20..32"),
    ("blocksize-big", _pool({"cidr": "10.0.0.0/8", "blockSize": 33}), "spec.blockSize", "outside 20..32"),
    ("blocksize-v6", _pool({"cidr": "fd00::/48", "blockSize": 64}), "spec.blockSize", "outside 116..128"),
    ("blocksize-larger-than-pool", _pool({"cidr": "10.0.0.0/28", "blockSize": 26}), "spec.blockSize",
     "larger than the pool"),
    ("pool-ipip", _pool({"cidr": "10.0.0.0/16", "ipipMode": "Always"}), "spec.ipipMode", "only Never"),
    ("pool-selector", _pool({"cidr": "10.0.0.0/16", "nodeSelector": "rack == "}), "spec.nodeSelector",
     "invalid selector"),
    ("asn-zero", _node({"asNumber": 0}), "spec.bgp.asNumber", "out of range"),
    ("asn-big", _node({"asNumber": 4294967296}), "spec.bgp.asNumber", "out of range"),
    ("asn-string", _node({"asNumber": "64512"}), "spec.bgp.asNumber", "not the string"),
    ("asn-word", _node({"asNumber": "private"}), "spec.bgp.asNumber", "not the string"),
    ("asn-float", _node({"asNumber": 64512.5}), "spec.bgp.asNumber", "must be an integer"),
    ("asn-bool", _node({"asNumber": True}), "spec.bgp.asNumber", "must be an integer"),
    ("node-ipv4", _node({"ipv4Address": "fd00::1/64"}), "spec.bgp.ipv4Address", "not an IPv4"),
    ("node-rr-id", _node({"routeReflectorClusterID": "rr1"}), "spec.bgp.routeReflectorClusterID",
     "not a valid IP"),
    ("peerip-not-ip", _peer_doc({"peerIP": "router.example", "asNumber": 65000}), "spec.peerIP",
     "not an IP address"),
    ("peerip-bad-port", _peer_doc({"peerIP": "10.0.0.1:70000", "asNumber": 65000}), "spec.peerIP",
     "invalid port"),
    ("peer-ip-and-selector", _peer_doc({"peerIP": "10.0.0.1", "peerSelector": "all()", "asNumber": 1}),
     "spec.peerSelector", "cannot both"),
    ("peer-without-asn", _peer_doc({"peerIP": "10.0.0.1"}), "spec.asNumber", "required with peerIP"),
    ("peer-neither", _peer_doc({"node": "n1"}), "spec.peerIP", "set peerIP"),
    ("peer-hold-time", _peer_doc({"peerSelector": "all()", "holdTime": "ninety"}), "spec.holdTime",
     "not a duration"),
    ("peer-hold-number", _peer_doc({"peerSelector": "all()", "holdTime": 90}), "spec.holdTime",
     "duration string"),
    ("peer-hold-too-short", _peer_doc({"peerSelector": "all()", "holdTime": "2s"}), "spec.holdTime",
     "minimum of 3s"),
    ("peer-keepalive-long", _peer_doc({"peerSelector": "all()", "holdTime": "9s", "keepaliveTime": "9s"}),
     "spec.keepaliveTime", "shorter than holdTime"),
    ("peer-source-address", _peer_doc({"peerSelector": "all()", "sourceAddress": "Auto"}),
     "spec.sourceAddress", "UseNodeIP"),
    ("bgpconf-name", _bgpconf({}, name="global"), "metadata.name", "'default' or 'node."),
    ("bgpconf-node-asn", _bgpconf({"asNumber": 65000}, name="node.n1"), "spec.asNumber", "only be set"),
    ("bgpconf-port", _bgpconf({"listenPort": 0}), "spec.listenPort", "out of range"),
    ("bgpconf-severity", _bgpconf({"logSeverityScreen": "Verbose"}), "spec.logSeverityScreen", "Debug"),
    ("bgpconf-restart", _bgpconf({"restartTime": "2 minutes"}), "spec.restartTime", "not a duration"),
    ("bgpconf-community", _bgpconf({"communities": [{"name": "c", "value": "70000:1"}]}),
     "spec.communities[0].value", "not a BGP community"),
    ("bgpconf-adv-community", _bgpconf({"prefixAdvertisements": [{"cidr": "10.0.0.0/24",
                                                                   "communities": ["nope"]}]}),
     "spec.prefixAdvertisements[0].communities[0]", "neither a community"),
    ("bgpconf-service-cidr", _bgpconf({"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}),
     "spec.serviceClusterIPs[0].cidr", "host bits"),
    ("gnp-selector", _gnp({"selector": "role = 'db'"}), "spec.selector", "invalid selector"),
    ("gnp-selector-unterminated", _gnp({"selector": "role == 'db"}), "spec.selector", "unterminated"),
    ("gnp-action", _gnp({"ingress": [{"action": "Accept"}]}), "spec.ingress[0].action", "Allow, Deny"),
    ("gnp-action-missing", _gnp({"ingress": [{"protocol": "TCP"}]}), "spec.ingress[0].action", "required"),
    ("gnp-ports-no-proto", _gnp({"ingress": [{"action": "Allow", "destination": {"ports": [80]}}]}),
     "spec.ingress[0].destination.ports", "need protocol"),
    ("gnp-port-range", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP",
                                          "destination": {"ports": ["90:80"]}}]}),
     "spec.ingress[0].destination.ports[0]", "lo:hi"),
    ("gnp-protocol", _gnp({"ingress": [{"action": "Allow", "protocol": "GRE"}]}), "spec.ingress[0].protocol",
     "must be one of"),
    ("gnp-protocol-number", _gnp({"ingress": [{"action": "Allow", "protocol": 256}]}),
     "spec.ingress[0].protocol", "out of range"),
    ("gnp-icmp-proto", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}]}),
     "spec.ingress[0].icmp", "needs protocol ICMP"),
    ("gnp-nets", _gnp({"egress": [{"action": "Deny", "destination": {"nets": ["10.0.0.1/8"]}}]}),
     "spec.egress[0].destination.nets[0]", "host bits"),
    ("gnp-order-nan", _gnp({"order": float("nan")}), "spec.order", "finite"),
    ("gnp-prednat", _gnp({"preDNAT": True}), "spec.preDNAT", "l3net does not support this field"),
    ("wep-name", _wep({}, name="node1-k8s-pod1"), "metadata.name", "node1-k8s-pod1-eth0"),
    ("wep-mac", _wep({"mac": "ee:ee:ee"}), "spec.mac", "MAC address"),
    ("wep-ifname", _wep({"interfaceName": "cali0123456789abcdef"}), "spec.interfaceName", "interface name"),
    ("wep-ipnetworks", _wep({"ipNetworks": ["10.244.1.2"]}), "spec.ipNetworks[0]", "not a CIDR"),
    ("wep-port-name", _wep({"ports": [{"name": "Web", "port": 80}]}), "spec.ports[0].name",
     "IANA service name"),
    ("wep-no-node", {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint", "metadata": {"name": "w"},
                     "spec": {}}, "spec.node", "required"),
    ("resource-version", _meta(resourceVersion="abc"), "metadata.resourceVersion", "revision number"),
    ("namespace-spec", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"},
                        "spec": {"finalizers": ["kubernetes"]}}, "spec.finalizers", "unknown field"),
    # more digits than Python converts to int (4300): a field error, never a bare ValueError
    ("gnp-port-huge-number", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP",
                                                "destination": {"ports": ["9" * 5000]}}]}),
     "spec.ingress[0].destination.ports[0]", "must be 1..65535"),
    ("peer-ip-huge-port", _peer_doc({"peerIP": "10.0.0.1:" + "1" * 5000, "asNumber": 64512}),
     "spec.peerIP", "invalid port"),
]


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
        resource_from_document(_port({"port": 0}), "policies.yaml#2")
    assert str(ei.value.errors[0]).startswith(
        "policies.yaml#2 NetworkPolicy/default/allow-web: spec.ingress[0].ports[0].port: ")


def test_all_errors_of_a_document_are_collected() -> None:
    doc = _np({"podSelector": {}, "ingress": [{"from": [{}], "ports": [{"port": 0}, {"protocol": "GRE"}]}],
               "policyTypes": ["Sideways"]})
    with pytest.raises(ValidationError) as ei:
        resource_from_document(doc)
    assert {e.path for e in ei.value.errors} == {"spec.ingress[0].from[0]", "spec.ingress[0].ports[0].port",
                                                 "spec.ingress[0].ports[1].protocol", "spec.policyTypes[0]"}


def test_good_edge_values_pass() -> None:
    for port in ({"port": 1}, {"port": 65535}, {"port": "http"}, {"port": "h2c-1"}, {"port": 80, "endPort": 80},
                 {"protocol": "SCTP"}):
        resource_from_document(_port(port))
    resource_from_document(_pool({"cidr": "10.0.0.0/20", "blockSize": 20}))
    resource_from_document(_pool({"cidr": "10.0.0.0/16", "blockSize": 32}))
    resource_from_document(_node({"asNumber": 4294967295, "ipv4Address": "10.0.0.11/24"}))
    resource_from_document(_peer_doc({"peerIP": "[fd00::1]:1179", "asNumber": 1}))
    resource_from_document(_meta(labels={"app.kubernetes.io/name": "web", "empty": ""}))
    resource_from_document(_wep({"mac": "EE:EE:EE:EE:EE:EE", "ipNetworks": ["10.244.1.2/32"]}))


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

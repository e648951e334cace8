"""Validation cases shared by the model's tests: Kubernetes and Calico manifests that must load, and bad
documents, each with the field path and the reason its refusal must name.

``K8S_DOCS_POLICY`` and ``CALICO_MANIFESTS`` are verbatim (the Calico one has a rule ``metadata``
l3net refuses); ``BAD`` lists ``(id, document, field path, reason fragment)``. The document builders
(``np``, ``port``, ``pool``, ...) make one small document around the part a case varies.
"""

from __future__ import annotations

from typing import Any

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


# -- bad inputs -------------------------------------------------------------------------
def np(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "default"}, "spec": spec}


def _peer(peer: dict[str, Any]) -> dict[str, Any]:
    return np({"podSelector": {}, "ingress": [{"from": [peer]}]})


def port(port: dict[str, Any]) -> dict[str, Any]:
    return np({"podSelector": {}, "ingress": [{"ports": [port]}]})


def _sel(expr: dict[str, Any]) -> dict[str, Any]:
    return np({"podSelector": {"matchExpressions": [expr]}})


def pool(spec: dict[str, Any], name: str = "pool1") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}


def peer_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"}, "spec": spec}


def node(bgp: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "node1"}, "spec": {"bgp": bgp}}


def _bgpconf(spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": name},
            "spec": spec}


def _gnp(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "g"},
            "spec": spec}


def _hep(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint", "metadata": {"name": "n1-eth0"},
            "spec": {"node": "n1", "interfaceName": "eth0", **spec}}


def wep(spec: dict[str, Any], name: str = "node1-k8s-pod1-eth0") -> dict[str, Any]:
    base = {"node": "node1", "orchestrator": "k8s", "pod": "pod1", "endpoint": "eth0"}
    return {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default"}, "spec": {**base, **spec}}


def meta(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "node1", **meta}}


RULE = "spec.ingress[0].from[0]"
PORT = "spec.ingress[0].ports[0]"
EXPR = "spec.podSelector.matchExpressions[0]"

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, document, field path, reason fragment)
    ("unknown-top-field", {**pool({"cidr": "10.0.0.0/16"}), "stats": {}}, "stats", "unknown field"),
    ("status-not-an-object", {**pool({"cidr": "10.0.0.0/16"}), "status": "ok"}, "status", "must be an object"),
    ("unknown-spec-field", np({"podSelector": {}, "ingres": []}), "spec.ingres", "did you mean 'ingress'"),
    ("unknown-nested-field", _peer({"ipBlock": {"cidr": "10.0.0.0/8", "exept": []}}), f"{RULE}.ipBlock.exept",
     "unknown field"),
    ("unknown-kind", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, "kind", "unknown kind"),
    ("wrong-api", {**np({}), "apiVersion": "l3net.io/v1"}, "apiVersion", "not served"),
    # Under projectcalico.org/v3 a NetworkPolicy is Calico's: a Kubernetes spec is refused field by field.
    ("k8s-spec-as-calico", {**np({"podSelector": {}}), "apiVersion": "projectcalico.org/v3"}, "spec.podSelector",
     "unknown field"),
    ("calico-np-bad-sa-selector", {**np({"serviceAccountSelector": "role =="}), "apiVersion": "projectcalico.org/v3"},
     "spec.serviceAccountSelector", "invalid selector"),
    ("calico-np-bad-rule-sa", {**np({"egress": [{"action": "Allow", "destination": {
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
    ("selector-bad-value", np({"podSelector": {"matchLabels": {"app": "a b"}}}),
     "spec.podSelector.matchLabels.app", "label value"),
    ("port-zero", port({"port": 0}), f"{PORT}.port", "out of range 1..65535"),
    ("port-too-big", port({"port": 65536}), f"{PORT}.port", "out of range"),
    ("endport-small", port({"port": 100, "endPort": 99}), f"{PORT}.endPort", "smaller than port"),
    ("endport-named", port({"port": "http", "endPort": 99}), f"{PORT}.endPort", "named port"),
    ("endport-no-port", port({"endPort": 99}), f"{PORT}.endPort", "numeric port"),
    ("endport-range", port({"port": 1, "endPort": 70000}), f"{PORT}.endPort", "out of range"),
    ("protocol-icmp", port({"protocol": "ICMP"}), f"{PORT}.protocol", "TCP, UDP, SCTP"),
    ("protocol-lowercase", port({"protocol": "tcp"}), f"{PORT}.protocol", "TCP, UDP, SCTP"),
    ("named-port-too-long", port({"port": "abcdefghijklmnop"}), f"{PORT}.port", "IANA service name"),
    ("named-port-upper", port({"port": "HTTP"}), f"{PORT}.port", "IANA service name"),
    ("named-port-double-dash", port({"port": "my--port"}), f"{PORT}.port", "IANA service name"),
    ("named-port-no-letter", port({"port": "8080"}), f"{PORT}.port", "IANA service name"),
    ("named-port-leading-dash", port({"port": "-http"}), f"{PORT}.port", "IANA service name"),
    ("policy-types", np({"policyTypes": ["Ingress", "Both"]}), "spec.policyTypes[1]", "Ingress, Egress"),
    ("policy-types-dup", np({"policyTypes": ["Ingress", "Ingress"]}), "spec.policyTypes[1]", "duplicate"),
    ("name-uppercase", {**np({}), "metadata": {"name": "Allow-Web"}}, "metadata.name", "DNS-1123 subdomain"),
    ("name-underscore", pool({"cidr": "10.0.0.0/16"}, name="my_pool"), "metadata.name", "DNS-1123"),
    ("namespace-name-dot", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
     "metadata.name", "DNS-1123 label"),
    ("namespace-field", {**np({}), "metadata": {"name": "x", "namespace": "Prod"}}, "metadata.namespace",
     "DNS-1123 label"),
    ("cluster-scoped-namespace", {**pool({"cidr": "10.0.0.0/16"}), "metadata": {"name": "p", "namespace": "x"}},
     "metadata.namespace", "cluster-scoped"),
    ("label-key-bad", meta(labels={"a/b/c": "x"}), 'metadata.labels["a/b/c"]', "label key"),
    ("label-key-prefix", meta(labels={"Example.com/app": "x"}), 'metadata.labels["Example.com/app"]',
     "prefix"),
    ("label-key-long", meta(labels={"a" * 64: "x"}), f"metadata.labels.{'a' * 64}", "longer than 63"),
    ("label-value-long", meta(labels={"app": "v" * 64}), "metadata.labels.app", "longer than 63"),
    ("label-value-bool", meta(labels={"enabled": True}), "metadata.labels.enabled", "must be a string"),
    ("pool-overlaps-link-local", pool({"cidr": "169.254.0.0/24"}), "spec.cidr", "link-local"),
    ("pool-contains-link-local", pool({"cidr": "169.0.0.0/8", "blockSize": 26}), "spec.cidr", "link-local"),
    ("pool-v6-link-local", pool({"cidr": "fe80::/64"}), "spec.cidr", "link-local"),
    ("pool-host-bits", pool({"cidr": "10.0.0.1/16"}), "spec.cidr", "host bits"),
    ("blocksize-small", pool({"cidr": "10.0.0.0/8", "blockSize": 19}), "spec.blockSize", "outside 20..32"),
    ("blocksize-big", pool({"cidr": "10.0.0.0/8", "blockSize": 33}), "spec.blockSize", "outside 20..32"),
    ("blocksize-v6", pool({"cidr": "fd00::/48", "blockSize": 64}), "spec.blockSize", "outside 116..128"),
    ("blocksize-larger-than-pool", pool({"cidr": "10.0.0.0/28", "blockSize": 26}), "spec.blockSize",
     "larger than the pool"),
    ("pool-ipip", pool({"cidr": "10.0.0.0/16", "ipipMode": "Always"}), "spec.ipipMode", "only Never"),
    ("pool-selector", pool({"cidr": "10.0.0.0/16", "nodeSelector": "rack == "}), "spec.nodeSelector",
     "invalid selector"),
    ("asn-zero", node({"asNumber": 0}), "spec.bgp.asNumber", "out of range"),
    ("asn-big", node({"asNumber": 4294967296}), "spec.bgp.asNumber", "out of range"),
    ("asn-string", node({"asNumber": "64512"}), "spec.bgp.asNumber", "not the string"),
    ("asn-word", node({"asNumber": "private"}), "spec.bgp.asNumber", "not the string"),
    ("asn-float", node({"asNumber": 64512.5}), "spec.bgp.asNumber", "must be an integer"),
    ("asn-bool", node({"asNumber": True}), "spec.bgp.asNumber", "must be an integer"),
    ("node-ipv4", node({"ipv4Address": "fd00::1/64"}), "spec.bgp.ipv4Address", "not an IPv4"),
    ("node-rr-id", node({"routeReflectorClusterID": "rr1"}), "spec.bgp.routeReflectorClusterID",
     "not a valid IP"),
    ("peerip-not-ip", peer_doc({"peerIP": "router.example", "asNumber": 65000}), "spec.peerIP",
     "not an IP address"),
    ("peerip-bad-port", peer_doc({"peerIP": "10.0.0.1:70000", "asNumber": 65000}), "spec.peerIP",
     "invalid port"),
    ("peer-ip-and-selector", peer_doc({"peerIP": "10.0.0.1", "peerSelector": "all()", "asNumber": 1}),
     "spec.peerSelector", "cannot both"),
    ("peer-without-asn", peer_doc({"peerIP": "10.0.0.1"}), "spec.asNumber", "required with peerIP"),
    ("peer-neither", peer_doc({"node": "n1"}), "spec.peerIP", "set peerIP"),
    ("peer-hold-time", peer_doc({"peerSelector": "all()", "holdTime": "ninety"}), "spec.holdTime",
     "not a duration"),
    ("peer-hold-number", peer_doc({"peerSelector": "all()", "holdTime": 90}), "spec.holdTime",
     "duration string"),
    ("peer-hold-too-short", peer_doc({"peerSelector": "all()", "holdTime": "2s"}), "spec.holdTime",
     "minimum of 3s"),
    ("peer-keepalive-long", peer_doc({"peerSelector": "all()", "holdTime": "9s", "keepaliveTime": "9s"}),
     "spec.keepaliveTime", "shorter than holdTime"),
    ("peer-source-address", peer_doc({"peerSelector": "all()", "sourceAddress": "Auto"}),
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
    # Arabic-Indic digits: Go's \d (Calico's parse) is ASCII only, so this is no range, and no service name
    ("gnp-port-range-non-ascii", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP",
                                                    "destination": {"ports": ["\u0668\u0660:\u0669\u0660"]}}]}),
     "spec.ingress[0].destination.ports[0]", "IANA service name"),
    ("gnp-protocol", _gnp({"ingress": [{"action": "Allow", "protocol": "GRE"}]}), "spec.ingress[0].protocol",
     "must be one of"),
    ("gnp-protocol-number", _gnp({"ingress": [{"action": "Allow", "protocol": 256}]}),
     "spec.ingress[0].protocol", "out of range"),
    ("gnp-icmp-proto", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}]}),
     "spec.ingress[0].icmp", "needs protocol ICMP"),
    ("gnp-nets", _gnp({"egress": [{"action": "Deny", "destination": {"nets": ["10.0.0.1/8"]}}]}),
     "spec.egress[0].destination.nets[0]", "host bits"),
    ("gnp-order-nan", _gnp({"order": float("nan")}), "spec.order", "finite"),
    ("gnp-order-beyond-a-float", _gnp({"order": 10**400}), "spec.order", "too large"),
    ("gnp-prednat", _gnp({"preDNAT": True}), "spec.applyOnForward", "must be true when preDNAT is true"),
    ("gnp-untracked", _gnp({"doNotTrack": True}), "spec.applyOnForward", "must be true when doNotTrack is true"),
    ("gnp-forward-flag", _gnp({"applyOnForward": "yes"}), "spec.applyOnForward", "must be true or false"),
    ("peer-gtsm-and-multihop", {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "p"},
                                "spec": {"peerIP": "10.0.0.9", "asNumber": 65000, "ttlSecurity": 2,
                                         "ebgpMultihop": 3}},
     "spec.ebgpMultihop", "cannot be set with ttlSecurity"),
    ("hep-all-interfaces", _hep({"interfaceName": "*"}), "spec.interfaceName", "all-interfaces host endpoint"),
    ("hep-workload-iface", _hep({"interfaceName": "cali12345"}), "spec.interfaceName", "a workload's interface"),
    ("hep-wildcard", _hep({"interfaceName": "eth+"}), "spec.interfaceName", "is not an interface name"),
    ("hep-long-iface", _hep({"interfaceName": "e" * 16}), "spec.interfaceName", "is not an interface name"),
    ("hep-no-node", _hep({"node": None}), "spec.node", "required field is missing"),
    ("hep-expected-ip", _hep({"expectedIPs": ["10.0.0.300"]}), "spec.expectedIPs[0]", "not a valid IP address"),
    ("wep-name", wep({}, name="node1-k8s-pod1"), "metadata.name", "node1-k8s-pod1-eth0"),
    ("wep-mac", wep({"mac": "ee:ee:ee"}), "spec.mac", "MAC address"),
    ("wep-ifname", wep({"interfaceName": "cali0123456789abcdef"}), "spec.interfaceName", "interface name"),
    ("wep-ipnetworks", wep({"ipNetworks": ["10.244.1.2"]}), "spec.ipNetworks[0]", "not a CIDR"),
    ("wep-port-name", wep({"ports": [{"name": "Web", "port": 80}]}), "spec.ports[0].name",
     "IANA service name"),
    ("wep-no-node", {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint", "metadata": {"name": "w"},
                     "spec": {}}, "spec.node", "required"),
    ("resource-version", meta(resourceVersion="abc"), "metadata.resourceVersion", "revision number"),
    ("namespace-spec", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"},
                        "spec": {"finalizers": ["kubernetes"]}}, "spec.finalizers", "unknown field"),
    # more digits than Python converts to int (4300): a field error, never a bare ValueError
    ("gnp-port-huge-number", _gnp({"ingress": [{"action": "Allow", "protocol": "TCP",
                                                "destination": {"ports": ["9" * 5000]}}]}),
     "spec.ingress[0].destination.ports[0]", "must be 1..65535"),
    ("peer-ip-huge-port", peer_doc({"peerIP": "10.0.0.1:" + "1" * 5000, "asNumber": 64512}),
     "spec.peerIP", "invalid port"),
]

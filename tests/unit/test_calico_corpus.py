"""A corpus of Calico-style manifests (written for this test, in the shape of Calico's documentation examples):
each applies unchanged, or is refused with a message that names the field or kind l3net does not support."""

from __future__ import annotations

import pytest
import yaml

from l3net.errors import ValidationError
from l3net.model.documents import load_documents

pytestmark = pytest.mark.unit

APPLIES = {
    "default-pool": """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 192.168.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: true,
       nodeSelector: all(), allowedUses: [Workload, Tunnel]}
""",
    "reservation": """\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: my-ipreservation-1}
spec:
  reservedCIDRs: [192.168.2.3, 10.0.2.3/32, "cafe:f00d::/123"]
""",
    "bgp-defaults-spelled-out": """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info, nodeToNodeMeshEnabled: true, asNumber: 63400, serviceClusterIPs: [],
       serviceExternalIPs: [], serviceLoadBalancerIPs: []}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec: {peerIP: 192.20.30.40, asNumber: 64567, nodeSelector: rack == 'rack-1', keepOriginalNextHop: false,
       sourceAddress: UseNodeIP}
""",
    "keep-next-hop-no-source": """\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: ebgp}
spec: {peerIP: 192.20.30.41, asNumber: 64568, keepOriginalNextHop: true, sourceAddress: None}
""",
    "service-advertisement": """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 104.244.42.129/32}, {cidr: 172.217.3.0/24}]
  serviceLoadBalancerIPs: [{cidr: 10.11.0.0/16}]
""",
    "deny-all": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: default-deny}
spec:
  selector: projectcalico.org/namespace not in {'kube-system', 'calico-system'}
  types: [Ingress, Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {selector: k8s-app == 'kube-dns', ports: [53]}
""",
    "network-sets": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: a-name-for-the-set, labels: {role: external-database}}
spec: {nets: [198.51.100.0/28, 203.0.113.0/24, "2001:db8::/64"]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: external-database, namespace: staging, labels: {role: db}}
spec: {nets: [198.51.100.0/28]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-egress-to-external-db}
spec:
  selector: app == 'frontend'
  types: [Egress]
  egress:
  - action: Allow
    destination: {selector: role == 'external-database', namespaceSelector: global()}
""",
    "service-account-rule": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: demo-calico}
spec:
  ingress:
  - action: Allow
    source:
      serviceAccounts: {names: [api-service]}
  selector: all()
""",
    "calico-network-policy": """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-tcp-6379, namespace: production}
spec:
  selector: role == 'database'
  types: [Ingress, Egress]
  ingress:
  - action: Log
    protocol: TCP
    source: {selector: role == 'frontend'}
  - action: Allow
    protocol: TCP
    source: {selector: role == 'frontend'}
    destination: {ports: [6379]}
  - action: Deny
    protocol: TCP
    source: {namespaceSelector: projectcalico.org/name == 'dev', notNets: [10.0.0.0/8]}
    destination: {notPorts: ['8000:8080']}
  egress:
  - action: Pass
    destination: {nets: [192.0.2.0/24]}
  - action: Allow
""",
    "calico-network-policy-default-tier": """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default-tier, namespace: production}
spec: {tier: default, order: 1000, selector: all(), types: [Egress], egress: [{action: Allow}]}
""",
    "calico-network-policy-service-accounts": """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-from-api, namespace: prod-engineering}
spec:
  order: 100
  selector: app == 'db'
  serviceAccountSelector: role == 'database'
  ingress:
  - action: Allow
    source:
      serviceAccounts:
        names: [api-service, user-auth-service]
        selector: app == 'web-frontend'
  - action: Allow
    source: {serviceAccounts: {selector: projectcalico.org/name == 'monitor'}}
  - action: Deny
""",
    "same-name-both-network-policies": """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
""",
    "felix-configuration": """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  logSeverityScreen: Info
  defaultEndpointToHostAction: Drop
  failsafeInboundHostPorts: [{protocol: tcp, port: 22}, {protocol: udp, port: 68}]
  routeRefreshInterval: 90s
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node1}
spec: {logSeverityScreen: Debug}
""",
    "route-reflector-node-and-peering": """\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: rr1, labels: {route-reflector: "true"}}
spec: {bgp: {ipv4Address: 10.0.0.10/24, routeReflectorClusterID: 244.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}
""",
    "bgp-filter": """\
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: my-filter}
spec:
  exportV4:
  - {action: Accept, matchOperator: In, cidr: 77.0.0.0/16}
  - {action: Reject, matchOperator: NotIn, cidr: 88.0.0.0/16}
  importV4:
  - {action: Reject, matchOperator: NotIn, cidr: 44.0.0.0/16}
  exportV6:
  - {action: Reject, matchOperator: NotEqual, cidr: "9000::0/64"}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-filter}
spec: {peerSelector: has(filter-bgp), filters: [my-filter]}
""",
    "peer-timers-and-secret": """\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: bgppeer-global-3040}
spec:
  peerIP: 192.20.30.40
  asNumber: 64567
  keepaliveTime: 10s
  holdTime: 30s
  maxRestartTime: 60s
  password: {secretKeyRef: {name: bgp-secrets, key: rr-password}}
""",
    "calicoctl-exported-pool-and-node": """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool, resourceVersion: "1234", uid: 3d1a1c0e-0000-4000-8000-000000000001,
           creationTimestamp: "2026-11-01T10:00:00Z"}
spec: {cidr: 192.168.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: true,
       nodeSelector: all(), allowedUses: [Workload, Tunnel], assignmentMode: Automatic}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec: {bgp: {ipv4Address: 10.0.0.1/24}, addresses: [], orchRefs: []}
status: {podCIDRs: [10.244.0.0/24]}
""",
    # Calico's host endpoint guide: a node's interface with labels, and a pre-DNAT policy for it.
    "host-endpoint": """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: some.name, labels: {type: production}}
spec: {interfaceName: eth0, node: myhost, expectedIPs: [192.168.0.1]}
""",
    "prednat": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-cluster-internal-ingress}
spec:
  order: 10
  preDNAT: true
  applyOnForward: true
  ingress:
  - action: Allow
    source: {nets: [10.240.0.0/16, 192.168.0.0/16]}
  selector: has(host-endpoint)
""",
    "untracked": """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: memcached-untracked}
spec:
  selector: role == 'memcached'
  doNotTrack: true
  applyOnForward: true
  order: 100
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: role == 'memcached'}, destination: {ports: [12211]}}
  egress:
  - {action: Allow, protocol: TCP, source: {ports: [12211]}, destination: {selector: role == 'memcached'}}
""",
}

REFUSED = {
    "ipip-pool": ("""\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ipip}
spec: {cidr: 10.10.0.0/16, ipipMode: CrossSubnet}
""", "spec.ipipMode: l3net does not support this field"),
    "prednat-without-forward": ("""\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: needs-forward}
spec: {preDNAT: true, selector: has(host-endpoint), ingress: [{action: Deny}]}
""", "spec.applyOnForward: must be true when preDNAT is true"),
    "prednat-egress": ("""\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat-out}
spec: {preDNAT: true, applyOnForward: true, selector: all(), egress: [{action: Deny}]}
""", "spec.egress: a preDNAT policy has ingress rules only"),
    "prednat-and-untracked": ("""\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: both}
spec: {preDNAT: true, doNotTrack: true, applyOnForward: true, selector: all()}
""", "spec.preDNAT: preDNAT and doNotTrack cannot both be true"),
    "host-endpoint-all-interfaces": ("""\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: myhost-all}
spec: {interfaceName: "*", node: myhost}
""", "spec.interfaceName: l3net does not support this field (the all-interfaces host endpoint '*')"),
    "host-endpoint-profiles": ("""\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: myhost-eth0}
spec: {interfaceName: eth0, node: myhost, profiles: [allow-all]}
""", "spec.profiles: l3net does not support this field"),
    "calico-network-policy-other-tier": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: security.block, namespace: production}
spec: {tier: security, selector: all(), ingress: [{action: Pass}]}
""", "spec.tier: l3net does not support this field"),
    "calico-network-policy-host-flag": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-host-flags, namespace: production}
spec: {selector: all(), preDNAT: true}
""", "spec.preDNAT: unknown field"),
    "calico-network-policy-namespace-selector": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: not-global, namespace: production}
spec: {selector: all(), namespaceSelector: team == 'a'}
""", "spec.namespaceSelector: unknown field"),
    "calico-network-policy-service-rule": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: to-service, namespace: production}
spec:
  selector: all()
  egress:
  - action: Allow
    destination: {services: {name: kubernetes, namespace: default}}
""", "spec.egress[0].destination.services: l3net does not support this field"),
    "calico-network-policy-bad-sa-name": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bad-sa, namespace: production}
spec:
  ingress:
  - action: Allow
    source: {serviceAccounts: {names: [API_Service]}}
""", "spec.ingress[0].source.serviceAccounts.names[0]: 'API_Service' is not a valid DNS-1123 subdomain"),
    "calicoctl-exported-node-addresses": ("""\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec:
  addresses: [{address: 10.0.0.1/24, type: CalicoNodeIP}]
  bgp: {ipv4Address: 10.0.0.1/24}
  orchRefs: [{nodeName: node1, orchestrator: k8s}]
""", "spec.addresses: l3net does not support this field (the node's addresses are spec.bgp.ipv4Address"),
    "manual-pool": ("""\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: manual}
spec: {cidr: 10.20.0.0/16, assignmentMode: Manual}
""", "spec.assignmentMode: l3net does not support this field"),
    "felix-reporting-interval": ("""\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {reportingInterval: 30s}
""", "spec.reportingInterval: l3net does not support this field"),
    "calico-network-policy-bad-sa-selector": ("""\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bad-sa-selector, namespace: production}
spec: {serviceAccountSelector: "role = 'api'"}
""", "spec.serviceAccountSelector: invalid selector"),
}


@pytest.mark.parametrize("name", sorted(APPLIES))
def test_applies_unchanged(name: str) -> None:
    assert load_documents(APPLIES[name], f"{name}.yaml")


def test_the_two_network_policy_kinds_stay_apart() -> None:
    k8s, calico = load_documents(APPLIES["same-name-both-network-policies"], "both.yaml")
    assert (k8s.kind, calico.kind) == ("NetworkPolicy", "CalicoNetworkPolicy")
    assert k8s.info.plural != calico.info.plural and k8s.ref != calico.ref
    # Each goes back out as the document it came in as.
    assert calico.to_document()["apiVersion"] == "projectcalico.org/v3"
    assert calico.to_document()["kind"] == k8s.to_document()["kind"] == "NetworkPolicy"
    assert load_documents(yaml.safe_dump(calico.to_document()), "again.yaml") == [calico]


def test_a_network_policy_at_another_api_names_both() -> None:
    text = "apiVersion: l3net.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {}\n"
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "x.yaml")
    assert "use networking.k8s.io/v1 or projectcalico.org/v3" in str(ei.value)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_a_message_naming_what_is_not_supported(name: str) -> None:
    text, message = REFUSED[name]
    with pytest.raises(ValidationError) as ei:
        load_documents(text, f"{name}.yaml")
    assert message in str(ei.value)


def test_a_status_block_is_dropped_as_the_api_server_does() -> None:
    """calicoctl's exports carry the system-written status; applying them keeps the spec only."""
    _, node = load_documents(APPLIES["calicoctl-exported-pool-and-node"], "export.yaml")
    assert node.kind == "Node" and "status" not in node.to_document()
    assert node.spec["bgp"] == {"ipv4Address": "10.0.0.1/24"}

"""l3net.model.rule_spec: the policy kinds' typed rules, each field parsed and normalised once by the model."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.policy_spec import calico_policy_spec, kubernetes_policy_spec
from l3net.model.resource import Resource
from l3net.model.rule_spec import (
    CalicoEntityRule,
    CalicoRule,
    IcmpMatch,
    IPBlock,
    KubernetesPeer,
    KubernetesPort,
    KubernetesRule,
    PortRange,
    ServiceAccountMatch,
)
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

net = ipaddress.ip_network


def k8s_rules(spec: dict[str, Any]) -> tuple[tuple[KubernetesRule, ...], tuple[KubernetesRule, ...]]:
    res = resource_from_document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                  "metadata": {"name": "np", "namespace": "shop"}, "spec": spec})
    typed = kubernetes_policy_spec(res)
    return typed.ingress, typed.egress


def calico_rule(rule: dict[str, Any], kind: str = "GlobalNetworkPolicy") -> CalicoRule:
    meta: dict[str, Any] = {"name": "p", **({"namespace": "shop"} if kind == "NetworkPolicy" else {})}
    res = resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                                  "spec": {"ingress": [rule]}})
    (typed,) = calico_policy_spec(res).ingress
    return typed


# -- Kubernetes NetworkPolicy -------------------------------------------------------------------------------
def test_kubernetes_peers_each_kind_and_direction() -> None:
    pods, nss = {"matchLabels": {"app": "web"}}, {"matchExpressions": [{"key": "env", "operator": "Exists"}]}
    ingress, egress = k8s_rules({
        "ingress": [{"from": [{"podSelector": pods}, {"namespaceSelector": nss},
                              {"podSelector": pods, "namespaceSelector": nss}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/24"]}},
                           {"ipBlock": {"cidr": "2001:db8::/32"}}]}]})
    assert ingress == (KubernetesRule(peers=(KubernetesPeer(pod_selector=pods), KubernetesPeer(namespace_selector=nss),
                                             KubernetesPeer(pod_selector=pods, namespace_selector=nss))),)
    assert egress == (KubernetesRule(peers=(
        KubernetesPeer(ip_block=IPBlock(net("10.0.0.0/8"), (net("10.1.0.0/16"), net("10.2.0.0/24")))),
        KubernetesPeer(ip_block=IPBlock(net("2001:db8::/32"))))),)
    block = egress[0].peers[0].ip_block
    assert block is not None and isinstance(block.cidr, ipaddress.IPv4Network)
    assert all(isinstance(n, ipaddress.IPv4Network) for n in block.excepts)


def test_kubernetes_ports_protocol_defaults_to_tcp_and_port_is_a_number_a_name_or_absent() -> None:
    (rule,), _ = k8s_rules({"ingress": [{"ports": [
        {"port": 80}, {"protocol": "UDP", "port": "dns"}, {"protocol": "SCTP"}, {"port": 8000, "endPort": 8010},
        {"protocol": "TCP", "port": 22, "endPort": 22}]}]})
    assert rule.ports == (KubernetesPort("TCP", 80), KubernetesPort("UDP", "dns"), KubernetesPort("SCTP"),
                          KubernetesPort("TCP", 8000, 8010), KubernetesPort("TCP", 22, 22))
    assert rule.peers == ()


@pytest.mark.parametrize("rule", [{}, {"from": [], "ports": []}, {"from": None, "ports": None}])
def test_kubernetes_absent_or_empty_lists_are_every_peer_and_port(rule: dict[str, Any]) -> None:
    ingress, egress = k8s_rules({"ingress": [rule]})
    assert ingress == (KubernetesRule(),) and egress == ()


def test_kubernetes_egress_reads_to() -> None:
    _, (rule,) = k8s_rules({"egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert rule == KubernetesRule(peers=(KubernetesPeer(pod_selector={}),), ports=(KubernetesPort("UDP", 53),))


# -- Calico rules -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["Allow", "Deny", "Log", "Pass"])
def test_calico_action_and_defaults(action: str) -> None:
    rule = calico_rule({"action": action})
    assert rule == CalicoRule(action=action)
    assert rule.protocol is None and rule.not_protocol is None and rule.icmp is None
    assert rule.source == rule.destination == CalicoEntityRule()


@pytest.mark.parametrize(("written", "typed"), [
    ("TCP", "tcp"), ("tcp", "tcp"), (6, "tcp"), ("udp", "udp"), (17, "udp"), ("SCTP", "sctp"), (132, "sctp"),
    ("UDPLite", "udplite"), ("udplite", "udplite"), (136, "udplite"), ("ICMP", "icmp"), (1, "icmp"),
    ("icmpv6", "icmpv6"), ("ICMPv6", "icmpv6"), (58, "icmpv6"), (47, "47"), (255, "255"),
])
def test_calico_protocol_one_spelling_for_name_and_number(written: Any, typed: str) -> None:
    assert calico_rule({"action": "Allow", "protocol": written}).protocol == typed
    assert calico_rule({"action": "Allow", "notProtocol": written}).not_protocol == typed


@pytest.mark.parametrize(("icmp", "typed"), [
    ({"type": 8}, IcmpMatch(8)), ({"type": 3, "code": 1}, IcmpMatch(3, 1)), ({"type": 0, "code": 0}, IcmpMatch(0, 0)),
    ({}, None),
])
def test_calico_icmp_type_and_code(icmp: dict[str, Any], typed: IcmpMatch | None) -> None:
    assert calico_rule({"action": "Allow", "protocol": "ICMP", "icmp": icmp}).icmp == typed
    assert calico_rule({"action": "Allow", "protocol": 58, "icmp": icmp}).icmp == typed


def test_calico_entity_every_field() -> None:
    side = {"nets": ["10.0.0.0/8", "2001:db8::/32"], "notNets": ["10.9.0.0/16"], "selector": "app == 'web'",
            "notSelector": "has(canary)", "namespaceSelector": "env == 'prod'",
            "serviceAccounts": {"names": ["api", "db"], "selector": "team == 'a'"},
            "ports": [80, "443", "8000:8080", "http"], "notPorts": ["9000:9000", "metrics"], "services": {}}
    rule = calico_rule({"action": "Allow", "protocol": "TCP", "source": side, "destination": {"nets": []}})
    assert rule.source == CalicoEntityRule(
        nets=(net("10.0.0.0/8"), net("2001:db8::/32")), not_nets=(net("10.9.0.0/16"),), selector="app == 'web'",
        not_selector="has(canary)", namespace_selector="env == 'prod'",
        service_accounts=ServiceAccountMatch(("api", "db"), "team == 'a'"),
        ports=(PortRange(80, 80), PortRange(443, 443), PortRange(8000, 8080), "http"),
        not_ports=(PortRange(9000, 9000), "metrics"))
    assert rule.destination == CalicoEntityRule()


@pytest.mark.parametrize(("port", "typed"), [
    (1, PortRange(1, 1)), (65535, PortRange(65535, 65535)), ("22", PortRange(22, 22)),
    ("1:65535", PortRange(1, 65535)), ("080:0090", PortRange(80, 90)), ("web-api", "web-api"),
])
def test_calico_port_number_range_or_name(port: Any, typed: Any) -> None:
    rule = calico_rule({"action": "Allow", "protocol": "UDP", "destination": {"ports": [port], "notPorts": [port]}})
    assert rule.destination.ports == rule.destination.not_ports == (typed,)


@pytest.mark.parametrize(("accounts", "typed"), [
    ({}, None), ({"names": []}, None), ({"names": ["api"]}, ServiceAccountMatch(("api",))),
    ({"selector": "all()"}, ServiceAccountMatch(selector="all()")),
])
def test_calico_service_accounts_that_name_nothing_read_as_absent(accounts: dict[str, Any],
                                                                   typed: ServiceAccountMatch | None) -> None:
    assert calico_rule({"action": "Allow", "source": {"serviceAccounts": accounts}}).source.service_accounts == typed


def test_namespaced_calico_policy_has_the_same_rules() -> None:
    rule = {"action": "Deny", "protocol": "UDP", "destination": {"selector": "all()", "ports": ["53"]}}
    assert calico_rule(rule, "NetworkPolicy") == calico_rule(rule) == CalicoRule(
        action="Deny", protocol="udp", destination=CalicoEntityRule(selector="all()", ports=(PortRange(53, 53),)))


# -- what the model refuses gets no typed rule --------------------------------------------------------------
@pytest.mark.parametrize(("kind", "rule", "path"), [
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}},
     "spec.ingress[0].destination.ports[0]"),
    ("GlobalNetworkPolicy", {"action": "Allow", "destination": {"ports": [80]}}, "spec.ingress[0].destination.ports"),
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": 6, "destination": {"notPorts": [80]}},
     "spec.ingress[0].destination.notPorts"),
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}, "spec.ingress[0].icmp"),
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}},
     "spec.ingress[0].icmp.code"),
    ("GlobalNetworkPolicy", {"action": "Accept"}, "spec.ingress[0].action"),
    ("GlobalNetworkPolicy", {"protocol": "TCP"}, "spec.ingress[0].action"),
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": "GRE"}, "spec.ingress[0].protocol"),
    ("GlobalNetworkPolicy", {"action": "Allow", "source": {"nets": ["10.0.0.1/8"]}}, "spec.ingress[0].source.nets[0]"),
    ("GlobalNetworkPolicy", {"action": "Allow", "ipVersion": 4}, "spec.ingress[0].ipVersion"),
    ("GlobalNetworkPolicy", {"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}},
     "spec.ingress[0].notICMP"),
    ("CalicoNetworkPolicy", {"action": "Allow", "destination": {"services": {"name": "web", "namespace": "x"}}},
     "spec.ingress[0].destination.services"),
    ("NetworkPolicy", {"ports": [{"protocol": "ICMP"}]}, "spec.ingress[0].ports[0].protocol"),
    ("NetworkPolicy", {"ports": [{"protocol": "tcp"}]}, "spec.ingress[0].ports[0].protocol"),
    ("NetworkPolicy", {"ports": [{"endPort": 90}]}, "spec.ingress[0].ports[0].endPort"),
    ("NetworkPolicy", {"ports": [{"port": "http", "endPort": 90}]}, "spec.ingress[0].ports[0].endPort"),
    ("NetworkPolicy", {"ports": [{"port": 90, "endPort": 80}]}, "spec.ingress[0].ports[0].endPort"),
    ("NetworkPolicy", {"from": [{}]}, "spec.ingress[0].from[0]"),
    ("NetworkPolicy", {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}, "spec.ingress[0].from[0]"),
    ("NetworkPolicy", {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("NetworkPolicy", {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
])
def test_a_hand_built_rule_the_model_refuses_gets_no_typed_rule(kind: str, rule: dict[str, Any], path: str) -> None:
    res = Resource(kind=kind, name="p", spec={"ingress": [rule]},
                   namespace=None if kind == "GlobalNetworkPolicy" else "shop")
    read = kubernetes_policy_spec if kind == "NetworkPolicy" else calico_policy_spec
    with pytest.raises(ValidationError) as err:
        read(res)
    assert any(e.path == path for e in err.value.errors), err.value.errors


def test_a_hand_built_rule_the_model_accepts_is_typed() -> None:
    res = Resource(kind="GlobalNetworkPolicy", name="p", spec={"egress": [
        {"action": "Allow", "protocol": "tcp", "destination": {"nets": ["192.0.2.0/24"], "ports": ["8080"]}}]})
    assert calico_policy_spec(res).egress == (CalicoRule(action="Allow", protocol="tcp", destination=CalicoEntityRule(
        nets=(net("192.0.2.0/24"),), ports=(PortRange(8080, 8080),))),)
    np = Resource(kind="NetworkPolicy", name="np", namespace="shop",
                  spec={"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/64"}}], "ports": [{"port": "web"}]}]})
    assert kubernetes_policy_spec(np).ingress == (KubernetesRule(
        peers=(KubernetesPeer(ip_block=IPBlock(net("fd00::/64"))),), ports=(KubernetesPort("TCP", "web"),)),)

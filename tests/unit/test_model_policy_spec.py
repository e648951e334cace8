"""l3net.model.policy_spec: the policy kinds' typed spec, the one reading of their defaults, order and rule lists."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.policy_spec import CalicoPolicySpec, KubernetesPolicySpec, calico_policy_spec, kubernetes_policy_spec
from l3net.model.resource import Resource
from l3net.model.rule_spec import (
    CalicoEntityRule,
    CalicoRule,
    IPBlock,
    KubernetesPeer,
    KubernetesPort,
    KubernetesRule,
    PortRange,
)
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

RULE = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}
# RULE as the model types it (l3net.model.rule_spec; every rule field is tested in test_model_rule_spec)
TYPED_RULE = CalicoRule(action="Allow", protocol="tcp", destination=CalicoEntityRule(ports=(PortRange(80, 80),)))
DENY = CalicoRule(action="Deny")


def k8s(spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                   "metadata": {"name": "np", "namespace": "shop"}, "spec": spec})


def calico(kind: str, spec: dict[str, Any]) -> Resource:
    meta: dict[str, Any] = {"name": "p", **({"namespace": "shop"} if kind == "NetworkPolicy" else {})}
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                                   "spec": spec})


def test_kubernetes_every_field_once() -> None:
    ingress = [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]}]
    egress = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]
    res = k8s({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress", "Ingress"],
               "ingress": ingress, "egress": egress})
    spec = kubernetes_policy_spec(res)
    net = ipaddress.ip_network
    assert spec == KubernetesPolicySpec(
        pod_selector={"matchLabels": {"app": "db"}}, policy_types=("Ingress", "Egress"),
        ingress=(KubernetesRule(peers=(KubernetesPeer(pod_selector={"matchLabels": {"app": "web"}}),),
                                ports=(KubernetesPort("TCP", 80),)),),
        egress=(KubernetesRule(peers=(KubernetesPeer(ip_block=IPBlock(net("10.0.0.0/8"), (net("10.1.0.0/16"),))),)),))
    assert kubernetes_policy_spec(res) is spec


@pytest.mark.parametrize(("spec", "types"), [
    ({}, ("Ingress",)),
    ({"egress": [{}]}, ("Ingress", "Egress")),
    ({"egress": []}, ("Ingress",)),
    ({"policyTypes": [], "egress": [{}]}, ("Ingress", "Egress")),   # empty reads as absent, as the API server
    ({"policyTypes": ["Egress"]}, ("Egress",)),
])
def test_kubernetes_defaults(spec: dict[str, Any], types: tuple[str, ...]) -> None:
    got = kubernetes_policy_spec(k8s(spec))
    assert got.policy_types == types and got.pod_selector == {}


@pytest.mark.parametrize("kind", ["GlobalNetworkPolicy", "NetworkPolicy"])
def test_calico_common_fields_once(kind: str) -> None:
    res = calico(kind, {"order": 100, "selector": "app == 'web'", "serviceAccountSelector": "has(tier)",
                        "types": ["Egress"], "ingress": [RULE], "egress": [RULE, {"action": "Deny"}]})
    spec = calico_policy_spec(res)
    assert spec == CalicoPolicySpec(types=("Egress",), order=100.0, selector="app == 'web'",
                                    service_account_selector="has(tier)", ingress=(TYPED_RULE,),
                                    egress=(TYPED_RULE, DENY))
    assert isinstance(spec.order, float) and calico_policy_spec(res) is spec


def test_global_only_fields() -> None:
    spec = calico_policy_spec(calico("GlobalNetworkPolicy", {
        "order": 2.5, "namespaceSelector": "global()", "preDNAT": True, "applyOnForward": True,
        "ingress": [RULE]}))
    assert spec == CalicoPolicySpec(types=("Ingress",), order=2.5, namespace_selector="global()", pre_dnat=True,
                                    apply_on_forward=True, ingress=(TYPED_RULE,))
    untracked = calico_policy_spec(calico("GlobalNetworkPolicy", {"doNotTrack": True, "applyOnForward": True}))
    assert untracked.do_not_track and not untracked.pre_dnat


@pytest.mark.parametrize(("spec", "types"), [
    ({}, ("Ingress",)), ({"egress": [RULE]}, ("Ingress", "Egress")), ({"types": [], "egress": [RULE]},
                                                                     ("Ingress", "Egress")),
    ({"types": ["Egress", "Ingress"]}, ("Ingress", "Egress")),
])
def test_calico_defaults(spec: dict[str, Any], types: tuple[str, ...]) -> None:
    got = calico_policy_spec(calico("GlobalNetworkPolicy", spec))
    assert got == CalicoPolicySpec(types=types, ingress=got.ingress, egress=got.egress)
    assert got.order is None and got.selector is None


@pytest.mark.parametrize(("kind", "spec", "path"), [
    ("GlobalNetworkPolicy", {"selector": "bad (("}, "spec.selector"),
    ("GlobalNetworkPolicy", {"ingress": [{"action": "Allow", "source": {"notSelector": "bad (("}}]},
     "spec.ingress[0].source.notSelector"),
    ("GlobalNetworkPolicy", {"order": True}, "spec.order"),
    ("GlobalNetworkPolicy", {"preDNAT": True}, "spec.applyOnForward"),
    ("CalicoNetworkPolicy", {"namespaceSelector": "all()"}, "spec.namespaceSelector"),
    ("NetworkPolicy", {"policyTypes": ["Both"]}, "spec.policyTypes[0]"),
    ("NetworkPolicy", {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.1.0/24", "except": ["10.0.9.0/24"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
])
def test_a_hand_built_policy_the_model_refuses_gets_no_typed_spec(kind: str, spec: dict[str, Any],
                                                                  path: str) -> None:
    # the compiler once compiled what it could of such a policy; now the model refuses it, naming the field
    res = Resource(kind=kind, name="p", spec=spec, namespace=None if kind == "GlobalNetworkPolicy" else "shop")
    read = kubernetes_policy_spec if kind == "NetworkPolicy" else calico_policy_spec
    with pytest.raises(ValidationError) as err:
        read(res)
    assert any(e.path == path for e in err.value.errors), err.value.errors


def test_a_hand_built_policy_the_model_accepts() -> None:
    res = Resource(kind="CalicoNetworkPolicy", name="p", namespace="shop", spec={"order": 5, "ingress": [RULE]})
    assert calico_policy_spec(res) == CalicoPolicySpec(types=("Ingress",), order=5.0, ingress=(TYPED_RULE,))


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind GlobalNetworkPolicy or CalicoNetworkPolicy"):
        calico_policy_spec(Resource(kind="NetworkPolicy", name="np", namespace="shop", spec={}))
    with pytest.raises(ValueError, match="not of kind NetworkPolicy"):
        kubernetes_policy_spec(Resource(kind="GlobalNetworkPolicy", name="g", spec={}))

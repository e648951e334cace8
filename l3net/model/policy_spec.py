"""l3net.model.policy_spec: the typed spec of the policy kinds, what a policy applies to, its order and its rules.

The model validates a policy once (:mod:`l3net.model.validate.k8s_policy`,
:mod:`l3net.model.validate.calico_policy`) and fills in the API server's defaults: a Kubernetes
NetworkPolicy's ``podSelector`` (``{}``) and ``policyTypes`` (Ingress, plus Egress when egress rules
exist), a Calico policy's ``types`` (the same default). This module turns that validated spec into a
frozen value: :class:`KubernetesPolicySpec` for a Kubernetes NetworkPolicy, :class:`CalicoPolicySpec` for
a GlobalNetworkPolicy and a namespaced Calico NetworkPolicy (``CalicoNetworkPolicy``). The policy
engine reads these fields only from here; a Resource built by hand is validated first, and refused with
the model's own :class:`~l3net.errors.ValidationError`.

The directions are in the order (Ingress, Egress); an empty list written out reads as absent (the
default), as the API server defaults it. ``order`` is a float, None when absent (the policy sorts after
every ordered one). Selectors stay text as validated (compiled where they are used, fail closed); the
Kubernetes ``podSelector`` is the validated label-selector mapping. The rule lists are tuples of typed
rules, in order (:mod:`l3net.model.rule_spec`: :class:`~l3net.model.rule_spec.KubernetesRule`,
:class:`~l3net.model.rule_spec.CalicoRule`), converted in the same pass: their addresses, ports and
protocols are parsed here once, and the compiler, which owns what a rule means, reads their fields. A
``CalicoNetworkPolicy`` has no ``namespaceSelector`` nor host endpoint flags (the model refuses them
by name), so for it those read None and False.

Cheap to call repeatedly: computed once per Resource object and kept on it (the compiler reads a
policy's fields when the policy is new or changed, from the same Resource objects the agent keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.rule_spec import CalicoRule, KubernetesRule, calico_rule, kubernetes_rule
from l3net.model.typed import typed_once

__all__ = ["CALICO_POLICY_KINDS", "CalicoPolicySpec", "KubernetesPolicySpec", "calico_policy_spec",
           "kubernetes_policy_spec"]

# Calico's two kinds share one spec; a CalicoNetworkPolicy is scoped to its namespace (policy.calico).
CALICO_POLICY_KINDS = ("GlobalNetworkPolicy", "CalicoNetworkPolicy")


@dataclass(frozen=True, slots=True)
class KubernetesPolicySpec:
    """A Kubernetes NetworkPolicy's spec as the model validated it (rule lists ``()`` when absent)."""

    pod_selector: Mapping[str, Any]     # a label selector; {} = every pod of the policy's namespace
    policy_types: tuple[str, ...]       # Ingress and/or Egress, in that order
    ingress: tuple[KubernetesRule, ...] = ()
    egress: tuple[KubernetesRule, ...] = ()


@dataclass(frozen=True, slots=True)
class CalicoPolicySpec:
    """A GlobalNetworkPolicy's or Calico NetworkPolicy's spec as the model validated it; absent is None
    (flags False, rule lists ``()``)."""

    types: tuple[str, ...]              # Ingress and/or Egress, in that order
    order: float | None = None
    selector: str | None = None
    namespace_selector: str | None = None
    service_account_selector: str | None = None
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    ingress: tuple[CalicoRule, ...] = ()
    egress: tuple[CalicoRule, ...] = ()


def kubernetes_policy_spec(res: Resource) -> KubernetesPolicySpec:
    """The typed spec of a Kubernetes NetworkPolicy, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "NetworkPolicy", _kubernetes)


def calico_policy_spec(res: Resource) -> CalicoPolicySpec:
    """The typed spec of a GlobalNetworkPolicy or Calico NetworkPolicy, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, CALICO_POLICY_KINDS, _calico)


def _directions(listed: Any, egress: Any) -> tuple[str, ...]:
    if listed:
        return tuple(d for d in ("Ingress", "Egress") if d in listed)
    return ("Ingress", "Egress") if egress else ("Ingress",)


def _kubernetes(spec: Mapping[str, Any]) -> KubernetesPolicySpec:
    return KubernetesPolicySpec(pod_selector=spec.get("podSelector") or {},
                                policy_types=_directions(spec.get("policyTypes"), spec.get("egress")),
                                ingress=tuple(kubernetes_rule(r, "from") for r in spec.get("ingress") or ()),
                                egress=tuple(kubernetes_rule(r, "to") for r in spec.get("egress") or ()))


def _calico(spec: Mapping[str, Any]) -> CalicoPolicySpec:
    order = spec.get("order")
    return CalicoPolicySpec(
        types=_directions(spec.get("types"), spec.get("egress")), order=None if order is None else float(order),
        selector=spec.get("selector"), namespace_selector=spec.get("namespaceSelector"),
        service_account_selector=spec.get("serviceAccountSelector"), do_not_track=spec.get("doNotTrack") is True,
        pre_dnat=spec.get("preDNAT") is True, apply_on_forward=spec.get("applyOnForward") is True,
        ingress=tuple(calico_rule(r) for r in spec.get("ingress") or ()),
        egress=tuple(calico_rule(r) for r in spec.get("egress") or ()))

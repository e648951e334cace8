"""policy.calico: what a Calico policy's selectors mean, as selector trees over endpoint and network set labels.

Owns the scoping rules the compiler turns into ipsets and applies-to sets, for both Calico kinds:
a GlobalNetworkPolicy (cluster-wide) and a namespaced ``projectcalico.org/v3`` NetworkPolicy
(``CalicoNetworkPolicy`` inside l3net), as Calico converts them:

* the policy applies to ``selector`` AND ``serviceAccountSelector`` (over the pod's ServiceAccount's
  labels, ``pcsa.``-prefixed on the endpoint) AND, for a GlobalNetworkPolicy, its
  ``namespaceSelector``; for a NetworkPolicy, AND ``projectcalico.org/namespace == <its namespace>``;
* a rule side's positive selector is ``selector`` AND ``namespaceSelector`` AND the ``serviceAccounts``
  match; in a NetworkPolicy, a side with any of selector, notSelector, namespaceSelector or
  serviceAccounts but no namespaceSelector is scoped to the policy's namespace (so ``notSelector``
  alone there means "the policy's namespace, except").

A policy's own selectors come from the model's typed spec (:mod:`l3net.model.policy_spec`), a rule
side's from its typed rule (:mod:`l3net.model.rule_spec`). Pure; never raises on content: an
unparsable selector matches nothing (STYLE habit 7). The reference evaluator (:mod:`policy.evaluator`)
states the same rules in its own plain code, over the raw documents.
"""

from __future__ import annotations

import logging

from l3net.model import Resource
from l3net.model.calico_selector import Has, LabelOp, Not
from l3net.model.labels import SERVICE_ACCOUNT_LABEL_PREFIX
from l3net.model.policy_spec import calico_policy_spec
from l3net.model.rule_spec import CalicoEntityRule, ServiceAccountMatch
from l3net.model.selectors import Selector, all_of, parse_calico, with_key_prefix
from policy.model import (
    CALICO_NAMESPACE_LABEL,
    CALICO_ORCHESTRATOR_LABEL,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_NAME_LABEL,
)

_log = logging.getLogger(__name__)

__all__ = ["NON_NAMESPACED", "PODS_ONLY", "entity_selector", "namespace_scope", "policy_applies",
           "policy_namespace", "service_accounts_selector"]

# Every workload endpoint carries the orchestrator label (policy.model.endpoint_labels); no network set does.
PODS_ONLY: Selector = Has(CALICO_ORCHESTRATOR_LABEL)
# Calico's namespaceSelector ``global()``: the non-namespaced things (GlobalNetworkSets and HostEndpoints).
NON_NAMESPACED: Selector = Not(Has(CALICO_NAMESPACE_LABEL))


def policy_namespace(pol: Resource) -> str | None:
    """The namespace a Calico policy is scoped to: its own for a NetworkPolicy, None for a global one."""
    return pol.namespace or "" if pol.kind == "CalicoNetworkPolicy" else None


def namespace_scope(ns_text: str) -> Selector:
    """A Calico namespaceSelector as a selector over endpoint and network set labels."""
    return with_key_prefix(parse_calico(ns_text, where="namespaceSelector"), NAMESPACE_LABEL_PREFIX,
                           global_to=NON_NAMESPACED)


def _in_namespace(ns: str) -> Selector:
    return LabelOp(CALICO_NAMESPACE_LABEL, "==", (ns,))


def _account_labels(sel_text: str, where: str) -> Selector:
    """A selector over a ServiceAccount's labels as one over its pods' endpoint labels (``pcsa.<key>``)."""
    return with_key_prefix(parse_calico(sel_text, where=where), SERVICE_ACCOUNT_LABEL_PREFIX)


def service_accounts_selector(match: ServiceAccountMatch | None) -> Selector | None:
    """A rule side's ``serviceAccounts`` (names and/or a selector, ANDed) as an endpoint selector; None if absent
    (the model reads one that names nothing as absent).

    Pods only: a network set has no ServiceAccount, whatever labels it carries.
    """
    if match is None:
        return None
    names, sel_text = match.names, match.selector
    return all_of(PODS_ONLY,
                  LabelOp(SERVICE_ACCOUNT_NAME_LABEL, "in", tuple(sorted(set(names)))) if names else None,
                  _account_labels(sel_text, "serviceAccounts.selector") if sel_text is not None else None)


def policy_applies(pol: Resource) -> Selector:
    """The endpoints a GlobalNetworkPolicy or Calico NetworkPolicy applies to."""
    spec = calico_policy_spec(pol)
    sel_text, sa_text = spec.selector, spec.service_account_selector
    ns = policy_namespace(pol)
    if ns is not None:
        scope: Selector | None = _in_namespace(ns)
    else:
        ns_text = spec.namespace_selector
        scope = namespace_scope(ns_text) if ns_text is not None else None
    return all_of(parse_calico(sel_text, where="selector") if sel_text is not None else None,
                  scope,
                  _account_labels(sa_text, "serviceAccountSelector") if sa_text is not None else None)


def entity_selector(entity: CalicoEntityRule, pol_ns: str | None) -> Selector | None:
    """The positive selector of one rule side (``source``/``destination``); None when it sets none.

    ``pol_ns``: the namespace of a Calico NetworkPolicy (None for a GlobalNetworkPolicy).
    """
    sel_text, ns_text = entity.selector, entity.namespace_selector
    accounts = service_accounts_selector(entity.service_accounts)
    scoped = sel_text is not None or ns_text is not None or accounts is not None \
        or entity.not_selector is not None
    if ns_text is not None:
        scope: Selector | None = namespace_scope(ns_text)
    elif pol_ns is not None and scoped:
        scope = _in_namespace(pol_ns)
    else:
        scope = None
    if sel_text is None and scope is None and accounts is None:
        return None
    return all_of(parse_calico(sel_text, where="selector") if sel_text is not None else None, scope, accounts)

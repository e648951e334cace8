"""policy.model: the small read-only views of resources that the evaluator and the compiler share.

Only plumbing lives here (a workload's addresses, a namespace's labels, which
policies are in force); the NetworkPolicy *semantics* are written out separately
in :mod:`policy.evaluator` (the oracle) and :mod:`policy.compiler`, so that a
mistake in one is caught by the other. Endpoint, network set and policy fields are
read from the model's typed specs (:mod:`l3net.model.workload_spec`,
:mod:`l3net.model.hostendpoint_spec`, :mod:`l3net.model.networkset_spec`,
:mod:`l3net.model.policy_spec`), never parsed here: a Resource built by hand is
validated by the model first and refused with its ValidationError. The oracles
(:mod:`policy.evaluator`, :mod:`policy.host_evaluator`) read a policy's raw document
instead, with their own plain code for its defaults and order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from l3net.model import Resource
from l3net.model.hostendpoint_spec import hostendpoint_spec

# The implicit labels live in the model (core code needs them too); the policy engine's names for them:
from l3net.model.labels import CALICO_NAMESPACE_LABEL as CALICO_NAMESPACE_LABEL
from l3net.model.labels import CALICO_ORCHESTRATOR_LABEL as CALICO_ORCHESTRATOR_LABEL
from l3net.model.labels import CALICO_SERVICE_ACCOUNT_LABEL as CALICO_SERVICE_ACCOUNT_LABEL
from l3net.model.labels import NAMESPACE_LABEL_PREFIX as NAMESPACE_LABEL_PREFIX
from l3net.model.labels import RESERVED_LABEL_PREFIXES as RESERVED_LABEL_PREFIXES
from l3net.model.labels import SERVICE_ACCOUNT_LABEL_PREFIX as SERVICE_ACCOUNT_LABEL_PREFIX
from l3net.model.labels import is_reserved_label as is_reserved_label
from l3net.model.networkset_spec import NETWORK_SET_KINDS as NETWORK_SET_KINDS
from l3net.model.networkset_spec import networkset_spec
from l3net.model.policy_spec import CALICO_POLICY_KINDS as CALICO_POLICY_KINDS
from l3net.model.policy_spec import calico_policy_spec, kubernetes_policy_spec
from l3net.model.workload_spec import workload_spec

_log = logging.getLogger(__name__)

# Kubernetes sets this label on every namespace (since 1.21); namespaceSelectors rely on it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Calico's automatic label on a ServiceAccount: its name (so serviceAccountSelector can select by name).
ACCOUNT_NAME_LABEL = "projectcalico.org/name"
# ... as a pod's endpoint carries it, with the account's other labels, under ``pcsa.``.
SERVICE_ACCOUNT_NAME_LABEL = f"{SERVICE_ACCOUNT_LABEL_PREFIX}{ACCOUNT_NAME_LABEL}"

# The policy kinds: Kubernetes' NetworkPolicy, and Calico's two, which share one tier ordered by ``order``.
POLICY_KINDS = ("NetworkPolicy", *CALICO_POLICY_KINDS)


def namespace_labels(namespaces: Iterable[Resource]) -> dict[str, dict[str, str]]:
    """Namespace name -> its labels, with Kubernetes' automatic name label added."""
    out: dict[str, dict[str, str]] = {}
    for ns in namespaces:
        if ns.kind != "Namespace":
            continue
        out[ns.name] = {**ns.labels, NAMESPACE_NAME_LABEL: ns.name}
    return out


def labels_of_namespace(ns_labels: Mapping[str, Mapping[str, str]], name: str) -> Mapping[str, str]:
    """Labels of ``name``; a namespace without a Namespace resource still carries its name label."""
    return ns_labels.get(name) or {NAMESPACE_NAME_LABEL: name}


def workload_ips(wep: Resource, version: int | None = 4) -> list[str]:
    """The addresses (no prefix length) of ``spec.ipNetworks``: the model holds them to host networks."""
    return [str(net.network_address) for net in workload_spec(wep).ip_networks
            if version is None or net.version == version]


def workload_ports(wep: Resource) -> list[tuple[str, str, int]]:
    """``spec.ports`` as (name, PROTOCOL, port), as the model validated them (protocol TCP when absent)."""
    return [(p.name, p.protocol, p.port) for p in workload_spec(wep).ports]


def policy_types(pol: Resource) -> tuple[str, ...]:
    """The directions a Kubernetes NetworkPolicy isolates (``policyTypes``, or the API server's default)."""
    return kubernetes_policy_spec(pol).policy_types


def own_labels(wep: Resource) -> dict[str, str]:
    """The endpoint's own labels without the reserved keys (those only l3net sets)."""
    return {k: v for k, v in wep.labels.items() if not is_reserved_label(k)}


def endpoint_labels(wep: Resource, ns_labels: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The labels a Calico selector sees on an endpoint: its own, Calico's implicit ones, and its
    namespace's labels under ``pcns.``.

    The implicit ones win: the endpoint's own labels with a reserved key (``pcns.*``,
    ``projectcalico.org/*``) are ignored, whatever the stored WorkloadEndpoint says.
    """
    ns = wep.namespace or ""
    out = own_labels(wep)
    out.update((f"{NAMESPACE_LABEL_PREFIX}{k}", v) for k, v in labels_of_namespace(ns_labels, ns).items())
    out[CALICO_NAMESPACE_LABEL] = ns
    out[CALICO_ORCHESTRATOR_LABEL] = workload_spec(wep).orchestrator or "k8s"
    # The ServiceAccount's name comes from the spec, never from a label the endpoint carries.
    out.pop(SERVICE_ACCOUNT_NAME_LABEL, None)
    account = service_account_name(wep)
    if account:
        out[CALICO_SERVICE_ACCOUNT_LABEL] = account
        out[SERVICE_ACCOUNT_NAME_LABEL] = account
    return out


def service_account_name(wep: Resource) -> str:
    """``spec.serviceAccountName`` of a WorkloadEndpoint ("" when it has none)."""
    return workload_spec(wep).service_account_name or ""


def service_account_labels(wep: Resource) -> dict[str, str]:
    """The labels of the endpoint's ServiceAccount as Calico sees them: those the kube-controller copied
    onto the endpoint as ``pcsa.<key>``, plus ``projectcalico.org/name`` (the account's name)."""
    out = {k[len(SERVICE_ACCOUNT_LABEL_PREFIX):]: v for k, v in own_labels(wep).items()
           if k.startswith(SERVICE_ACCOUNT_LABEL_PREFIX)}
    out.pop(ACCOUNT_NAME_LABEL, None)
    if service_account_name(wep):
        out[ACCOUNT_NAME_LABEL] = service_account_name(wep)
    return out


def gnp_types(pol: Resource) -> tuple[str, ...]:
    """The directions a Calico policy applies to (``types``, or Calico's default)."""
    return calico_policy_spec(pol).types


def calico_policy_name(pol: Resource) -> str:
    """The name Felix sorts Calico policies of equal order by: ``<namespace>/<name>`` for a NetworkPolicy."""
    return f"{pol.namespace or ''}/{pol.name}" if pol.kind == "CalicoNetworkPolicy" else pol.name


def gnp_order(pol: Resource) -> float:
    """Calico's order of a Calico policy: lower first; a policy without ``order`` comes after every ordered one."""
    order = calico_policy_spec(pol).order
    return float("inf") if order is None else order


def network_set_nets(netset: Resource, version: int | None = 4) -> list[str]:
    """The CIDRs in ``spec.nets`` of a (Global)NetworkSet; IPv4 only by default (the policy dataplane is)."""
    return [str(net) for net in networkset_spec(netset).nets if version is None or net.version == version]


def network_set_labels(netset: Resource, ns_labels: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The labels a Calico selector sees on a network set.

    A GlobalNetworkSet has its own labels only (no ``projectcalico.org/namespace``: that absence is
    what ``namespaceSelector: global()`` selects). A namespaced NetworkSet also carries its
    namespace, as ``projectcalico.org/namespace`` and its namespace's labels under ``pcns.``, like an
    endpoint, but no ``projectcalico.org/orchestrator``: Kubernetes NetworkPolicy peers, which
    select pods, require that label and so never select a network set (as in Calico).
    """
    out = own_labels(netset)
    if netset.kind == "NetworkSet":
        ns = netset.namespace or ""
        out.update((f"{NAMESPACE_LABEL_PREFIX}{k}", v) for k, v in labels_of_namespace(ns_labels, ns).items())
        out[CALICO_NAMESPACE_LABEL] = ns
    return out


HOST_ENDPOINT_KIND = "HostEndpoint"


def is_host_only(pol: Resource) -> bool:
    """An untracked (doNotTrack) or pre-DNAT policy: Calico applies it to host endpoints only."""
    if pol.kind != "GlobalNetworkPolicy":
        return False
    spec = calico_policy_spec(pol)
    return spec.do_not_track or spec.pre_dnat


def host_endpoint_ips(hep: Resource) -> list[str]:
    """The IPv4 addresses in a HostEndpoint's ``expectedIPs`` (selector-set members, as in Calico)."""
    return [str(addr) for addr in hostendpoint_spec(hep).expected_ips if addr.version == 4]

"""l3net.model.resource: the resource document and the table of kinds.

A resource is ``{apiVersion, kind, metadata, spec}``. Kinds l3net shares with
Calico are also accepted under ``projectcalico.org/v3``; Kubernetes
NetworkPolicy is accepted verbatim under ``networking.k8s.io/v1`` and Namespace
under ``v1``. Stored documents use the canonical apiVersion of their kind.

Two kinds share the document kind ``NetworkPolicy``: Kubernetes' (``networking.k8s.io/v1``) and
Calico's namespaced one (``projectcalico.org/v3``). The apiVersion decides which
(:func:`document_kind_info`); inside l3net Calico's is the kind ``CalicoNetworkPolicy`` (plural
``caliconetworkpolicies``, as the Calico API server's alias), so its datastore key, its ``ref`` and
its quarantine entry never collide with a Kubernetes policy of the same namespace and name.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

L3NET_API = "l3net.io/v1"
CALICO_API = "projectcalico.org/v3"
K8S_NETPOL_API = "networking.k8s.io/v1"
K8S_CORE_API = "v1"


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    namespaced: bool
    canonical_api: str
    accepted_apis: frozenset[str]
    short_names: tuple[str, ...] = ()
    document_kind: str = ""  # the ``kind`` its documents carry, when not ``kind``

    @property
    def doc_kind(self) -> str:
        """The ``kind`` field of this kind's documents."""
        return self.document_kind or self.kind


def _kind(kind: str, plural: str, namespaced: bool, canonical: str, also: tuple[str, ...] = (),
          short: tuple[str, ...] = (), document_kind: str = "") -> KindInfo:
    return KindInfo(kind, plural, namespaced, canonical, frozenset((canonical, *also)), short, document_kind)


KINDS: dict[str, KindInfo] = {k.kind: k for k in (
    _kind("IPPool", "ippools", False, L3NET_API, (CALICO_API,), ("ippool", "pool", "pools")),
    _kind("Node", "nodes", False, L3NET_API, (CALICO_API,), ("node", "no")),
    _kind("BGPConfiguration", "bgpconfigurations", False, L3NET_API, (CALICO_API,), ("bgpconfig", "bgpconfigs")),
    _kind("BGPPeer", "bgppeers", False, L3NET_API, (CALICO_API,), ("bgppeer",)),
    _kind("BGPFilter", "bgpfilters", False, L3NET_API, (CALICO_API,), ("bgpfilter",)),
    _kind("IPReservation", "ipreservations", False, L3NET_API, (CALICO_API,), ("ipreservation",)),
    _kind("FelixConfiguration", "felixconfigurations", False, L3NET_API, (CALICO_API,),
          ("felixconfiguration", "felixconfig", "felixconfigs")),
    _kind("WorkloadEndpoint", "workloadendpoints", True, L3NET_API, (), ("wep", "weps", "workloadendpoint")),
    _kind("Namespace", "namespaces", False, K8S_CORE_API, (L3NET_API,), ("namespace", "ns")),
    _kind("NetworkPolicy", "networkpolicies", True, K8S_NETPOL_API, (), ("networkpolicy", "netpol", "np")),
    _kind("CalicoNetworkPolicy", "caliconetworkpolicies", True, CALICO_API, (),
          ("caliconetworkpolicy", "cnp"), document_kind="NetworkPolicy"),
    _kind("GlobalNetworkPolicy", "globalnetworkpolicies", False, L3NET_API, (CALICO_API,),
          ("globalnetworkpolicy", "gnp")),
    _kind("NetworkSet", "networksets", True, L3NET_API, (CALICO_API,), ("networkset", "netset", "netsets")),
    _kind("GlobalNetworkSet", "globalnetworksets", False, L3NET_API, (CALICO_API,),
          ("globalnetworkset", "gns", "globalnetset")),
    _kind("HostEndpoint", "hostendpoints", False, L3NET_API, (CALICO_API,), ("hostendpoint", "hep", "heps")),
    _kind("Service", "services", True, L3NET_API, (), ("service", "svc")),
)}

KINDS_BY_PLURAL: dict[str, KindInfo] = {k.plural: k for k in KINDS.values()}

# The ``kind`` values a document may carry (NetworkPolicy once, for two kinds).
DOCUMENT_KINDS: frozenset[str] = frozenset(k.doc_kind for k in KINDS.values())


def document_kind_info(kind: str, api: object) -> KindInfo | None:
    """The kind a document with this ``kind`` and ``apiVersion`` is; None for an unknown kind.

    When no kind of that name is served at ``api``, the first one is returned, so that the
    caller's apiVersion check names the problem (see :func:`serving_apis`).
    """
    candidates = [i for i in KINDS.values() if i.doc_kind == kind]
    for info in candidates:
        if isinstance(api, str) and api in info.accepted_apis:
            return info
    return candidates[0] if candidates else None


def serving_apis(kind: str) -> frozenset[str]:
    """Every apiVersion at which some kind with the document kind ``kind`` is served."""
    return frozenset(a for i in KINDS.values() if i.doc_kind == kind for a in i.accepted_apis)


def kind_info(name: str) -> KindInfo | None:
    """Look a kind up by kind, plural or short name, case-insensitively."""
    low = name.lower()
    for info in KINDS.values():
        if low in (info.kind.lower(), info.plural, *info.short_names):
            return info
    return None


@dataclass(frozen=True)
class Resource:
    """One resource (validated when it comes from the model: see ``validated``). Immutable; ``spec`` must not be
    mutated by callers."""

    kind: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    resource_version: int = 0
    # The spec object the model's validation checked and normalised (only l3net.model.validation sets it):
    # see ``validated``. Not compared and not printed: it is the spec itself, or None.
    checked_spec: dict[str, Any] | None = field(default=None, compare=False, repr=False, kw_only=True)

    @property
    def validated(self) -> bool:
        """Whether ``spec`` is the very object the model's validation produced. A Resource built by hand, or
        replaced with another spec, is not: its readers check it with the model first (``l3net.model.bgp_specs``).
        ``dataclasses.replace`` of other fields keeps it (the spec is the same object)."""
        return self.checked_spec is not None and self.checked_spec is self.spec

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    @property
    def ref(self) -> str:
        """``Kind/name`` or ``Kind/namespace/name``: how errors and logs name it."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def to_document(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        meta.update(copy.deepcopy(self.extra_metadata))
        if self.resource_version:
            meta["resourceVersion"] = str(self.resource_version)
        doc: dict[str, Any] = {"apiVersion": self.info.canonical_api, "kind": self.info.doc_kind, "metadata": meta}
        if self.kind != "Namespace" or self.spec:
            doc["spec"] = copy.deepcopy(self.spec)
        return doc

    def to_json(self) -> bytes:
        doc = self.to_document()
        doc["metadata"].pop("resourceVersion", None)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

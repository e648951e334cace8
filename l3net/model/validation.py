"""l3net.model.validation: one document in, one validated :class:`Resource` out (the public facade).

The rules live in :mod:`l3net.model.validate`, one module per job (see its docstring); this module
is the stable import path for everything outside it.

Every check reports a :class:`~l3net.errors.FieldError` with the document name (``file#2
NetworkPolicy/default/allow-web``), the full field path (``spec.ingress[0].from[0].ipBlock.cidr``)
and the reason; all errors of a document are collected before :class:`~l3net.errors.ValidationError`
is raised. Unknown fields are errors everywhere: a typo must never silently widen or narrow a
policy. Nothing here raises anything but ValidationError, whatever the input.

Normalisation (so consumers read one shape): AS numbers in AS-dot form (``"1.10"``) become
integers; Calico protocol names are canonicalised (``tcp`` -> ``TCP``); IPPool gets Calico's
defaults (``blockSize`` 26/122, ``nodeSelector: all()``); NetworkPolicy ``policyTypes`` and
GlobalNetworkPolicy ``types`` get the Kubernetes/Calico defaults (Ingress, plus Egress when egress
rules are present); namespaced kinds default to namespace ``default``.
"""

from __future__ import annotations

from l3net.model.validate.addresses import pools_overlap
from l3net.model.validate.checker import format_path
from l3net.model.validate.document import DEFAULT_NAMESPACE, document_name, resource_from_document
from l3net.model.validate.workload import host_veth_name, workload_endpoint_name
from l3net.model.values import parse_duration, parse_peer_ip

__all__ = ["DEFAULT_NAMESPACE", "document_name", "format_path", "host_veth_name", "parse_duration", "parse_peer_ip",
           "pools_overlap", "resource_from_document", "workload_endpoint_name"]

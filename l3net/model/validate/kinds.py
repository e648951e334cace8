"""l3net.model.validate.kinds: which spec check and which name rule belong to each kind.

Owns the registry the document validator dispatches on, so that adding a kind is one spec module
plus one line here. Namespace has no spec fields of its own, so its (empty) spec lives here too.
Every kind of :data:`l3net.model.resource.KINDS` has a spec check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from l3net.model.validate.bgp import (
    BGP_CONFIGURATION_SPEC,
    BGP_FILTER_SPEC,
    BGP_PEER_SPEC,
    NODE_SPEC,
    bgp_configuration_name_check,
)
from l3net.model.validate.calico_policy import CALICO_NETWORK_POLICY_SPEC, GLOBAL_NETWORK_POLICY_SPEC
from l3net.model.validate.checker import Check, Checker, obj
from l3net.model.validate.felix_configuration import FELIX_CONFIGURATION_SPEC, felix_configuration_name_check
from l3net.model.validate.host_endpoint import HOST_ENDPOINT_SPEC
from l3net.model.validate.ippool import IPPOOL_SPEC
from l3net.model.validate.ipreservation import IPRESERVATION_SPEC
from l3net.model.validate.k8s_policy import NETWORK_POLICY_SPEC
from l3net.model.validate.network_set import NETWORK_SET_SPEC
from l3net.model.validate.service import SERVICE_SPEC
from l3net.model.validate.workload import WORKLOAD_ENDPOINT_SPEC, workload_endpoint_name_check

_log = logging.getLogger(__name__)

__all__ = ["NAMESPACE_SPEC", "NAME_CHECKS", "NAME_IS_LABEL", "SPECS", "NameCheck"]

# A rule tying a valid name to a valid spec: (checker, metadata.name, checked spec).
NameCheck = Callable[[Checker, str, dict[str, Any]], None]

NAMESPACE_SPEC = obj({})

SPECS: dict[str, Check] = {
    "IPPool": IPPOOL_SPEC,
    "IPReservation": IPRESERVATION_SPEC,
    "FelixConfiguration": FELIX_CONFIGURATION_SPEC,
    "Node": NODE_SPEC,
    "BGPConfiguration": BGP_CONFIGURATION_SPEC,
    "BGPPeer": BGP_PEER_SPEC,
    "BGPFilter": BGP_FILTER_SPEC,
    "WorkloadEndpoint": WORKLOAD_ENDPOINT_SPEC,
    "Namespace": NAMESPACE_SPEC,
    "NetworkPolicy": NETWORK_POLICY_SPEC,
    "CalicoNetworkPolicy": CALICO_NETWORK_POLICY_SPEC,
    "GlobalNetworkPolicy": GLOBAL_NETWORK_POLICY_SPEC,
    "NetworkSet": NETWORK_SET_SPEC,
    "GlobalNetworkSet": NETWORK_SET_SPEC,
    "HostEndpoint": HOST_ENDPOINT_SPEC,
    "Service": SERVICE_SPEC,
}

NAME_CHECKS: dict[str, NameCheck] = {
    "BGPConfiguration": bgp_configuration_name_check,
    "FelixConfiguration": felix_configuration_name_check,
    "WorkloadEndpoint": workload_endpoint_name_check,
}

# Kubernetes-style names: namespaces are DNS labels, everything else a subdomain.
NAME_IS_LABEL = frozenset({"Namespace"})

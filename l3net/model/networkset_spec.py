"""l3net.model.networkset_spec: the typed spec of a NetworkSet or GlobalNetworkSet, the addresses a selector matches.

The model validates a network set once (:mod:`l3net.model.validate.network_set`): every ``nets`` entry is
a CIDR without host bits, IPv4 or IPv6. This module turns that validated spec into a frozen value, the nets
as ``ip_network`` objects; policy fills its address sets from it and parses nothing itself. A Resource
built by hand is validated first, and refused with the model's own :class:`~l3net.errors.ValidationError`.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["NETWORK_SET_KINDS", "NetworkSetSpec", "networkset_spec"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The namespaced and the cluster-wide kind share one spec; only their labels differ (policy.model).
NETWORK_SET_KINDS = ("NetworkSet", "GlobalNetworkSet")


@dataclass(frozen=True, slots=True)
class NetworkSetSpec:
    """A (Global)NetworkSet's spec as the model validated it (``nets`` ``()`` when absent)."""

    nets: tuple[IPNetwork, ...] = ()


def networkset_spec(res: Resource) -> NetworkSetSpec:
    """The typed spec of a NetworkSet or GlobalNetworkSet, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, NETWORK_SET_KINDS, _convert)


def _convert(spec: Mapping[str, Any]) -> NetworkSetSpec:
    return NetworkSetSpec(nets=tuple(ipaddress.ip_network(n) for n in spec.get("nets") or ()))

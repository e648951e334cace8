"""l3net.model.hostendpoint_spec: the typed spec of a HostEndpoint, the node interface that host policy polices.

The model validates a HostEndpoint once (:mod:`l3net.model.validate.host_endpoint`): ``interfaceName`` is
one plain Linux interface name (never the all-interfaces ``*``, never a workload's ``cali`` interface),
``node`` a DNS name, every ``expectedIPs`` entry one IP address without a scope ID. This module turns that
validated spec into a frozen value. ``interfaceName`` reaches iptables as ``-i``/``-o``, so policy reads it
only from here: a typed spec exists only for a spec the model validated (a Resource built by hand is
validated first, and refused with the model's own :class:`~l3net.errors.ValidationError`).

``profiles`` and ``ports`` have no attribute: the model refuses them unless empty, so they would always be
``()``, and an attribute would read as a field l3net implements.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["HostEndpointSpec", "hostendpoint_spec"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class HostEndpointSpec:
    """A HostEndpoint's spec as the model validated it (``expected_ips`` ``()`` when absent)."""

    node: str
    interface_name: str
    expected_ips: tuple[IPAddress, ...] = ()


def hostendpoint_spec(res: Resource) -> HostEndpointSpec:
    """The typed spec of a HostEndpoint, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "HostEndpoint", _convert)


def _convert(spec: Mapping[str, Any]) -> HostEndpointSpec:
    return HostEndpointSpec(node=spec["node"], interface_name=spec["interfaceName"],
                            expected_ips=tuple(ipaddress.ip_address(a) for a in spec.get("expectedIPs") or ()))

"""l3net.model.ipreservation_spec: the typed spec of an IPReservation, the addresses IPAM never auto-assigns.

The model validates an IPReservation once (:mod:`l3net.model.validate.ipreservation`): every
``reservedCIDRs`` entry is a CIDR without host bits or a single address (no scope ID), as Calico accepts
them. This module turns that validated spec into a frozen value, every entry an ``ip_network`` object (a
single address the /32 or /128 of it); IPAM skips the reserved ordinals from it and parses nothing itself.
A Resource built by hand is validated first, and refused with the model's own
:class:`~l3net.errors.ValidationError`.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["IPReservationSpec", "ipreservation_spec"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IPReservationSpec:
    """An IPReservation's spec as the model validated it (``reserved_cidrs`` ``()`` when absent), in order."""

    reserved_cidrs: tuple[IPNetwork, ...] = ()


def ipreservation_spec(res: Resource) -> IPReservationSpec:
    """The typed spec of an IPReservation, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "IPReservation", _convert)


def _convert(spec: Mapping[str, Any]) -> IPReservationSpec:
    # ip_network of a bare address is its /32 or /128; the model let no CIDR with host bits through
    return IPReservationSpec(reserved_cidrs=tuple(ipaddress.ip_network(c) for c in spec.get("reservedCIDRs") or ()))

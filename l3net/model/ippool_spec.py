"""l3net.model.ippool_spec: the typed, normalised spec of an IPPool, so that IPAM and the agent read one parse.

The model validates an IPPool once (:mod:`l3net.model.validate.ippool`: the CIDR, the block size within
its family's range and no larger than the pool, the defaults ``blockSize`` 26/122 and ``nodeSelector:
all()``); this module turns that validated spec into a frozen value. Before it, IPAM decoded the stored
JSON itself and the agent read the raw dict, each with its own idea of a default and of a bad value.

Cheap to call repeatedly: the typed spec of a Resource object is computed once and kept on that object.
A Resource the model's validation did not produce (``Resource.validated`` is false: built by hand) is
validated here first, and refused with the model's own :class:`~l3net.errors.ValidationError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["IPPoolSpec", "ippool_spec"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IPPoolSpec:
    """An IPPool's spec as the model validated it, defaults filled in."""

    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    nat_outgoing: bool = False
    node_selector: str = "all()"
    namespace_selector: str | None = None   # None: every namespace (Calico 3.31's field, absent)
    disable_bgp_export: bool = False


def ippool_spec(res: Resource) -> IPPoolSpec:
    """The typed spec of an IPPool, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for an IPPool built by hand that
    the model refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "IPPool", _convert)


def _convert(spec: Mapping[str, Any]) -> IPPoolSpec:
    namespaces = spec.get("namespaceSelector")
    return IPPoolSpec(cidr=ipaddress.ip_network(spec["cidr"]), block_size=int(spec["blockSize"]),
                      disabled=spec.get("disabled") is True, nat_outgoing=spec.get("natOutgoing") is True,
                      node_selector=str(spec.get("nodeSelector") or "all()"),
                      namespace_selector=str(namespaces) if namespaces else None,
                      disable_bgp_export=spec.get("disableBGPExport") is True)

"""l3net.model.validate.ipreservation: Calico's IPReservation spec (addresses IPAM never auto-assigns).

Owns ``reservedCIDRs``: CIDRs without host bits, or single addresses, as Calico accepts them.
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.addresses import cidr, ip_address
from l3net.model.validate.checker import Checker, listof, obj

_log = logging.getLogger(__name__)

__all__ = ["IPRESERVATION_SPEC"]

_ADDRESS = ip_address()


def _cidr_or_address(c: Checker, value: Any, path: str) -> Any:
    if isinstance(value, str) and "/" not in value:
        return _ADDRESS(c, value, path)
    return cidr(c, value, path)


IPRESERVATION_SPEC = obj({"reservedCIDRs": listof(_cidr_or_address)})

"""l3net.ipam.reservations: Calico's IPReservations as IPAM sees them (addresses never auto-assigned).

Pure apart from :func:`reservations_from_kvs`' logging. A reservation that does not decode
is absent (logged), like a malformed pool: bad data never stops allocation elsewhere. The reserved
networks come from the model's typed spec (:mod:`l3net.model.ipreservation_spec`), not a parse of
their own.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from l3net.datastore.base import KeyValue
from l3net.errors import ValidationError
from l3net.model.ipreservation_spec import ipreservation_spec
from l3net.model.validation import resource_from_document

_log = logging.getLogger(__name__)

__all__ = ["Reservations", "reservations_from_kvs"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Reservations:
    """The reserved networks of every IPReservation. Immutable."""

    networks: tuple[IPNetwork, ...] = ()

    def ordinals(self, block: IPNetwork) -> frozenset[int]:
        """The ordinals of ``block`` (offsets from its first address) that are reserved."""
        out: set[int] = set()
        base = int(block.network_address)
        for net in self.networks:
            if net.version != block.version or not net.overlaps(block):  # type: ignore[arg-type]
                continue
            lo = max(int(net.network_address), base)
            hi = min(int(net.broadcast_address), int(block.broadcast_address))
            out.update(range(lo - base, hi - base + 1))
        return frozenset(out)

    def covers(self, block: IPNetwork) -> bool:
        """Is every address of ``block`` reserved (claiming it would give nothing)?"""
        return len(self.ordinals(block)) == block.num_addresses


def reservations_from_kvs(kvs: Iterable[KeyValue]) -> Reservations:
    """Decode stored IPReservations; a malformed one is skipped and logged."""
    nets: list[IPNetwork] = []
    for kv in kvs:
        try:
            res = resource_from_document(json.loads(kv.value), source=kv.key)
            if res.kind != "IPReservation":
                raise ValueError(f"kind {res.kind!r} stored under ipreservations/")
            nets += ipreservation_spec(res).reserved_cidrs
        except (ValueError, ValidationError, RecursionError) as exc:
            _log.warning("ignoring malformed IPReservation key=%s error=%s", kv.key, exc)
    return Reservations(tuple(nets))

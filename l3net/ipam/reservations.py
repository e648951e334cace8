"""l3net.ipam.reservations: Calico's IPReservations as IPAM sees them (addresses never auto-assigned).

Pure apart from the logging of :func:`reservations_of`. Every stored IPReservation is decoded by the
model's one decode (:func:`l3net.model.decode.decode`); one the model refuses is absent (logged with the
model's reasons), as it is to the agent and as a malformed pool is: bad data never stops allocation
elsewhere. The reserved networks come from the model's typed spec (:mod:`l3net.model.ipreservation_spec`),
not a parse of their own.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from l3net.datastore.base import KeyValue
from l3net.keys import KeyLayout
from l3net.model.decode import Invalid, decode
from l3net.model.ipreservation_spec import ipreservation_spec
from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

__all__ = ["Reservations", "reservations_from_kvs", "reservations_of"]

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


def reservations_from_kvs(keys: KeyLayout, kvs: Iterable[KeyValue]) -> Reservations:
    """The reservations stored in ``kvs`` (as listed under ``keys.resource_dir("ipreservations")``), each
    decoded by the model; one it refuses is absent and logged."""
    return reservations_of(decode(keys, kv.key, kv.value, kv.mod_revision) for kv in kvs)


def reservations_of(decoded: Iterable[Resource | Invalid]) -> Reservations:
    """The reserved networks of decoded IPReservations, in order; an :class:`Invalid` is absent and logged.

    ValueError for a Resource of another kind (the caller listed the wrong directory).
    """
    nets: list[IPNetwork] = []
    for res in decoded:
        if isinstance(res, Invalid):
            _log.warning("ignoring malformed IPReservation key=%s error=%s", res.key, res)
            continue
        nets += ipreservation_spec(res).reserved_cidrs
    return Reservations(tuple(nets))

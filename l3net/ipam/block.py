"""l3net.ipam.block: one allocation block in Calico's JSON shape, and pure operations on it.

A block is ``{cidr, affinity, allocations, unallocated, attributes, sequenceNumber,
sequenceNumberForAllocation, deleted}``: ``allocations[ordinal]`` is an index into
``attributes`` (or null when free), ``unallocated`` is the FIFO of free ordinals,
``attributes`` holds ``{handle_id, secondary}`` records shared by the ordinals
of one handle. Nothing here does I/O; callers write the result with CAS.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from l3net.errors import FieldError, ValidationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_affinity(node: str) -> str:
    return f"host:{node}"


def affinity_node(affinity: str | None) -> str | None:
    """``host:<node>`` -> node; anything else (None, ``virtual:...``) -> None."""
    if affinity and affinity.startswith("host:"):
        return affinity[5:]
    return None


@dataclass
class Block:
    """One block, decoded. Mutable working copy: methods change it in place; ``to_json`` stores it.

    Raises ValidationError from :meth:`from_json` when the stored value is malformed
    (callers treat such a block as unusable, never as free space).
    """

    cidr: IPNetwork
    affinity: str | None
    allocations: list[int | None]
    unallocated: list[int]
    attributes: list[dict[str, Any]] = field(default_factory=list)
    sequence_number: int = 0
    seq_for_allocation: dict[str, int] = field(default_factory=dict)

    # -- construction --------------------------------------------------------
    @classmethod
    def new(cls, cidr: str | IPNetwork, affinity: str | None) -> Block:
        net = ipaddress.ip_network(str(cidr))
        size = net.num_addresses
        return cls(cidr=net, affinity=affinity, allocations=[None] * size, unallocated=list(range(size)))

    @classmethod
    def from_json(cls, raw: bytes, where: str = "block") -> Block:
        try:
            doc = json.loads(raw)
            net = ipaddress.ip_network(doc["cidr"])
            allocations = list(doc["allocations"])
            unallocated = [int(o) for o in doc["unallocated"]]
            attributes = [dict(a) for a in doc.get("attributes") or []]
            if len(allocations) != net.num_addresses:
                raise ValueError(f"{len(allocations)} allocation slots for a /{net.prefixlen}")
            for a in allocations:
                if a is not None and not (isinstance(a, int) and 0 <= a < len(attributes)):
                    raise ValueError(f"allocation {a!r} does not index attributes")
            seq = {str(k): int(v) for k, v in (doc.get("sequenceNumberForAllocation") or {}).items()}
            return cls(cidr=net, affinity=doc.get("affinity"), allocations=allocations, unallocated=unallocated,
                       attributes=attributes, sequence_number=int(doc.get("sequenceNumber", 0)),
                       seq_for_allocation=seq)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(FieldError(path="", reason=f"malformed IPAM block: {exc}", document=where)) from None

    def to_json(self) -> bytes:
        doc = {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "allocations": self.allocations,
            "unallocated": self.unallocated,
            "attributes": self.attributes,
            "sequenceNumber": self.sequence_number,
            "sequenceNumberForAllocation": self.seq_for_allocation,
            "deleted": False,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    # -- queries -------------------------------------------------------------
    @property
    def node(self) -> str | None:
        return affinity_node(self.affinity)

    def ip(self, ordinal: int) -> str:
        return str(self.cidr.network_address + ordinal)

    def ordinal(self, ip: str | IPAddress) -> int:
        addr = ipaddress.ip_address(str(ip))
        if addr not in self.cidr:
            raise ValueError(f"{addr} is not in block {self.cidr}")
        return int(addr) - int(self.cidr.network_address)

    def free_count(self) -> int:
        return len(self.unallocated)

    def is_empty(self) -> bool:
        return all(a is None for a in self.allocations)

    def handle_of(self, ordinal: int) -> str | None:
        idx = self.allocations[ordinal]
        return None if idx is None else self.attributes[idx].get("handle_id")

    def attrs_of(self, ordinal: int) -> dict[str, Any]:
        idx = self.allocations[ordinal]
        return {} if idx is None else dict(self.attributes[idx].get("secondary") or {})

    def allocated(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        """``(ip, handle_id, secondary)`` for every allocated ordinal, in address order."""
        return [(self.ip(o), self.handle_of(o), self.attrs_of(o))
                for o, a in enumerate(self.allocations) if a is not None]

    def ips_of(self, handle_id: str) -> list[str]:
        return [self.ip(o) for o in range(len(self.allocations)) if self.handle_of(o) == handle_id]

    # -- changes -------------------------------------------------------------
    def _attr_index(self, handle_id: str, secondary: dict[str, Any]) -> int:
        for i, a in enumerate(self.attributes):
            if a.get("handle_id") == handle_id and (a.get("secondary") or {}) == secondary:
                return i
        self.attributes.append({"handle_id": handle_id, "secondary": secondary})
        return len(self.attributes) - 1

    def _bump(self, ordinal: int) -> None:
        self.sequence_number += 1
        self.seq_for_allocation[str(ordinal)] = self.sequence_number

    def allocate(self, handle_id: str, secondary: dict[str, Any],
                 skip: Collection[int] = frozenset()) -> str | None:
        """Take the first free ordinal not in ``skip`` (reserved) for ``handle_id``; None when there is none."""
        pos = next((i for i, o in enumerate(self.unallocated) if o not in skip), None)
        if pos is None:
            return None
        ordinal = self.unallocated.pop(pos)
        self.allocations[ordinal] = self._attr_index(handle_id, secondary)
        self._bump(ordinal)
        return self.ip(ordinal)

    def allocate_ip(self, ip: str, handle_id: str, secondary: dict[str, Any]) -> None:
        """Take one given address; ValueError naming the holder when it is taken."""
        ordinal = self.ordinal(ip)
        if self.allocations[ordinal] is not None:
            raise ValueError(f"{ip} is already in use by handle {self.handle_of(ordinal)!r}")
        self.unallocated.remove(ordinal)
        self.allocations[ordinal] = self._attr_index(handle_id, secondary)
        self._bump(ordinal)

    def release_ordinals(self, ordinals: list[int]) -> None:
        """Free ordinals (to the tail of ``unallocated``, so a freed address is reused last)."""
        for o in ordinals:
            if self.allocations[o] is not None:
                self.allocations[o] = None
                self.unallocated.append(o)
                self._bump(o)
        self._compact_attributes()

    def release_handle(self, handle_id: str) -> list[str]:
        ordinals = [o for o in range(len(self.allocations)) if self.handle_of(o) == handle_id]
        ips = [self.ip(o) for o in ordinals]
        self.release_ordinals(ordinals)
        return ips

    def reassign(self, ordinals: list[int], handle_id: str, secondary: dict[str, Any]) -> None:
        """Hand allocated ordinals to another handle (sticky hold and take-over)."""
        for o in ordinals:
            self.allocations[o] = self._attr_index(handle_id, secondary)
            self._bump(o)
        self._compact_attributes()

    def _compact_attributes(self) -> None:
        used = sorted({a for a in self.allocations if a is not None})
        remap = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[i] for i in used]
        self.allocations = [None if a is None else remap[a] for a in self.allocations]

"""l3net.ipam.pools: IP pools and IPAM settings as the allocator sees them.

Pools are the IPPool resources as the model decodes them (``l3net.model.decode``, then the
typed spec of ``l3net.model.ippool_spec``: one parse, one set of defaults, shared with the
agent); a stored pool the model refuses is treated as absent and logged with its key (STYLE
habit 6). The IPAM settings document lives at ``keys.ipam_config``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from l3net.constants import DEFAULT_MAX_BLOCKS_PER_HOST
from l3net.errors import FieldError, ValidationError
from l3net.ipam.block import IPNetwork
from l3net.model.ippool_spec import ippool_spec
from l3net.model.resource import Resource
from l3net.model.selectors import parse_calico

_log = logging.getLogger(__name__)

DEFAULT_STICKY_HOLD_SECONDS = 300.0


@dataclass(frozen=True)
class Pool:
    """One IP pool: where blocks come from. Immutable."""

    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    namespace_selector: str = ""  # Calico 3.31: pods of the namespaces it selects; empty = every namespace

    def blocks(self) -> Iterator[IPNetwork]:
        """Every block CIDR of the pool, lowest first (the claim order)."""
        if self.block_size <= self.cidr.prefixlen:
            yield self.cidr
            return
        yield from self.cidr.subnets(new_prefix=self.block_size)

    def block_of(self, ip: str) -> IPNetwork:
        """The block CIDR that holds ``ip`` (which must lie inside the pool)."""
        addr = ipaddress.ip_address(ip)
        size = max(self.block_size, self.cidr.prefixlen)
        return ipaddress.ip_network(f"{addr}/{size}", strict=False)

    def matches_node(self, labels: Mapping[str, str]) -> bool:
        """Does the pool's ``nodeSelector`` select a node with ``labels``? Unparsable selects nothing."""
        text = (self.node_selector or "").strip()
        if text in ("", "all()"):
            return True
        return parse_calico(text, where=f"IPPool {self.name} nodeSelector").matches(labels)

    def matches_namespace(self, labels: Mapping[str, str]) -> bool:
        """Does the pool's ``namespaceSelector`` select a namespace with ``labels``? Unparsable selects nothing."""
        text = (self.namespace_selector or "").strip()
        if text in ("", "all()"):
            return True
        return parse_calico(text, where=f"IPPool {self.name} namespaceSelector").matches(labels)


def pool_from_resource(res: Resource) -> Pool:
    """The IPAM view of one IPPool, from the model's typed spec (ValueError for one the model refuses)."""
    spec = ippool_spec(res)
    return Pool(name=res.name, cidr=spec.cidr, block_size=spec.block_size, disabled=spec.disabled,
                node_selector=spec.node_selector, namespace_selector=spec.namespace_selector or "")


@dataclass(frozen=True)
class IPAMConfig:
    """Cluster-wide IPAM settings (Calico's IPAMConfiguration plus the sticky hold time)."""

    strict_affinity: bool = False
    max_blocks_per_host: int = DEFAULT_MAX_BLOCKS_PER_HOST
    auto_allocate_blocks: bool = True
    sticky_hold_seconds: float = DEFAULT_STICKY_HOLD_SECONDS

    @classmethod
    def from_json(cls, raw: bytes | None, where: str = "ipam config") -> IPAMConfig:
        if raw is None:
            return cls()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ValidationError(FieldError(path="", reason=f"not JSON: {exc}", document=where)) from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "ipam config") -> IPAMConfig:
        errors = []
        if not isinstance(doc, dict):
            raise ValidationError(FieldError(path="", reason="must be an object", document=where))
        known = {"strictAffinity", "maxBlocksPerHost", "autoAllocateBlocks", "stickyHoldSeconds"}
        errors += [FieldError(path=k, reason="unknown field", document=where) for k in doc if k not in known]
        for k in ("strictAffinity", "autoAllocateBlocks"):
            if k in doc and not isinstance(doc[k], bool):
                errors.append(FieldError(path=k, reason="must be true or false", document=where))
        mbh = doc.get("maxBlocksPerHost", DEFAULT_MAX_BLOCKS_PER_HOST)
        if isinstance(mbh, bool) or not isinstance(mbh, int) or mbh < 0:
            errors.append(FieldError(path="maxBlocksPerHost", reason="must be an integer >= 0 (0 = default 20)",
                                     document=where))
        hold = doc.get("stickyHoldSeconds", DEFAULT_STICKY_HOLD_SECONDS)
        if isinstance(hold, bool) or not isinstance(hold, int | float) or hold < 0:
            errors.append(FieldError(path="stickyHoldSeconds", reason="must be a number >= 0", document=where))
        if errors:
            raise ValidationError(errors)
        return cls(strict_affinity=doc.get("strictAffinity", False),
                   # Calico treats 0 (unset) as the default of 20.
                   max_blocks_per_host=mbh or DEFAULT_MAX_BLOCKS_PER_HOST,
                   auto_allocate_blocks=doc.get("autoAllocateBlocks", True),
                   sticky_hold_seconds=float(hold))

    def to_json(self) -> bytes:
        return json.dumps({"strictAffinity": self.strict_affinity, "maxBlocksPerHost": self.max_blocks_per_host,
                           "autoAllocateBlocks": self.auto_allocate_blocks,
                           "stickyHoldSeconds": self.sticky_hold_seconds}, sort_keys=True).encode()

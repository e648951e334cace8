"""l3net.ipam.handle: the IPAM handle record (one workload's addresses per block) and sticky-hold handle names.

Shared by the allocator, which writes handles, and the report, which audits them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from l3net.datastore.base import KeyValue

_log = logging.getLogger(__name__)

STICKY_HANDLE_PREFIX = "l3net-sticky."


def sticky_hold_handle(sticky_key: str) -> str:
    return STICKY_HANDLE_PREFIX + sticky_key.replace("/", ".")


@dataclass
class Handle:
    """The secondary index of one workload's addresses: ``{handleID, block: {cidr: count}, sticky}``."""

    handle_id: str
    blocks: dict[str, int] = field(default_factory=dict)
    sticky: str | None = None

    @classmethod
    def from_kv(cls, kv: KeyValue, handle_id: str) -> Handle:
        try:
            doc = json.loads(kv.value)
            return cls(handle_id=handle_id, blocks={str(k): int(v) for k, v in (doc.get("block") or {}).items()},
                       sticky=doc.get("sticky"))
        except (ValueError, AttributeError, TypeError):
            _log.warning("malformed IPAM handle key=%s; treating as empty", kv.key)
            return cls(handle_id=handle_id)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"handleID": self.handle_id, "block": dict(sorted(self.blocks.items())), "deleted": False}
        if self.sticky:
            doc["sticky"] = self.sticky
        return json.dumps(doc, separators=(",", ":")).encode()

    def add(self, cidr: str, n: int) -> None:
        self.blocks[cidr] = self.blocks.get(cidr, 0) + n
        if self.blocks[cidr] <= 0:
            del self.blocks[cidr]

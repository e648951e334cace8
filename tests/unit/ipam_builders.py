"""Datastore contents for the IPAM unit tests (pools and nodes as stored documents under ``KEYS``) and the
checks they share on what IPAM wrote."""

from __future__ import annotations

import json

from l3net.datastore.memory import MemoryDatastore
from l3net.ipam import IPAM
from l3net.ipam.block import Block
from l3net.keys import KeyLayout

__all__ = ["KEYS", "add_node", "add_pool", "block_of", "consistent"]

KEYS = KeyLayout("/t/")


def add_pool(ds: MemoryDatastore, name: str, cidr: str, block_size: int = 26, **spec: object) -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": name},
           "spec": {"cidr": cidr, "blockSize": block_size, **spec}}
    ds.put(KEYS.resource("ippools", name), json.dumps(doc).encode())


def add_node(ds: MemoryDatastore, name: str, labels: dict[str, str] | None = None) -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
           "spec": {}}
    ds.put(KEYS.resource("nodes", name), json.dumps(doc).encode())


def consistent(ipam: IPAM) -> bool:
    """No double allocation, orphan or record mismatch (leaks are expected: these tests write no endpoints)."""
    r = ipam.check()
    return not (r.double_allocations or r.orphaned_affinities or r.inconsistencies or r.missing_allocations)


def block_of(ds: MemoryDatastore, cidr: str) -> Block:
    kv = ds.get(KEYS.block(cidr))
    assert kv is not None
    return Block.from_json(kv.value)

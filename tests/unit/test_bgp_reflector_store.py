"""bgp.cli.ResourceStore: the reflector's view: a cached start counts as a view but not as live, and
readiness says which kinds are missing or cached; bad values are absent."""

from __future__ import annotations

import asyncio
import time

import pytest

from bgp.cli import KINDS, ResourceStore
from l3net.health import HealthState
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.syncer import KeyUpdate
from l3net.viewcache import CachedView

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/rs/")


def node(name: str) -> Resource:
    return Resource("Node", name, {"bgp": {"ipv4Address": "10.0.0.1/24"}})


def test_cached_view_then_live_sync_drives_readiness() -> None:
    async def scenario() -> None:
        health = HealthState()
        store = ResourceStore(None, KEYS, asyncio.get_running_loop(), asyncio.Event(), health)
        assert not store.in_sync and "not in sync" in health.readiness()[1]["datastore"]
        key = KEYS.resource("nodes", "n1")
        store.seed("nodes", CachedView(KEYS.resource_dir("nodes"), 5, time.time(), {key: (node("n1").to_json(), 4)}))
        for plural, _ in KINDS[1:]:
            store.seed(plural, CachedView(KEYS.resource_dir(plural), 5, time.time(), {}))
        assert store.in_sync and not store.live
        assert [n.name for n in store.snapshot()[0]] == ["n1"]
        assert "cached view" in health.readiness()[1]["datastore"]
        for plural, _ in KINDS:
            store.sink(plural).on_in_sync()
        assert store.live and "datastore" not in health.readiness()[1]
        store.sink("nodes").on_status("down")
        assert health.readiness()[1]["datastore"] == "not in sync with the datastore: nodes"
        store.sink("nodes").on_updates([KeyUpdate(key, b"[" * 100_000, 6)])
        assert store.snapshot()[0] == []  # a value no decoder can read is absent
    asyncio.run(scenario())

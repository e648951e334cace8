"""The syncer's outage additions: seeding from a cached view, feeding the cache, restarting a silent watch;
and felix.autonomy's CachedStartSink (the agent's start from that view)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from felix.autonomy import CachedStartSink, probe_reporter
from l3net.datastore.memory import MemoryDatastore
from l3net.health import HealthState
from l3net.syncer import Syncer
from l3net.viewcache import CachedView, CacheWriter, ViewCache
from tests.syncer_recorder import RecordingSink
from tests.waiting import seconds_until

pytestmark = pytest.mark.unit

P = "/sc/"


@pytest.fixture
def started() -> Iterator[list[Syncer]]:
    syncers: list[Syncer] = []
    yield syncers
    for s in syncers:
        s.stop()


def test_seeded_syncer_reports_only_what_changed_since_the_cached_view(started: list[Syncer]) -> None:
    store = MemoryDatastore()
    store.put(P + "same", b"1")
    store.put(P + "gone", b"2")
    cached = {kv.key: (kv.value, kv.mod_revision) for kv in store.list(P)[0]}
    rev = store.revision()
    store.put(P + "new", b"3")
    store.delete(P + "gone")
    sink = RecordingSink()
    sink.state = {k: v for k, (v, _) in cached.items()}  # the consumer already holds the cached view
    sink.revs = {k: r for k, (_, r) in cached.items()}
    s = Syncer(store, P, sink, retry_initial=0.005, retry_max=0.05,
               initial=CachedView(P, rev, time.time(), cached))
    started.append(s)
    s.start()
    assert sink.wait_converged(store, P)
    assert sink.update_count == 2 and sink.deleted == [P + "gone"] and not sink.violations


def test_a_cached_key_past_the_feeds_end_is_reported_deleted(started: list[Syncer]) -> None:
    """A view cached by an agent that watched the whole prefix holds status keys; a feed cut before
    ``status/`` no longer lists them, so its first listing takes them out of the consumer's view."""
    store = MemoryDatastore()
    store.put(P + "resources/x", b"1")
    store.put(P + "status/n1/agent", b"{}")
    cached = {kv.key: (kv.value, kv.mod_revision) for kv in store.list(P)[0]}
    rev = store.revision()
    store.put(P + "resources/x", b"1")  # the store moves on while the agent is away (the same bytes: no update)
    sink = RecordingSink()
    sink.state = {key: v for key, (v, _) in cached.items()}
    sink.revs = {key: r for key, (_, r) in cached.items()}
    s = Syncer(store, P, sink, retry_initial=0.005, retry_max=0.05, before=P + "status/",
               initial=CachedView(P, rev, time.time(), cached))
    started.append(s)
    s.start()
    assert sink.wait_for(lambda r: r.in_syncs == 1)
    assert sink.state == {P + "resources/x": b"1"} and sink.deleted == [P + "status/n1/agent"]
    store.put(P + "status/n1/agent", b"{\"ready\": true}")
    store.put(P + "resources/y", b"2")
    assert sink.wait_for(lambda r: P + "resources/y" in r.state)
    assert P + "status/n1/agent" not in sink.state and not sink.violations


def test_a_range_end_outside_the_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="does not lie under the prefix"):
        Syncer(MemoryDatastore(), P, RecordingSink(), before="/other/")
    with pytest.raises(ValueError, match="does not lie under the prefix"):
        MemoryDatastore().list(P, before=P)


def test_every_in_sync_view_reaches_the_cache(tmp_path: Path, started: list[Syncer]) -> None:
    store = MemoryDatastore()
    store.put(P + "a", b"1")
    cache = ViewCache(tmp_path / "v.json", P, max_age=60)
    writer = CacheWriter(cache, min_interval=0.01)
    s = Syncer(store, P, RecordingSink(), cache_writer=writer)
    started.append(s)
    s.start()
    store.put(P + "b", b"2")
    try:
        assert seconds_until(lambda: (v := cache.load()) is not None and P + "b" in v.entries, 30) is not None
    finally:
        writer.stop()
    view = cache.load()
    assert view is not None and view.revision == store.revision()


def test_restart_watch_reports_down_and_resyncs(started: list[Syncer]) -> None:
    store = MemoryDatastore()
    store.put(P + "a", b"1")
    sink = RecordingSink()
    s = Syncer(store, P, sink, retry_initial=0.005, retry_max=0.05)
    started.append(s)
    s.start()
    assert seconds_until(lambda: store.watch_count == 1, 30) is not None
    s.restart_watch("probe: hung")
    assert sink.wait_for(lambda r: r.in_syncs == 2)
    assert sink.statuses == ["resync", "down", "resync"] and s.watch_restarts == 1
    store.put(P + "b", b"2")
    assert sink.wait_converged(store, P)


def test_cached_start_hides_outage_reports_until_the_first_real_in_sync() -> None:
    health = HealthState()
    health.set_ready("dataplane", True)
    target = RecordingSink()
    live: list[int] = []
    sink = CachedStartSink(target, health, on_live=lambda: live.append(target.in_syncs))
    sink.start_from(CachedView(P, 7, time.time() - 30, {P + "a": (b"1", 5)}))
    assert target.state == {P + "a": b"1"} and target.in_syncs == 1
    assert live == []  # the cached view's in-sync is not the datastore's (felix.main: no peer-less convergence)
    ready, reasons = health.readiness()
    assert not ready and "cached view of revision 7" in reasons["datastore-view"]
    sink.on_status("resync")
    sink.on_status("down")
    assert target.statuses == []  # the loop keeps applying the cached view
    sink.on_in_sync()
    assert live == [2]  # after the target took the live in-sync
    health.set_ready("datastore", True)
    assert health.readiness() == (True, {})
    sink.on_status("down")
    assert target.statuses == ["down"]  # from now on a plain pass-through


def test_probe_reporter_sets_readiness_and_restarts_watches() -> None:
    health = HealthState()
    restarted: list[str] = []
    report = probe_reporter(health, [restarted.append])
    report(False, "no answer within 1s")
    assert health.readiness()[1]["datastore-probe"] == "no answer within 1s" and restarted == ["no answer within 1s"]
    report(True, "")
    assert "datastore-probe" not in health.readiness()[1] and len(restarted) == 1

"""The syncer's diff logic (pure) and its behaviour against MemoryDatastore's simulated failures.

Integration tests with a real etcd are in tests/integration/test_syncer_etcd.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l3net.datastore.base import KeyValue, WatchEvent
from l3net.datastore.memory import MemoryDatastore
from l3net.errors import DatastoreUnavailable
from l3net.syncer import KeyUpdate, Syncer, apply_updates, snapshot_diff, watch_updates
from tests.syncer_recorder import RecordingSink
from tests.waiting import seconds_until

pytestmark = pytest.mark.unit

P = "/t/"


def kv(key: str, value: bytes, rev: int) -> KeyValue:
    return KeyValue(key=key, value=value, mod_revision=rev)


# -- pure diff -------------------------------------------------------------
def test_snapshot_diff_reports_new_changed_and_vanished_keys_only() -> None:
    known = {P + "same": (b"1", 3), P + "changed": (b"old", 4), P + "gone": (b"x", 2)}
    listing = [kv(P + "changed", b"new", 9), kv(P + "new", b"n", 8), kv(P + "same", b"1", 3)]
    assert snapshot_diff(known, listing, 10) == [
        KeyUpdate(P + "changed", b"new", 9),
        KeyUpdate(P + "new", b"n", 8),
        KeyUpdate(P + "gone", None, 10),
    ]
    assert snapshot_diff({}, [], 5) == []


def test_snapshot_diff_ignores_a_rewrite_with_the_same_bytes() -> None:
    assert snapshot_diff({P + "a": (b"v", 3)}, [kv(P + "a", b"v", 7)], 7) == []


def test_watch_updates_drops_replays_stale_events_and_unknown_deletes() -> None:
    known = {P + "a": (b"a5", 5), P + "b": (b"b2", 2)}
    events = [
        WatchEvent("put", P + "a", b"a4", 4),  # older than what was reported: never go backwards
        WatchEvent("put", P + "b", b"b6", 6),
        WatchEvent("delete", P + "zz", None, 6),  # never reported: nothing to delete
        WatchEvent("put", P + "c", b"c7", 7),
        WatchEvent("put", P + "c", b"c8", 8),  # coalesced: only the last of the batch
        WatchEvent("delete", P + "a", None, 9),
    ]
    assert watch_updates(known, events) == [
        KeyUpdate(P + "b", b"b6", 6),
        KeyUpdate(P + "c", b"c8", 8),
        KeyUpdate(P + "a", None, 9),
    ]
    # At or below the floor (what the view already reflects): dropped even for unknown keys.
    assert watch_updates({}, [WatchEvent("put", P + "d", b"d", 3)], floor=3) == []


def test_apply_updates_then_diff_is_empty() -> None:
    known: dict[str, tuple[bytes, int]] = {P + "gone": (b"x", 1)}
    listing = [kv(P + "a", b"1", 2), kv(P + "b", b"2", 3)]
    apply_updates(known, snapshot_diff(known, listing, 4))
    assert known == {P + "a": (b"1", 2), P + "b": (b"2", 3)}
    assert snapshot_diff(known, listing, 4) == []


def test_backoff_doubles_with_jitter_and_is_bounded() -> None:
    low = Syncer(MemoryDatastore(), P, RecordingSink(), retry_initial=0.1, retry_max=5.0, rand=lambda: 0.0)
    high = Syncer(MemoryDatastore(), P, RecordingSink(), retry_initial=0.1, retry_max=5.0, rand=lambda: 1.0)
    assert [high.backoff(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert [low.backoff(n) for n in (1, 2, 3)] == pytest.approx([0.05, 0.1, 0.2])
    assert high.backoff(1000) == pytest.approx(5.0)
    assert low.backoff(1000) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        Syncer(MemoryDatastore(), P, RecordingSink(), retry_initial=0, retry_max=1)


# -- the syncer thread against MemoryDatastore ------------------------------
class Partition:
    """The syncer's side of a network cut: its calls fail while ``cut``, other clients still write.

    ``hold_watch`` makes the syncer's next ``watch()`` wait until released, so that a test can
    compact the history it is about to ask for.
    """

    def __init__(self, store: MemoryDatastore):
        self.store = store
        self.endpoint = store.endpoint
        self.cut = False
        self.watch_gate = threading.Event()
        self.watch_gate.set()
        self.watch_waiting = threading.Event()

    def _check(self) -> None:
        if self.cut:
            raise DatastoreUnavailable(self.endpoint, "partitioned")

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            self.store.break_watches()

    def list(self, prefix: str, *, before: str | None = None) -> tuple[list[KeyValue], int]:
        self._check()
        return self.store.list(prefix, before=before)

    def watch(self, prefix: str, start_revision: int, *, before: str | None = None):
        self._check()
        if not self.watch_gate.is_set():
            self.watch_waiting.set()
            self.watch_gate.wait()
        self._check()
        return self.store.watch(prefix, start_revision, before=before)


@pytest.fixture
def store() -> MemoryDatastore:
    return MemoryDatastore()


@pytest.fixture
def started() -> Iterator[list[Syncer]]:
    syncers: list[Syncer] = []
    yield syncers
    for s in syncers:
        s.stop()
        assert not s.alive


def run(ds, sink: RecordingSink, started: list[Syncer], **kw) -> Syncer:
    s = Syncer(ds, P, sink, retry_initial=kw.pop("retry_initial", 0.005), retry_max=kw.pop("retry_max", 0.05), **kw)
    started.append(s)
    s.start()
    return s


def test_snapshot_then_in_sync_then_live_updates(store: MemoryDatastore, started: list[Syncer]) -> None:
    store.put(P + "a", b"1")
    store.put(P + "b", b"2")
    store.put("/other/x", b"not ours")
    sink = RecordingSink()
    syncer = run(store, sink, started)
    assert sink.wait_for(lambda s: s.in_syncs == 1)
    assert sink.events == ["resync", "updates", "in-sync"]
    assert sink.state == {P + "a": b"1", P + "b": b"2"}
    store.put(P + "a", b"1b")
    store.delete(P + "b")
    store.put(P + "c", b"3")
    assert sink.wait_converged(store, P)
    assert sink.in_syncs == 1 and sink.deleted == [P + "b"] and not sink.violations
    assert syncer.status == "in-sync" and syncer.resyncs == 1 and syncer.updates == sink.update_count == 5
    assert syncer.revision == store.revision()


def test_outage_reports_down_and_resyncs_only_the_differences(store: MemoryDatastore,
                                                               started: list[Syncer]) -> None:
    for i in range(5):
        store.put(P + f"k{i}", b"v")
    sink = RecordingSink()
    syncer = run(store, sink, started)
    assert sink.wait_for(lambda s: s.in_syncs == 1)
    store.set_down(True)
    assert sink.wait_for(lambda s: "down" in s.statuses)
    store.set_down(False)
    assert sink.wait_for(lambda s: s.in_syncs == 2)
    assert sink.statuses == ["resync", "down", "resync"]
    assert sink.update_count == 5, "nothing changed during the outage: nothing re-reported"
    assert syncer.resyncs == 2 and syncer.errors >= 1 and not sink.violations


def test_changes_during_a_partition_are_diffed_including_deletions(store: MemoryDatastore,
                                                                    started: list[Syncer]) -> None:
    for i in range(4):
        store.put(P + f"k{i}", b"v0")
    view = Partition(store)
    sink = RecordingSink()
    run(view, sink, started)
    assert sink.wait_for(lambda s: s.in_syncs == 1)
    view.set_cut(True)
    assert sink.wait_for(lambda s: s.statuses[-1:] == ["down"])
    store.delete(P + "k0")
    store.put(P + "k1", b"v1")
    store.put(P + "k9", b"new")
    store.delete(P + "k9")  # born and gone while cut: never reported at all
    store.put(P + "k4", b"v4")
    store.compact(store.revision())
    before = sink.update_count
    view.set_cut(False)
    assert sink.wait_converged(store, P)
    assert sink.update_count - before == 3  # k0 deleted, k1 changed, k4 new
    assert sink.deleted == [P + "k0"] and not sink.violations


def test_compaction_before_the_watch_starts_forces_a_resync(store: MemoryDatastore, started: list[Syncer]) -> None:
    store.put(P + "a", b"1")
    store.put(P + "b", b"1")
    view = Partition(store)
    view.watch_gate.clear()
    sink = RecordingSink()
    syncer = run(view, sink, started)
    assert view.watch_waiting.wait(10), "the syncer never asked for its watch"
    # Between the listing and the watch: history moves on and is compacted away.
    store.delete(P + "a")
    store.put(P + "b", b"2")
    store.compact(store.revision())
    view.watch_gate.set()
    assert sink.wait_converged(store, P)
    assert sink.statuses[:2] == ["resync", "resync"] or sink.statuses == ["resync"]
    assert syncer.resyncs >= 2 and sink.deleted == [P + "a"] and not sink.violations
    assert "down" not in sink.statuses, "compaction is a resync, not an outage"


def test_datastore_down_at_start_keeps_retrying(store: MemoryDatastore, started: list[Syncer]) -> None:
    store.put(P + "a", b"1")
    store.set_down(True)
    sink = RecordingSink()
    syncer = run(store, sink, started)
    assert sink.wait_for(lambda s: "down" in s.statuses)
    assert seconds_until(lambda: syncer.errors >= 3, 30) is not None, "it must keep retrying"
    assert sink.in_syncs == 0 and sink.state == {}
    store.set_down(False)
    assert sink.wait_converged(store, P)
    assert sink.statuses == ["resync", "down", "resync"]


def test_stop_is_prompt_while_watching_and_while_backing_off(store: MemoryDatastore) -> None:
    sink = RecordingSink()
    watching = Syncer(store, P, sink)
    watching.start()
    assert sink.wait_for(lambda s: s.in_syncs == 1)
    watching.stop(timeout=10)
    assert not watching.alive and watching.status == "stopped"
    store.set_down(True)
    backing_off = Syncer(store, P, RecordingSink(), retry_initial=60, retry_max=60)
    backing_off.start()
    assert seconds_until(lambda: backing_off.errors == 1, 30) is not None
    backing_off.stop(timeout=10)
    assert not backing_off.alive


def test_a_failing_sink_is_fatal_not_retried(store: MemoryDatastore) -> None:
    store.put(P + "a", b"1")

    class Broken(RecordingSink):
        def on_updates(self, updates: list[KeyUpdate]) -> None:
            raise RuntimeError("consumer bug")

    died: list[BaseException] = []
    done = threading.Event()
    syncer = Syncer(store, P, Broken(), on_fatal=lambda e: (died.append(e), done.set()))
    syncer.start()
    assert done.wait(10)
    syncer.stop()
    assert isinstance(died[0], RuntimeError) and syncer.fatal is died[0] and not syncer.alive


# -- property: any interleaving of writes, outages and compactions converges --------------------
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcde"), st.binary(max_size=3)),
        st.tuples(st.just("delete"), st.sampled_from("abcde"), st.just(b"")),
        st.tuples(st.sampled_from(["cut", "heal", "compact", "break"]), st.just(""), st.just(b"")),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_history_converges_without_stale_values(history: list[tuple[str, str, bytes]]) -> None:
    store = MemoryDatastore()
    view = Partition(store)
    sink = RecordingSink()
    syncer = Syncer(view, P, sink, retry_initial=0.001, retry_max=0.01)
    syncer.start()
    try:
        for op, key, value in history:
            if op == "put":
                store.put(P + key, value)
            elif op == "delete":
                store.delete(P + key)
            elif op == "cut":
                view.set_cut(True)
            elif op == "heal":
                view.set_cut(False)
            elif op == "compact":
                store.compact(store.revision())
            else:
                store.break_watches()
        view.set_cut(False)
        assert sink.wait_converged(store, P, timeout=20)
        assert not sink.violations
        assert syncer.fatal is None
    finally:
        syncer.stop()

"""l3net.syncer: keeps a consumer's copy of one datastore prefix equal to the datastore.

Snapshot, then watch: the syncer lists the prefix, reports every key, says "in sync", then
follows the watch from the next revision. When the watch is compacted away, breaks, or the
datastore cannot be reached, it says "resync" or "down", waits (bounded backoff with jitter),
lists again and reports only what differs from what it reported before: changed values, and
deletions for keys that vanished meanwhile. The consumer therefore never needs to clear its
state, and never sees a value older than one it has already been given.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from l3net.datastore.base import Datastore, KeyValue, Watch, WatchEvent, check_range
from l3net.errors import Compacted, DatastoreError, DatastoreUnavailable

if TYPE_CHECKING:
    from l3net.viewcache import CachedView, CacheWriter

_log = logging.getLogger(__name__)

STATUS_RESYNC = "resync"
STATUS_DOWN = "down"
STATUS_IN_SYNC = "in-sync"
STATUS_STOPPED = "stopped"


@dataclass(frozen=True)
class KeyUpdate:
    """One key's new value (raw bytes), or ``None`` when it was deleted, as of ``revision``."""

    key: str
    value: bytes | None
    revision: int


class SyncSink(Protocol):
    """The consumer. Called on the syncer's thread, one call at a time, in revision order."""

    def on_updates(self, updates: list[KeyUpdate]) -> None: ...

    def on_in_sync(self) -> None: ...

    def on_status(self, status: str) -> None: ...


def snapshot_diff(known: dict[str, tuple[bytes, int]], kvs: Iterable[KeyValue], revision: int) -> list[KeyUpdate]:
    """What to report after a full listing at ``revision``, given what was reported before (``known``:
    key -> (value, revision)). Pure: changed or new values (with their mod revision) and deletions (at
    ``revision``) for keys that are gone; a key rewritten with the same bytes is not reported."""
    updates: list[KeyUpdate] = []
    seen: set[str] = set()
    for kv in kvs:
        seen.add(kv.key)
        old = known.get(kv.key)
        if old is None or old[0] != kv.value:
            updates.append(KeyUpdate(kv.key, kv.value, kv.mod_revision))
    updates.extend(KeyUpdate(key, None, revision) for key in sorted(known.keys() - seen))
    return updates


def watch_updates(known: dict[str, tuple[bytes, int]], events: Iterable[WatchEvent],
                  floor: int = 0) -> list[KeyUpdate]:
    """What to report for one batch of watch events. Pure. Drops events at or below ``floor`` (the
    revision the view already reflects) or the revision already reported for the key (a replay must
    never move a key backwards), and deletions of keys never reported; keeps each key's last event."""
    latest: dict[str, WatchEvent] = {}
    for ev in events:
        if ev.mod_revision <= floor:
            continue
        prev = latest.get(ev.key)
        if prev is None or ev.mod_revision >= prev.mod_revision:
            latest[ev.key] = ev
    updates: list[KeyUpdate] = []
    for ev in sorted(latest.values(), key=lambda e: (e.mod_revision, e.key)):
        old = known.get(ev.key)
        if old is not None and ev.mod_revision <= old[1]:
            continue
        if ev.type == "delete":
            if old is not None:
                updates.append(KeyUpdate(ev.key, None, ev.mod_revision))
        elif old is None or old[0] != ev.value:
            updates.append(KeyUpdate(ev.key, ev.value if ev.value is not None else b"", ev.mod_revision))
    return updates


def apply_updates(known: dict[str, tuple[bytes, int]], updates: Iterable[KeyUpdate]) -> None:
    """Record ``updates`` as reported (the state ``snapshot_diff``/``watch_updates`` diff against)."""
    for u in updates:
        if u.value is None:
            known.pop(u.key, None)
        else:
            known[u.key] = (u.value, u.revision)


class Syncer:
    """Owns the datastore → consumer feed for one prefix, on its own daemon thread.

    ``before`` cuts the feed short: only the keys under ``prefix`` that sort before it are listed and
    watched (the agent stops at ``status/``: the leased reports every node rewrites would otherwise reach
    every agent).

    Idempotent towards the consumer: it reports only differences from what it reported before,
    per key in increasing revision order. It never gives up on the datastore: every failure (etcd
    down at start, a broken stream, compaction, a refused request) becomes a status report and a
    retry after ``retry_initial`` doubling up to ``retry_max`` seconds, with jitter. A bug (an
    exception that is not a :class:`DatastoreError`, including one raised by the sink) ends the
    thread: it is logged, stored in ``fatal`` and handed to ``on_fatal`` when given.

    Counters for metrics (plain attributes, read from any thread): ``resyncs`` (full listings that
    completed, the first snapshot included), ``updates`` (KeyUpdates reported), ``errors`` (failures
    of any kind), ``status`` (``resync``/``down``/``in-sync``/``stopped``), ``revision`` (the datastore
    revision the consumer's view reflects).
    """

    def __init__(self, ds: Datastore, prefix: str, sink: SyncSink, *, retry_initial: float = 0.1,
                 retry_max: float = 5.0, on_fatal: Callable[[BaseException], None] | None = None,
                 rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic,
                 initial: CachedView | None = None, cache_writer: CacheWriter | None = None,
                 before: str | None = None) -> None:
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError(f"retry_initial={retry_initial}, retry_max={retry_max}: need 0 < initial <= max")
        if before is not None:
            check_range(prefix, before)
        self.ds = ds
        self.prefix = prefix
        self.before = before
        self.sink = sink
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_fatal = on_fatal
        self._rand = rand
        self._clock = clock
        # ``initial``: a cached view the consumer was already given (it started from it), so the first
        # listing reports only what changed since (a cached key outside the range, from an agent that watched
        # more, is reported deleted then); ``cache_writer`` receives every in-sync view.
        self._known: dict[str, tuple[bytes, int]] = dict(initial.entries) if initial is not None else {}
        self._cache_writer = cache_writer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0
        self.resyncs = 0
        self.updates = 0
        self.errors = 0
        self.status = ""
        self.revision = initial.revision if initial is not None else 0
        self.fatal: BaseException | None = None
        self.watch_restarts = 0

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Syncer.start() called twice")
        self._thread = threading.Thread(target=self._main, name=f"l3net-syncer{self.prefix}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread: cancels a running watch at once; a request in flight ends within its timeout."""
        self._stop.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                _log.warning("syncer thread did not stop within %.1fs prefix=%s", timeout, self.prefix)

    def restart_watch(self, reason: str) -> None:
        """Drop the current watch (from any thread): the syncer reports ``down`` and re-lists.

        For a datastore found hung by a probe: its watch is silent but its TCP stays open, so only
        this notices; the re-list fails over to another endpoint or waits for this one to return.
        """
        with self._lock:
            watch = self._watch
        if watch is not None and not self._stop.is_set():
            self.watch_restarts += 1
            _log.warning("restarting the datastore watch prefix=%s reason=%s", self.prefix, reason)
            watch.cancel()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ----------------------------------------------------------
    def _main(self) -> None:
        try:
            self._set_status(STATUS_RESYNC)
            while not self._stop.is_set():
                try:
                    revision = self._resync()
                    self._follow(revision)
                except Compacted as exc:
                    self._failed(STATUS_RESYNC, exc)
                except DatastoreError as exc:
                    self._failed(STATUS_DOWN, exc)
            self.status = STATUS_STOPPED
        except BaseException as exc:
            self.fatal = exc
            self.status = STATUS_STOPPED
            _log.critical("syncer thread died prefix=%s error=%r", self.prefix, exc, exc_info=True)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            else:
                raise

    def _resync(self) -> int:
        """List the prefix, report the differences and in-sync; return the listing's revision."""
        kvs, revision = self.ds.list(self.prefix, before=self.before)
        if revision < self.revision:
            # Only a store restored from a backup goes back in time; the listing is still the truth.
            _log.warning("datastore revision went backwards prefix=%s was=%d now=%d", self.prefix, self.revision,
                         revision)
        if self.status == STATUS_DOWN:
            self._set_status(STATUS_RESYNC)
        updates = snapshot_diff(self._known, kvs, revision)
        self._emit(updates)
        for kv in kvs:  # unchanged values too: the per-key revision floor follows the store
            self._known[kv.key] = (kv.value, kv.mod_revision)
        self.revision = revision
        self.resyncs += 1
        self._save_view()
        self._set_status(STATUS_IN_SYNC)
        self.sink.on_in_sync()
        _log.info("in sync prefix=%s revision=%d keys=%d changed=%d resyncs=%d", self.prefix, revision,
                  len(self._known), len(updates), self.resyncs)
        return revision

    def _follow(self, revision: int) -> None:
        """Watch from ``revision + 1`` until stopped (returns) or the stream fails (raises)."""
        started = self._clock()
        watch = self.ds.watch(self.prefix, revision + 1, before=self.before)
        with self._lock:
            self._watch = watch
        try:
            if self._stop.is_set():
                return
            for batch in watch:
                if self._stop.is_set():
                    return
                if not batch:
                    continue
                self._emit(watch_updates(self._known, batch, floor=self.revision))
                self.revision = max(self.revision, max(ev.mod_revision for ev in batch))
                self._failures = 0
                self._save_view()
            if not self._stop.is_set():
                raise DatastoreUnavailable(self.ds.endpoint, "watch ended")
        finally:
            with self._lock:
                self._watch = None
            watch.cancel()
            # A stream that lived long enough was healthy: the next failure starts the backoff afresh.
            if self._clock() - started >= self.retry_max:
                self._failures = 0

    def _save_view(self) -> None:
        if self._cache_writer is not None:
            self._cache_writer.submit(self._known, self.revision)

    def _emit(self, updates: list[KeyUpdate]) -> None:
        if not updates:
            return
        apply_updates(self._known, updates)
        self.updates += len(updates)
        self.sink.on_updates(updates)

    def _failed(self, status: str, exc: DatastoreError) -> None:
        self.errors += 1
        self._failures += 1
        self._set_status(status)
        delay = self.backoff(self._failures)
        _log.warning("datastore feed interrupted prefix=%s status=%s attempt=%d retry_in=%.3fs error=%s",
                     self.prefix, status, self._failures, delay, exc)
        self._stop.wait(delay)

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the n-th consecutive failure: doubling from ``retry_initial``, capped at
        ``retry_max``, the upper half randomised so that many agents do not re-list in lockstep."""
        ceiling = min(self.retry_max, self.retry_initial * 2 ** min(failures - 1, 32))
        return ceiling / 2 + self._rand() * ceiling / 2

    def _set_status(self, status: str) -> None:
        if status == self.status:
            return
        self.status = status
        if status != STATUS_IN_SYNC:
            self.sink.on_status(status)

"""l3net.datastore.memory: an in-memory Datastore for unit tests only.

It keeps etcd's semantics that the rest of l3net relies on: one global revision,
mod revisions per key, CAS compares, atomic commits, watches from a revision and
compaction. Thread-safe (one lock); watches are fed synchronously on write.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

from l3net.datastore.base import (
    Check,
    CheckPrefix,
    Create,
    Delete,
    KeyValue,
    Op,
    Put,
    Update,
    WatchEvent,
    check_range,
    in_range,
)
from l3net.errors import Compacted, Conflict, DatastoreUnavailable

# Queued to a watch to make its reader raise DatastoreUnavailable (a lost stream).
_BROKEN: list[WatchEvent] = []


class _MemoryWatch:
    """One watch: batches are queued by writers, read by the iterating thread; ``cancel()`` ends it."""

    def __init__(self, store: MemoryDatastore, prefix: str, before: str | None = None):
        self._store = store
        self.prefix = prefix
        self.before = before
        self.queue: queue.Queue[list[WatchEvent] | None] = queue.Queue()

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if batch is _BROKEN:
                raise DatastoreUnavailable(self._store.endpoint, "watch stream lost")
            yield batch

    def cancel(self) -> None:
        self._store._unwatch(self)
        self.queue.put(None)


class _MemoryLease:
    def __init__(self, store: MemoryDatastore, lease_id: int):
        self._store = store
        self.id = lease_id

    def refresh(self) -> None:
        self._store._check_up()

    def revoke(self) -> None:
        self._store._revoke(self.id)


class MemoryDatastore:
    """Implements :class:`l3net.datastore.base.Datastore` in memory (tests only).

    Owns its data under one lock; writers feed watches synchronously. Failures are simulated on
    request: ``set_down`` (every call raises DatastoreUnavailable), ``break_watches``, ``compact``.
    """

    def __init__(self, endpoint: str = "memory://") -> None:
        self.endpoint = endpoint
        self._lock = threading.RLock()
        self._data: dict[str, KeyValue] = {}
        self._rev = 1
        self._compacted = 0
        self._history: list[WatchEvent] = []
        self._watches: list[_MemoryWatch] = []
        self._next_lease = 1
        self.down = False
        # Simulates a hung store (SIGSTOP): probes time out, open watches stay silent, other calls still answer.
        self.hung = False
        self.writes = 0

    # -- helpers for tests -------------------------------------------------
    def set_down(self, down: bool) -> None:
        """Simulate an outage: every call raises DatastoreUnavailable, watches break."""
        self.down = down
        if down:
            self.break_watches()

    def break_watches(self) -> None:
        """Simulate lost watch streams while the store stays up: each open watch raises DatastoreUnavailable."""
        with self._lock:
            for w in self._watches:
                w.queue.put(_BROKEN)
            self._watches.clear()

    @property
    def watch_count(self) -> int:
        """Open watches (a test waits for a consumer to be watching)."""
        with self._lock:
            return len(self._watches)

    def _check_up(self) -> None:
        if self.down:
            raise DatastoreUnavailable(self.endpoint, "connection refused")

    # -- reads -------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        self._check_up()
        with self._lock:
            return self._data.get(key)

    def list(self, prefix: str, *, before: str | None = None) -> tuple[list[KeyValue], int]:
        self._check_up()
        if before is not None:
            check_range(prefix, before)
        with self._lock:
            kvs = [kv for k, kv in sorted(self._data.items()) if in_range(k, prefix, before)]
            return kvs, self._rev

    def revision(self) -> int:
        self._check_up()
        return self._rev

    # -- writes ------------------------------------------------------------
    def probe(self, timeout: float) -> int:
        if self.hung:
            raise DatastoreUnavailable(self.endpoint, f"no answer within {timeout}s (hung)")
        return self.revision()

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.commit([Put(key, value, lease)])

    def create(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.commit([Create(key, value, lease)])

    def update(self, key: str, value: bytes, mod_revision: int) -> int:
        return self.commit([Update(key, value, mod_revision)])

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self._lock:
            existed = key in self._data
            self.commit([Delete(key, mod_revision)])
            return existed

    def commit(self, ops: Sequence[Op]) -> int:
        self._check_up()
        with self._lock:
            for op in ops:
                cur = self._data.get(op.key)
                if isinstance(op, Create) and cur is not None:
                    raise Conflict(f"{op.key} already exists")
                if isinstance(op, Update) and (cur is None or cur.mod_revision != op.mod_revision):
                    raise Conflict(f"{op.key} changed since revision {op.mod_revision}")
                if isinstance(op, Delete) and op.mod_revision is not None and (
                    cur is None or cur.mod_revision != op.mod_revision
                ):
                    raise Conflict(f"{op.key} changed since revision {op.mod_revision}")
                if isinstance(op, Check) and (cur.mod_revision if cur else 0) != op.mod_revision:
                    raise Conflict(f"{op.key} changed since revision {op.mod_revision}")
                if isinstance(op, CheckPrefix) and any(
                        k.startswith(op.key) and kv.mod_revision > op.revision for k, kv in self._data.items()):
                    raise Conflict(f"a key under {op.key} changed since revision {op.revision}")
            self._rev += 1
            events: list[WatchEvent] = []
            for op in ops:
                if isinstance(op, Check | CheckPrefix):
                    continue
                cur = self._data.get(op.key)
                if isinstance(op, Delete):
                    if cur is not None:
                        del self._data[op.key]
                        events.append(WatchEvent("delete", op.key, None, self._rev))
                    continue
                self._data[op.key] = KeyValue(
                    key=op.key,
                    value=op.value,
                    mod_revision=self._rev,
                    create_revision=cur.create_revision if cur else self._rev,
                    version=(cur.version + 1) if cur else 1,
                    lease=op.lease,
                )
                events.append(WatchEvent("put", op.key, op.value, self._rev))
            self.writes += 1
            self._history.extend(events)
            for w in self._watches:
                mine = [e for e in events if in_range(e.key, w.prefix, w.before)]
                if mine:
                    w.queue.put(mine)
            return self._rev

    # -- watch / compaction / leases --------------------------------------
    def watch(self, prefix: str, start_revision: int, *, before: str | None = None) -> _MemoryWatch:
        self._check_up()
        if before is not None:
            check_range(prefix, before)
        with self._lock:
            if start_revision <= self._compacted:
                raise Compacted(self._compacted)
            w = _MemoryWatch(self, prefix, before)
            past = [e for e in self._history
                    if e.mod_revision >= start_revision and in_range(e.key, prefix, before)]
            if past:
                w.queue.put(past)
            self._watches.append(w)
            return w

    def _unwatch(self, w: _MemoryWatch) -> None:
        with self._lock:
            if w in self._watches:
                self._watches.remove(w)

    def compact(self, revision: int) -> None:
        self._check_up()
        with self._lock:
            self._compacted = max(self._compacted, revision)
            self._history = [e for e in self._history if e.mod_revision > revision]

    def grant_lease(self, ttl: int) -> _MemoryLease:
        self._check_up()
        with self._lock:
            lease = _MemoryLease(self, self._next_lease)
            self._next_lease += 1
            return lease

    def _revoke(self, lease_id: int) -> None:
        with self._lock:
            doomed = [k for k, kv in self._data.items() if kv.lease == lease_id]
        if doomed:
            self.commit([Delete(k) for k in doomed])

    def close(self) -> None:
        with self._lock:
            for w in list(self._watches):
                w.cancel()

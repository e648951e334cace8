"""A SyncSink for tests: applies what a Syncer reports to a dict and checks the feed's invariants."""

from __future__ import annotations

import threading
from collections.abc import Callable

from l3net.datastore.base import Datastore
from l3net.syncer import KeyUpdate


class RecordingSink:
    """The consumer's view of one prefix, plus a record of every call.

    ``violations`` collects broken invariants instead of raising on the syncer's thread: a key's
    revision going backwards (a stale value after a newer one) or the deletion of a key never reported.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state: dict[str, bytes] = {}
        self.revs: dict[str, int] = {}
        self.statuses: list[str] = []
        self.events: list[str] = []  # "updates", "in-sync" or a status, in call order
        self.in_syncs = 0
        self.synced = False  # in sync now: after on_in_sync, until the next status
        self.deleted: list[str] = []
        self.update_count = 0
        self.violations: list[str] = []

    def on_updates(self, updates: list[KeyUpdate]) -> None:
        with self.cond:
            for u in updates:
                last = self.revs.get(u.key)
                if last is not None and u.revision <= last:
                    self.violations.append(f"{u.key}: revision {u.revision} after {last}")
                self.revs[u.key] = u.revision
                if u.value is None:
                    if u.key not in self.state:
                        self.violations.append(f"{u.key}: deleted but never reported")
                    self.state.pop(u.key, None)
                    self.deleted.append(u.key)
                else:
                    self.state[u.key] = u.value
            self.update_count += len(updates)
            self.events.append("updates")
            self.cond.notify_all()

    def on_in_sync(self) -> None:
        with self.cond:
            self.in_syncs += 1
            self.synced = True
            self.events.append("in-sync")
            self.cond.notify_all()

    def on_status(self, status: str) -> None:
        with self.cond:
            self.statuses.append(status)
            self.synced = False
            self.events.append(status)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[RecordingSink], bool], timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` holds (a liveness bound, not a speed check)."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def wait_converged(self, ds: Datastore, prefix: str, timeout: float = 30.0) -> bool:
        """Until the view equals the store's current content under ``prefix`` and the feed is in sync."""
        kvs, _ = ds.list(prefix)
        want = {kv.key: kv.value for kv in kvs}
        return self.wait_for(lambda s: s.synced and s.state == want, timeout)

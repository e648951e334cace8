"""felix.syncfallback: a minimal syncer used only while ``l3net.syncer`` does not exist in this build.

TEMPORARY: same contract as ``l3net.syncer.Syncer`` (docs/interfaces.md) so the
agent can run end to end; delete this module once the real syncer lands
(felix.main prefers the real one). Runs on its own thread: list, report every
key, in-sync, then watch from the next revision; on compaction or a lost
connection report ``resync``/``down``, list again (retrying every
``retry`` seconds), report changed and vanished keys, and in-sync again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from l3net.datastore.base import Datastore
from l3net.errors import Compacted, DatastoreError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyUpdate:
    key: str
    value: bytes | None
    revision: int


class Syncer:
    """List + watch of one prefix into a sink; see the module docstring. ``stop()`` ends it."""

    def __init__(self, ds: Datastore, prefix: str, sink: Any, retry: float = 0.5) -> None:
        self.ds = ds
        self.prefix = prefix
        self.sink = sink
        self.retry = retry
        self._stop = threading.Event()
        self._watch: Any = None
        self._known: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="l3net-syncer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.cancel()

    def _list(self) -> int:
        kvs, rev = self.ds.list(self.prefix)
        seen = {kv.key: kv.mod_revision for kv in kvs}
        ups = [KeyUpdate(kv.key, kv.value, kv.mod_revision) for kv in kvs if self._known.get(kv.key) != kv.mod_revision]
        ups += [KeyUpdate(k, None, rev) for k in self._known if k not in seen]
        self._known = seen
        if ups:
            self.sink.on_updates(ups)
        self.sink.on_in_sync()
        return rev

    def _run(self) -> None:
        status = None
        while not self._stop.is_set():
            try:
                if status is not None:
                    self.sink.on_status(status)
                rev = self._list()
                status = None
                self._watch = self.ds.watch(self.prefix, rev + 1)
                for batch in self._watch:
                    if self._stop.is_set():
                        return
                    ups = []
                    for ev in batch:
                        if ev.type == "delete":
                            self._known.pop(ev.key, None)
                            ups.append(KeyUpdate(ev.key, None, ev.mod_revision))
                        else:
                            self._known[ev.key] = ev.mod_revision
                            ups.append(KeyUpdate(ev.key, ev.value, ev.mod_revision))
                    if ups:
                        self.sink.on_updates(ups)
                if self._stop.is_set():
                    return
                status = "down"
            except Compacted:
                status = "resync"
            except DatastoreError as exc:
                if self._stop.is_set():
                    return
                if status is None:
                    _log.warning("datastore lost, resyncing error=%s", exc)
                    self.sink.on_status("down")
                status = "resync"
                self._stop.wait(self.retry)

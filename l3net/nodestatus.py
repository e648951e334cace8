"""l3net.nodestatus: the ``status/<node>/<component>`` records, written by the daemons and read by ``l3netctl``.

- :class:`StatusPublisher` keeps ``status/<node>/agent`` (or ``reflector``) current under a lease, so the key
  vanishes when the daemon dies; the agent and the route reflector both run one;
- :func:`read_quarantined` and :func:`format_quarantined` read back what the agent set aside
  (:mod:`felix.setaside`) for ``l3netctl node status``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from l3net.datastore.base import Datastore
from l3net.errors import DatastoreError
from l3net.keys import KeyLayout

_log = logging.getLogger(__name__)

# Fields that move with every workload anywhere in the cluster (every agent's route count changes when any
# node claims a block): written at most once per BATCH_INTERVAL, like the route counts of the BGP peer
# table. Written at once: every other field (readiness and its reasons, warnings, what was set aside) and
# an extra key's urgent part (a peer's state); they change rarely and an operator waits on them. Every
# write reaches every agent's watch, so per-ADD writes from every node cost N writes and N² events per ADD.
BATCHED_FIELDS = frozenset({"routes", "localEndpoints"})
BATCH_INTERVAL = 5.0
_NOTHING = object()


class StatusPublisher:
    """Keeps ``status/<node>/<component>`` (JSON; ``agent`` or ``reflector``) under a lease of ``ttl`` seconds,
    on its own thread.

    :meth:`update` is safe from any thread. A change of only :data:`BATCHED_FIELDS` waits until
    ``batch_interval`` has passed since the last write; any other change, and a change of an extra
    key's ``urgent_part``, is written at once (with whatever else is pending). Datastore outages are logged and retried;
    the lease is re-granted when it was lost. Never raises into the caller: any
    other exception is a bug and ends the thread, handed to ``on_fatal`` (given to
    :meth:`start`; the agent dies with it) or, without one, raised in the thread.
    """

    def __init__(self, ds: Datastore, keys: KeyLayout, node: str, ttl: int = 30, component: str = "agent",
                 batch_interval: float = BATCH_INTERVAL) -> None:
        self.ds = ds
        self.key = keys.node_status(node, component)
        self.ttl = max(5, ttl)
        self.batch_interval = batch_interval
        self._status: dict[str, Any] = {"node": node}
        self._dirty = threading.Event()
        self._urgent = threading.Event()  # a change that must not wait for the batch interval (or stop)
        self._record_dirty = True
        self._extra_dirty: set[str] = set()
        self._extra_urgent_part: dict[str, object] = {}
        self._last_write = float("-inf")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lease: Any = None
        self._extra: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._run_guarded, name="l3net-status", daemon=True)
        self._on_fatal: Callable[[BaseException], None] | None = None

    def start(self, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        """Start the thread; ``on_fatal(exc)`` is called (from that thread) if it dies of a bug."""
        self._on_fatal = on_fatal
        self._dirty.set()
        self._thread.start()

    def update(self, **fields: Any) -> None:
        with self._lock:
            changed = {k for k, v in fields.items() if self._status.get(k) != v}
            if not changed:
                return
            self._status.update(fields)
            self._record_dirty = True
        if changed - BATCHED_FIELDS:
            self._urgent.set()
        self._dirty.set()

    def put_extra(self, key: str, doc: Mapping[str, Any], *, urgent_part: object = None) -> None:
        """Keep another JSON document (e.g. the BGP peer table) under the same lease; safe from any thread.

        The document is written with an ``updated`` field, the time of that write, as the record is; a
        document equal to the last one given is no change, so a caller that hands over its table on a timer
        writes nothing while the table stands still (every write reaches every watcher of the key).
        ``urgent_part``: the part of ``doc`` an operator waits on (for the peer table: each peer's state, not
        its route counts). A change is written at once when it differs from the last one given for ``key``, and
        otherwise with the next write (at most ``batch_interval`` later). None: every change is written at once.
        """
        doc = dict(doc)
        with self._lock:
            if self._extra.get(key) == doc:
                return
            self._extra[key] = doc
            self._extra_dirty.add(key)
            urgent = urgent_part is None or self._extra_urgent_part.get(key, _NOTHING) != urgent_part
            self._extra_urgent_part[key] = urgent_part
        if urgent:
            self._urgent.set()
        self._dirty.set()

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug, not an outage: the agent must not run on without its status
            _log.critical("status publisher thread died key=%s", self.key, exc_info=True)
            if self._on_fatal is None:
                raise
            self._on_fatal(exc)

    def _run(self) -> None:
        refresh_every = self.ttl / 3
        last_refresh = 0.0
        while not self._stop.is_set():
            self._dirty.wait(timeout=refresh_every)
            if self._stop.is_set():
                break
            try:
                if self._lease is None:
                    self._lease = self.ds.grant_lease(self.ttl)
                    with self._lock:  # the keys went with the old lease: write them all again, now
                        self._record_dirty = True
                        self._extra_dirty = set(self._extra)
                    self._urgent.set()
                    self._dirty.set()
                    last_refresh = time.monotonic()
                elif time.monotonic() - last_refresh >= refresh_every:
                    self._lease.refresh()
                    last_refresh = time.monotonic()
                if self._dirty.is_set():
                    hold = self._last_write + self.batch_interval - time.monotonic()
                    if hold > 0 and not self._urgent.is_set():
                        self._urgent.wait(min(hold, refresh_every))  # an urgent change or stop ends it early
                        continue
                    self._write_pending()
            except (DatastoreError, OSError, ValueError) as exc:
                _log.info("agent status not published (will retry) error=%s", exc)
                self._lease = None
                self._stop.wait(1.0)

    def _write_pending(self) -> None:
        """Write the record and the extra keys that changed since they were last written."""
        self._dirty.clear()
        self._urgent.clear()
        with self._lock:
            now = time.time()
            body = stamped(self._status, now) if self._record_dirty else None
            extra = {key: stamped(self._extra[key], now) for key in self._extra_dirty}
            self._record_dirty, self._extra_dirty = False, set()
        try:
            if body is not None:
                self.ds.put(self.key, body, lease=self._lease.id)
                self._last_write = time.monotonic()
            for key, value in extra.items():
                self.ds.put(key, value, lease=self._lease.id)
        except BaseException:
            with self._lock:  # not written: still pending (the lease is dropped, so all of it is anyway)
                self._record_dirty = self._record_dirty or body is not None
                self._extra_dirty |= set(extra)
            raise

    def stop(self) -> None:
        self._stop.set()
        self._urgent.set()
        self._dirty.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._lease is not None:
            try:
                self._lease.revoke()
            except (DatastoreError, OSError) as exc:
                _log.debug("lease revoke failed error=%s", exc)


def stamped(doc: Mapping[str, Any], now: float) -> bytes:
    """The stored form of a status document: ``doc`` with ``updated`` set to ``now``, as compact sorted JSON."""
    return json.dumps(dict(doc, updated=now), sort_keys=True, separators=(",", ":")).encode()


def read_quarantined(ds: Datastore, keys: KeyLayout, node: str) -> list[dict[str, Any]] | None:
    """The objects set aside (:mod:`felix.setaside`) a node's agent published; None: no record (agent down)."""
    kv = ds.get(keys.node_status(node, "agent"))
    if kv is None:
        return None
    try:
        doc = json.loads(kv.value)
    except ValueError:
        return None
    entries = doc.get("quarantined") if isinstance(doc, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def format_quarantined(node: str, entries: list[dict[str, Any]]) -> str:
    """The text ``l3netctl node status`` prints under the BGP peer table."""
    if not entries:
        return f"Objects set aside on {node}: none"
    lines = [f"Objects set aside on {node} (kernel refused, invalid value or rejected): {len(entries)}"]
    for e in entries:
        lines.append(f"  {e.get('object', '?')}  cause: {e.get('cause', 'kernel refused')}  "
                     f"effect: {e.get('effect', '?')}  reason: {e.get('reason', '?')}")
    return "\n".join(lines)

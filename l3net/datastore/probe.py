"""l3net.datastore.probe: is the datastore answering? Noticed within seconds, also when it hangs.

A stopped etcd (SIGSTOP, a stalled disk, a paused VM) keeps its TCP connections
open: no request fails, watches simply go quiet, and etcd 3.4 sends watch progress
notifications every 10 minutes by default (only the server's own
``--experimental-watch-progress-notify-interval`` changes that; the v3 JSON gateway
forwards them, checked with 1 s, but the etcd is not l3net's to configure). So a cheap read with
a short timeout (:meth:`Datastore.probe`) runs every ``interval`` seconds; after
``failures_to_down`` misses in a row the store is reported down, after one answer it is
reported up again. Worst-case detection: ``failures_to_down * (interval + timeout)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from l3net import metrics
from l3net.datastore.base import Datastore
from l3net.errors import DatastoreError

_log = logging.getLogger(__name__)


class DatastoreProbe:
    """Owns the "datastore reachable" verdict, on its own daemon thread.

    ``on_change(reachable, reason)`` is called on that thread at the first verdict and at
    every change. Never raises into its caller and never ends the process: a datastore
    error is a miss; anything else (a bug in ``on_change``) is logged and the thread goes on.
    """

    def __init__(self, ds: Datastore, on_change: Callable[[bool, str], None], *, interval: float = 1.0,
                 timeout: float = 1.0, failures_to_down: int = 2) -> None:
        if interval <= 0 or timeout <= 0 or failures_to_down < 1:
            raise ValueError(f"interval={interval}, timeout={timeout}, failures_to_down={failures_to_down}: "
                             "need positive values")
        self.ds = ds
        self.on_change = on_change
        self.interval = interval
        self.timeout = timeout
        self.failures_to_down = failures_to_down
        self.reachable: bool | None = None
        self.misses = 0
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="l3net-ds-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def probe_once(self) -> bool | None:
        """One probe; returns the verdict when it changed, else None."""
        try:
            self.ds.probe(self.timeout)
        except DatastoreError as exc:
            self.misses += 1
            metrics.DATASTORE_PROBE_FAILURES.inc()
            self.reason = f"datastore did not answer within {self.timeout:g}s ({self.misses} probes in a row): {exc}"
            if self.misses >= self.failures_to_down and self.reachable is not False:
                return self._set(False)
            return None
        self.misses = 0
        self.reason = ""
        if self.reachable is not True:
            return self._set(True)
        return None

    def _set(self, reachable: bool) -> bool:
        self.reachable = reachable
        metrics.DATASTORE_REACHABLE.set(1 if reachable else 0)
        if reachable:
            _log.info("datastore answers again endpoint=%s", self.ds.endpoint)
        else:
            _log.warning("datastore down or hung endpoint=%s reason=%s", self.ds.endpoint, self.reason)
        try:
            self.on_change(reachable, self.reason)
        except Exception:
            # A bug in the consumer must not stop the probing that reports the datastore's return.
            _log.exception("datastore probe consumer failed reachable=%s", reachable)
        return reachable

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._stop.wait(self.interval)

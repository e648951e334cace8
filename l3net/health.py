"""l3net.health: a daemon's health state and the ``/liveness`` and ``/readiness`` endpoints (agent and reflector).

Ready means: the datastore is in sync and the last dataplane apply succeeded
(plus whatever other reporters, e.g. BGP, add). The readiness body names every
reason the agent is not ready, and under ``warnings`` every condition that does
not make it unready but an operator should see (e.g. routes the kernel refuses).
Live means the sync loop has ticked recently.
The HTTP server runs on its own daemon thread; :class:`HealthState` is safe to
update from any thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_log = logging.getLogger(__name__)


class HealthState:
    """Thread-safe readiness reasons, warnings and a liveness heartbeat."""

    def __init__(self, *, liveness_timeout: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.liveness_timeout = liveness_timeout
        self._not_ready: dict[str, str] = {"datastore": "not in sync yet", "dataplane": "no apply yet"}
        self._warnings: dict[str, str] = {}
        self._last_beat = clock()

    def set_warning(self, component: str, text: str | None) -> None:
        """Show ``text`` under ``warnings`` in the readiness body (None clears it); readiness is unchanged."""
        with self._lock:
            if text:
                self._warnings[component] = text
            else:
                self._warnings.pop(component, None)

    def warnings(self) -> dict[str, str]:
        with self._lock:
            return dict(self._warnings)

    def set_ready(self, component: str, ready: bool, reason: str = "") -> None:
        with self._lock:
            if ready:
                self._not_ready.pop(component, None)
            else:
                self._not_ready[component] = reason or "not ready"

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def readiness(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            return not self._not_ready, dict(self._not_ready)

    def liveness(self) -> tuple[bool, float]:
        with self._lock:
            age = self._clock() - self._last_beat
        return age <= self.liveness_timeout, age


class _Handler(BaseHTTPRequestHandler):
    state: HealthState
    extra: Mapping[str, Callable[[], object]] = {}

    def do_GET(self) -> None:
        ok = True
        body: object
        reader = self.extra.get(self.path.rstrip("/"))
        if reader is not None:
            body = reader()
        elif self.path.rstrip("/") == "/readiness":
            ok, reasons = self.state.readiness()
            warnings = self.state.warnings()
            body = {"ready": ok, "notReady": reasons, **({"warnings": warnings} if warnings else {})}
        elif self.path.rstrip("/") == "/liveness":
            ok, age = self.state.liveness()
            body = {"live": ok, "lastLoopTickSecondsAgo": round(age, 3)}
        else:
            self.send_error(404, "try /liveness, /readiness or " + ", ".join(sorted(self.extra)))
            return
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("health request " + format, *args)


class HealthServer:
    """Serves ``/liveness`` and ``/readiness`` (200 or 503, JSON body) on ``(host, port)``.

    ``extra``: more read-only JSON paths (e.g. ``/debug/traces``), path -> a reader called
    on the server's thread for every request (it must be thread-safe); always 200.
    """

    def __init__(self, state: HealthState, host: str, port: int,
                 extra: Mapping[str, Callable[[], object]] | None = None) -> None:
        handler = type("Handler", (_Handler,), {"state": state, "extra": dict(extra or {})})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="l3net-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""``ip monitor route`` in one namespace, with start and stop synchronised to the kernel's event stream.

A bare monitor races twice on a loaded machine: it may not have subscribed yet when the
test's first route change happens (a missed event makes a "nothing was deleted" check
pass for the wrong reason), and the last events may still sit in its netlink socket when
it is stopped (a "deleted exactly once" check then fails). Both ends are made exact with a
marker route (TEST-NET-2, which no test routes): netlink delivers a namespace's route
events in order, so once the monitor has printed the marker's change, it has printed every
change made before it. Marker lines are left out of the result.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import Any

_log = logging.getLogger(__name__)

MARK = "198.51.100.254"


class RouteMonitor:
    """Owns one ``ip -n NS monitor route`` process and the thread reading it.

    Raises AssertionError if the monitor does not report the marker route within ``timeout``
    (it never subscribed, or the namespace is gone).
    """

    def __init__(self, ns: str, factory: Any = None, timeout: float = 20.0) -> None:
        self.ns = ns
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(["ip", "-n", ns, "monitor", "route"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        if factory is not None:
            factory.pids.append(self.proc.pid)
        self._thread = threading.Thread(target=self._read, name=f"route-monitor-{ns}", daemon=True)
        self._thread.start()
        # Subscribed once a marker change shows up; repeat it, since changes before the subscription are lost.
        self._barrier(timeout, repeat=True)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def _marks_deleted(self) -> int:
        with self._lock:
            return sum(1 for x in self._lines if x.startswith("Deleted") and MARK in x)

    def _flip_marker(self) -> None:
        subprocess.run(["ip", "-n", self.ns, "route", "replace", "blackhole", f"{MARK}/32"], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.ns, "route", "del", "blackhole", f"{MARK}/32"], check=True, timeout=30)

    def _barrier(self, timeout: float, repeat: bool) -> None:
        seen = self._marks_deleted()
        deadline = time.monotonic() + timeout
        self._flip_marker()
        last_flip = time.monotonic()
        while self._marks_deleted() == seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"ip monitor in {self.ns} did not report the marker route within {timeout}s")
            if repeat and time.monotonic() - last_flip > 0.2:
                self._flip_marker()
                last_flip = time.monotonic()
            time.sleep(0.01)

    def lines(self) -> list[str]:
        """Every non-marker line reported so far."""
        with self._lock:
            return [x for x in self._lines if x.strip() and MARK not in x]

    def stop(self, timeout: float = 20.0) -> list[str]:
        """Wait until every route change made before this call has been read, then end the monitor."""
        try:
            self._barrier(timeout, repeat=False)
        finally:
            self.proc.kill()
            self.proc.wait(10)
            self._thread.join(10)
        return self.lines()


def forwarding_changes(lines: list[str]) -> list[str]:
    """The monitored lines less the kernel's own address bookkeeping: the ``table local``, ``proto kernel``
    routes it adds when an interface's address becomes usable (an IPv6 link-local address after duplicate
    address detection, a second or more after the link came up). No l3net component writes or removes
    those, so a "not one route changed" check must not count them."""
    return [x for x in lines if not (" table local " in x and " proto kernel " in x)]


def deleted(lines: list[str], prefix: str) -> list[str]:
    """The monitored lines that delete a route to ``prefix``."""
    return [x for x in lines if x.startswith("Deleted") and prefix in x.split()]

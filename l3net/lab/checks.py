"""l3net.lab.checks: how the lab, the demo and the benchmarks wait for a condition and probe a path.

Lab-side helpers (the agent never polls or pings): :func:`wait_for` polls until a condition holds and
raises TimeoutError naming what it waited for; :func:`ping` asks whether an address answers from inside
a namespace. Tests wait with ``tests.waiting`` (it fails the test instead).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from l3net.netns import nsenter_cmd

__all__ = ["ping", "wait_for"]

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy and return that; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def ping(netns: str, ip: str, count: int = 1, timeout: float = 2) -> bool:
    """Whether ``ip`` answers a ping sent from inside ``netns`` (name or path; IPv4 or IPv6).

    Sends ``count`` echo requests and waits ``timeout`` seconds for each reply; True on any reply.
    """
    cmd = nsenter_cmd(netns, ["ping", "-q", "-n", "-c", str(count), "-W", f"{timeout:g}", ip])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=count + timeout + 5)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0

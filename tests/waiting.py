"""tests.waiting: the one way a test waits for a condition (polling, never a timed assert).

The machine is shared and slow at times, so a test states how long it is willing to wait (a liveness
bound) and polls; it never asserts that something happened within a tight time. Three shapes of one
loop:

- :func:`wait_for` returns the condition's first truthy value, or fails the test naming ``what``;
- :func:`seconds_until` returns how long the condition took, or None (for tests that measure, or
  that report a timeout with their own message);
- :func:`wait_for_async` is :func:`wait_for` for a test running an asyncio loop (it yields between
  polls, so the loop's own tasks make progress); it returns the seconds taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["seconds_until", "wait_for", "wait_for_async"]

T = TypeVar("T")


def _poll(cond: Callable[[], T], timeout: float, step: float) -> tuple[T, float] | None:
    """(first truthy value, seconds taken), or None when ``timeout`` passed first."""
    start = time.monotonic()
    while True:
        value = cond()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)


def wait_for(cond: Callable[[], T], timeout: float = 15.0, what: str = "condition", step: float = 0.05) -> T:
    """Poll ``cond`` until it returns something truthy and return that; AssertionError naming ``what``."""
    got = _poll(cond, timeout, step)
    if got is None:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return got[0]


def seconds_until(cond: Callable[[], object], timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``cond()`` held (polled every ``step``), or None after ``timeout``."""
    got = _poll(cond, timeout, step)
    return None if got is None else got[1]


async def wait_for_async(cond: Callable[[], object], timeout: float, what: str, step: float = 0.005) -> float:
    """Seconds until ``cond()`` held, polled between asyncio sleeps; AssertionError naming ``what``."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start

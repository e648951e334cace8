"""tests.fakes.clock: a monotonic clock that moves only when the test moves it."""

from __future__ import annotations


class FakeClock:
    """A ``time.monotonic`` stand-in: calling it returns ``now``; :meth:`step` (or assigning ``now``) moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> float:
        """Move time forward by ``seconds`` and return the new time."""
        self.now += seconds
        return self.now

"""bgp.graceful_restart: the receiving side of BGP graceful restart (RFC 4724) as a pure state machine.

One :class:`RestartMachine` per speaker holds, per peer, whether its routes are kept through a
restart and until when. Time comes from an injected clock (a callable returning monotonic
seconds); nothing here sleeps or schedules: the speaker asks :meth:`RestartMachine.next_deadline`
when to wake and then calls :meth:`RestartMachine.expired`. What the machine decides, the speaker
does to the RIB (mark stale, sweep, drop).

Rules (as the speaker applied them before this module existed):

- a session that was up drops without a NOTIFICATION, the peer's last OPEN carried the capability
  for the peer's family and our side has it on: KEEP the routes (stale) for the peer's restart
  time, capped by ours; a NOTIFICATION (hold timer expiry included) or graceful restart off on
  either side: DROP them at once (ending a hold in progress);
- the session comes back while routes are held: if the new OPEN says forwarding was not kept
  for the family (or the capability is gone, or ours is off now), SWEEP now; else the restart
  timer stops and the stale routes WAIT for End-of-RIB, bounded by our restart time;
- End-of-RIB from a held peer: SWEEP;
- the deadline passes: SWEEP (``expired``);
- our own ExaBGP stops: every peer that was up with the capability is KEPT for our restart time;
  a peer already held stays held; the others are DROPPED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bgp.events import GracefulRestartCap

KEEP, DROP, SWEEP, WAIT, NOTHING = "keep", "drop", "sweep", "wait", "nothing"


@dataclass(frozen=True)
class PeerRestart:
    """Our side's graceful-restart settings for one peer."""

    enabled: bool
    restart_time: float
    afi: str = "ipv4"

    @property
    def family(self) -> str:
        return f"{self.afi} unicast"


@dataclass(frozen=True)
class Verdict:
    """What to do with a peer's routes: KEEP/WAIT (until ``deadline``), DROP, SWEEP or NOTHING."""

    action: str
    seconds: float = 0.0
    reason: str = ""


def retention(settings: PeerRestart, cap: GracefulRestartCap | None, reason: str) -> float:
    """Seconds to keep a peer's routes after its session dropped for ``reason`` (0: drop them now)."""
    if not settings.enabled or cap is None or settings.family not in cap.families:
        return 0.0
    if "notification" in reason.lower():
        return 0.0  # RFC 4724 §4.2 covers a TCP loss only; a NOTIFICATION (hold timer too) ends the routes
    return float(min(cap.time, settings.restart_time))


class RestartMachine:
    """Per-peer hold deadlines on an injected monotonic clock. Not thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._deadline: dict[str, float] = {}

    def holding(self, peer: str) -> bool:
        return peer in self._deadline

    def deadline(self, peer: str) -> float | None:
        return self._deadline.get(peer)

    def next_deadline(self) -> float | None:
        return min(self._deadline.values(), default=None)

    def session_down(self, peer: str, settings: PeerRestart, cap: GracefulRestartCap | None,
                     reason: str) -> Verdict:
        """An established session dropped for ``reason``: KEEP (the hold starts) or DROP (any hold ends)."""
        seconds = retention(settings, cap, reason)
        if seconds > 0:
            self._deadline[peer] = self.clock() + seconds
            return Verdict(KEEP, seconds, reason)
        self._deadline.pop(peer, None)
        return Verdict(DROP, 0.0, reason)

    def session_up(self, peer: str, settings: PeerRestart, cap: GracefulRestartCap | None) -> Verdict:
        """The session of a peer is established again: SWEEP now, WAIT for End-of-RIB, or NOTHING held."""
        if peer not in self._deadline:
            return Verdict(NOTHING)
        if cap is None or settings.family not in cap.forwarding or not settings.enabled:
            del self._deadline[peer]
            return Verdict(SWEEP, 0.0, "capability")
        # RFC 4724 §4.2: the restart timer stops; the stale routes go at End-of-RIB, bounded by our restart time
        self._deadline[peer] = self.clock() + settings.restart_time
        return Verdict(WAIT, settings.restart_time, "eor")

    def end_of_rib(self, peer: str) -> Verdict:
        """End-of-RIB: SWEEP what is still stale if the peer was held."""
        if self._deadline.pop(peer, None) is None:
            return Verdict(NOTHING)
        return Verdict(SWEEP, 0.0, "eor")

    def end(self, peer: str) -> bool:
        """Stop holding ``peer`` (BFD down, NOTIFICATION, removal); True if it was held."""
        return self._deadline.pop(peer, None) is not None

    def own_restart(self, peer: str, settings: PeerRestart, cap: GracefulRestartCap | None,
                    was_up: bool) -> Verdict:
        """Our ExaBGP stopped (every session with it): KEEP, NOTHING (already held) or DROP."""
        if was_up and settings.enabled and cap is not None:
            self._deadline[peer] = self.clock() + settings.restart_time
            return Verdict(KEEP, settings.restart_time, "ExaBGP restarting")
        if peer in self._deadline:
            return Verdict(NOTHING)
        return Verdict(DROP, 0.0, "ExaBGP restarting")

    def expired(self) -> list[str]:
        """Peers whose hold deadline has passed (no longer held): their stale routes are to be swept."""
        now = self.clock()
        due = sorted(p for p, d in self._deadline.items() if d <= now)
        for p in due:
            del self._deadline[p]
        return due

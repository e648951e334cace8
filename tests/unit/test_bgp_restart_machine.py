"""bgp.graceful_restart: the pure restart machine on a fake clock, golden outcomes per event sequence."""

from __future__ import annotations

import pytest

from bgp.events import GracefulRestartCap
from bgp.graceful_restart import (
    DROP,
    KEEP,
    NOTHING,
    SWEEP,
    WAIT,
    PeerRestart,
    RestartMachine,
    Verdict,
    retention,
)
from tests.fakes.clock import FakeClock

pytestmark = pytest.mark.unit

P, Q = "10.0.0.1", "10.0.0.2"
V4 = frozenset({"ipv4 unicast"})
CAP = GracefulRestartCap(30, True, V4, V4)            # 30 s, forwarding kept
NO_FWD = GracefulRestartCap(30, False, V4, frozenset())
ON = PeerRestart(True, 120.0)


def test_retention_is_the_peer_time_capped_by_ours_and_zero_on_notification_or_off() -> None:
    assert retention(ON, CAP, "closing connection") == 30.0
    assert retention(PeerRestart(True, 10.0), CAP, "closing connection") == 10.0
    assert retention(ON, CAP, "notification sent (4,0)") == 0.0
    assert retention(PeerRestart(False, 120.0), CAP, "closing connection") == 0.0
    assert retention(ON, None, "closing connection") == 0.0
    assert retention(PeerRestart(True, 120.0, "ipv6"), CAP, "closing connection") == 0.0


def test_tcp_loss_keeps_until_the_restart_timer_then_sweeps() -> None:
    clock = FakeClock()
    m = RestartMachine(clock)
    assert m.session_down(P, ON, CAP, "closing connection") == Verdict(KEEP, 30.0, "closing connection")
    assert m.next_deadline() == 1030.0
    clock.now = 1029.9
    assert m.expired() == [] and m.holding(P)
    clock.now = 1030.0
    assert m.expired() == [P]
    assert not m.holding(P) and m.next_deadline() is None
    assert m.expired() == []


def test_back_with_forwarding_waits_for_end_of_rib_which_sweeps() -> None:
    clock = FakeClock()
    m = RestartMachine(clock)
    m.session_down(P, ON, CAP, "closing connection")
    clock.now = 1010.0
    assert m.session_up(P, ON, CAP) == Verdict(WAIT, 120.0, "eor")
    assert m.deadline(P) == 1130.0, "the restart timer stops; End-of-RIB is awaited up to our restart time"
    clock.now = 1050.0
    assert m.expired() == []
    assert m.end_of_rib(P) == Verdict(SWEEP, 0.0, "eor")
    assert m.end_of_rib(P) == Verdict(NOTHING) and m.next_deadline() is None


def test_back_without_forwarding_sweeps_at_once() -> None:
    m = RestartMachine(FakeClock())
    m.session_down(P, ON, CAP, "closing connection")
    assert m.session_up(P, ON, NO_FWD) == Verdict(SWEEP, 0.0, "capability")
    assert not m.holding(P)
    assert m.session_up(P, ON, CAP) == Verdict(NOTHING), "nothing held, nothing to do"


def test_notification_drops_and_ends_a_hold_in_progress() -> None:
    m = RestartMachine(FakeClock())
    assert m.session_down(P, ON, CAP, "notification received (6,2)") == Verdict(DROP, 0.0,
                                                                                "notification received (6,2)")
    m.session_down(P, ON, CAP, "closing connection")
    assert m.session_down(P, ON, CAP, "notification sent (4,0)").action == DROP
    assert not m.holding(P)


def test_own_restart_keeps_up_peers_with_the_capability_and_the_earliest_deadline_wakes_first() -> None:
    clock = FakeClock()
    m = RestartMachine(clock)
    assert m.own_restart(P, ON, CAP, was_up=True) == Verdict(KEEP, 120.0, "ExaBGP restarting")
    assert m.own_restart(Q, ON, None, was_up=True).action == DROP
    clock.now = 1060.0
    m.session_down(Q, ON, CAP, "closing connection")
    assert m.own_restart(Q, ON, CAP, was_up=False) == Verdict(NOTHING), "already held: stays held"
    assert m.next_deadline() == 1090.0
    clock.now = 1090.0
    assert m.expired() == [Q]
    clock.now = 1120.0
    assert m.expired() == [P]
    assert m.end(P) is False

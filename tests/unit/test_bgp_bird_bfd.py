"""bgp.bird_bfd: BIRD's `show bfd sessions` polls folded into status rows, transitions and down events."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from bgp.bird_bfd import BIRD_DIAG, BirdBfdTracker
from bgp.bird_control import BfdSessionState

pytestmark = pytest.mark.unit

PEER = "10.0.0.11"


def row(state: str, since: float, interface: str = "eth0") -> dict[str, BfdSessionState]:
    return {PEER: BfdSessionState(PEER, interface, state, since, 0.3, 0.9)}


def downs(node: str) -> float | None:
    return REGISTRY.get_sample_value("l3net_bfd_down_events_total", {"node": node, "peer": PEER, "diag": BIRD_DIAG})


def test_polls_count_transitions_and_down_events() -> None:
    t = BirdBfdTracker("bird-t1")
    t.update({PEER}, {})
    assert [(s.peer, s.state) for s in t.status()] == [(PEER, "down")], "configured but not listed yet: down"
    t.update({PEER}, row("up", 10.0))
    t.update({PEER}, row("up", 10.0))   # the same poll again changes nothing
    (s,) = t.status()
    assert (s.state, s.transitions, s.down_events, s.tx_interval_ms, s.detection_time_ms, s.multihop) == (
        "up", 1, 0, 300.0, 900.0, False)
    t.update({PEER}, row("down", 20.0))
    (s,) = t.status()
    assert (s.state, s.transitions, s.down_events, s.since) == ("down", 2, 1, 20.0)
    assert downs("bird-t1") == 1
    assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                     {"node": "bird-t1", "peer": PEER, "state": "down"}) == 1
    t.update({PEER}, row("up", 25.0))
    t.update({PEER}, row("up", 31.0))   # down and up again between two polls: Since moved while Up
    (s,) = t.status()
    assert (s.state, s.transitions, s.down_events) == ("up", 5, 2)
    assert downs("bird-t1") == 2


def test_unconfigured_peer_is_dropped_with_its_series() -> None:
    t = BirdBfdTracker("bird-t2")
    t.update({PEER}, row("up", 1.0, interface="---"))
    assert t.status()[0].multihop
    t.update(set(), row("up", 1.0))
    assert t.status() == []
    assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                     {"node": "bird-t2", "peer": PEER, "state": "up"}) is None

"""bgp.bird_bfd: BIRD's `show bfd sessions` polls folded into status rows, transitions and down events."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bgp.bird_bfd import BIRD_DIAG, BirdBfdTracker
from bgp.bird_control import BfdSessionState
from bgp.bird_engine import BirdEngine
from bgp.view import build_node_view
from tests.unit.bgp_builders import CLIENTS, RRS, TO_RR, cfg

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


def test_birds_millisecond_since_jitter_is_not_a_flap() -> None:
    """CI saw BIRD print an unchanged Up session's Since 1 ms later; that is no down event."""
    t = BirdBfdTracker("bird-t3")
    t.update({PEER}, row("up", 610.649))
    t.update({PEER}, row("up", 610.650))
    (s,) = t.status()
    assert (s.state, s.transitions, s.down_events) == ("up", 0, 0)
    assert downs("bird-t3") is None
    t.update({PEER}, row("up", 612.0))   # a real flap between polls moves it by seconds
    (s,) = t.status()
    assert (s.transitions, s.down_events) == (2, 1)


def test_unconfigured_peer_is_dropped_with_its_series() -> None:
    t = BirdBfdTracker("bird-t2")
    t.update({PEER}, row("up", 1.0, interface="---"))
    assert t.status()[0].multihop
    t.update(set(), row("up", 1.0))
    assert t.status() == []
    assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                     {"node": "bird-t2", "peer": PEER, "state": "up"}) is None


def test_engine_decides_each_bfd_peers_hop_once_before_any_apply(tmp_path: Path) -> None:
    """The kernel is asked once per new BFD peer (in executor threads); only then is `direct` rendered."""
    asked: list[str] = []

    def is_direct(addr: str) -> bool:
        asked.append(addr)
        return addr != "10.0.0.12"   # n2 sits behind a router

    bfd_on = cfg(nodeToNodeMeshEnabled=False, bfd={"enabled": True})
    view = build_node_view("rr1", [*CLIENTS, *RRS], [bfd_on], [TO_RR])
    engine = BirdEngine("rr1", tmp_path, is_direct=is_direct)

    async def scenario() -> None:
        engine.set_view(view)
        assert engine._desired is not None and "direct;" not in engine._desired.text, "nothing known yet"
        await engine._resolve_hops()
        text = engine._desired.text
        blocks = {b.split()[0]: b for b in text.split("protocol bgp ")[1:]}
        assert "direct;" in blocks["Node_10_0_0_11"] and "direct;" in blocks["Node_10_0_0_13"]
        assert "direct;" not in blocks["Node_10_0_0_12"], "routed peer: multihop BFD"
        assert "direct;" in blocks["Node_10_0_0_3"], "the other reflector (iBGP non-client) on the link"
        assert sorted(asked) == ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.3"]
        last = view.peers[-1].address
        engine.set_view(dataclasses.replace(view, peers=view.peers[:-1]))
        await engine._resolve_hops()
        assert len(asked) == 4, "known peers are not asked again"
        engine.set_view(view)
        await engine._resolve_hops()
        assert asked[4:] == [last], "a peer removed and added again is a new peer"

    asyncio.run(scenario())

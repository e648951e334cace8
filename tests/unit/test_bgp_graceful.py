"""Graceful restart, receiving and restarting side (RFC 4724): Rib stale marks, OPEN parsing, Speaker decisions.

The Speaker is fed ExaBGP's JSON lines (the shapes ExaBGP 5.0.15 prints, built by tests.fakes.exabgp
through tests.unit.speaker_feed) without a process; the integration tests run the same with real ExaBGP and BIRD.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bgp.events import Announce, GracefulRestartCap, OpenEvent, PathAttrs, UpdateEvent, parse_line
from bgp.rib import Rib
from tests.fakes import exabgp
from tests.unit.speaker_feed import FROM_PEER, GR_CAP, HOLD_TIME, ME, PEER, A, B, session, speaker

pytestmark = pytest.mark.unit


def upd(peer: str, *prefixes: str, withdraw: tuple[str, ...] = ()) -> UpdateEvent:
    return UpdateEvent(peer, None, tuple(Announce(p, peer, PathAttrs()) for p in prefixes), withdraw, 64512, 64512)


def test_rib_keeps_stale_paths_until_swept_and_revalidates_on_reannounce() -> None:
    r = Rib(local_as=64512, router_id=ME)
    r.apply(upd(PEER, A, B))
    assert r.mark_stale(PEER) == 2
    assert r.best_routes() == {A: [PEER], B: [PEER]}, "stale paths still forward"
    assert r.apply(upd(PEER, A)) == set(), "same path again: no change, but fresh now"
    assert r.stale(PEER) == {B}
    assert r.sweep_stale(PEER) == {B}
    assert r.best_routes() == {A: [PEER]} and r.stale(PEER) == set()
    r.mark_stale(PEER)
    assert r.apply(upd(PEER, withdraw=(A,))) == {A} and r.stale(PEER) == set()
    assert r.mark_stale("10.9.9.9") == 0, "nothing learned, nothing kept"
    r.apply(upd(PEER, A))
    r.mark_stale(PEER)
    assert r.drop_peer(PEER) == {A} and r.stale_count() == 0


def test_open_parsing_reads_exabgp_flags() -> None:
    ev = parse_line(FROM_PEER.open(GR_CAP, hold_time=HOLD_TIME))
    assert ev == OpenEvent(PEER, PEER, HOLD_TIME, GracefulRestartCap(30, True, frozenset({"ipv4 unicast"}),
                                                             frozenset({"ipv4 unicast"})))
    no_fwd = exabgp.graceful_restart(120, restart_state=False, families=["ipv4/unicast"], forwarding=[])
    ev2 = parse_line(FROM_PEER.open(no_fwd, hold_time=HOLD_TIME))
    assert isinstance(ev2, OpenEvent) and ev2.graceful_restart == GracefulRestartCap(
        120, False, frozenset({"ipv4 unicast"}), frozenset())
    ev3 = parse_line(FROM_PEER.open(exabgp.multiprotocol("ipv4/unicast"), hold_time=HOLD_TIME))
    assert isinstance(ev3, OpenEvent) and ev3.graceful_restart is None
    malformed = {"64": {"name": "graceful restart", "time": "x"}}  # a time that is no number (not printed by ExaBGP)
    assert parse_line(FROM_PEER.open(malformed, hold_time=HOLD_TIME)).graceful_restart is None  # type: ignore[union-attr]


def test_speaker_keeps_routes_of_a_restarting_peer_and_sweeps_on_eor(tmp_path: Path) -> None:
    async def scenario() -> None:
        sp, learned, converged = speaker(tmp_path)
        session(sp)
        sp.feed(FROM_PEER.announce(A, B))
        sp.feed(FROM_PEER.eor())
        assert converged == [True] and sp.converged
        assert sp.best_routes() == {A: [PEER], B: [PEER]}
        n_learned = len(learned)
        sp.feed(FROM_PEER.down("closing connection"))  # TCP gone: the peer restarts
        sp.feed(FROM_PEER.connected())
        sp.feed(FROM_PEER.down("closing connection"))  # reconnect attempts while it is away
        assert sp.best_routes() == {A: [PEER], B: [PEER]} and len(learned) == n_learned, "nothing withdrawn"
        row = sp.peer_status()[0]
        assert row.state == "down" and row.stale == 2 and row.info.startswith("Graceful restart")
        session(sp)
        sp.feed(FROM_PEER.announce(A))                 # it no longer has B
        assert sp.best_routes() == {A: [PEER], B: [PEER]}, "B stays until End-of-RIB"
        sp.feed(FROM_PEER.eor())
        assert sp.best_routes() == {A: [PEER]} and learned[-1] == {A: [PEER]}
        assert sp.peer_status()[0].stale == 0
        await sp.stop()
    asyncio.run(scenario())


@pytest.mark.parametrize("reason", ["notification sent (4,0)", "notification received (6,2) peer de-configured"])
def test_notification_and_hold_timer_drop_routes_at_once(tmp_path: Path, reason: str) -> None:
    async def scenario() -> None:
        sp, _, _ = speaker(tmp_path)
        session(sp)
        sp.feed(FROM_PEER.announce(A))
        sp.feed(FROM_PEER.down(reason))
        assert sp.best_routes() == {}
        await sp.stop()
    asyncio.run(scenario())


def test_without_graceful_restart_routes_go_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        sp, _, _ = speaker(tmp_path, gracefulRestart=False)      # our side off
        session(sp)
        sp.feed(FROM_PEER.announce(A))
        sp.feed(FROM_PEER.down("closing connection"))
        assert sp.best_routes() == {}
        sp2, _, _ = speaker(tmp_path / "b")                       # the peer did not offer it
        session(sp2, caps=exabgp.multiprotocol("ipv4/unicast"))
        sp2.feed(FROM_PEER.announce(A))
        sp2.feed(FROM_PEER.down("closing connection"))
        assert sp2.best_routes() == {}
        await sp.stop()
        await sp2.stop()
    asyncio.run(scenario())


def test_restart_timer_sweeps_and_lost_forwarding_state_sweeps_on_reconnect(tmp_path: Path) -> None:
    async def scenario() -> None:
        # 2 s, checked at 0.5 s: a starved process (loaded CI) wakes to both deadlines at once and the timer's
        # sweep runs first, so the "kept" check needs slack; the sweep is then waited for, not slept for.
        sp, _, _ = speaker(tmp_path, restartTime="2s")
        session(sp)
        sp.feed(FROM_PEER.announce(A))
        sp.feed(FROM_PEER.down("closing connection"))
        await asyncio.sleep(0.5)
        assert sp.best_routes() == {A: [PEER]}, "kept within the restart time"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while sp.best_routes() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert sp.best_routes() == {}, "swept when the restart time expired"
        # back, but its new OPEN says forwarding was not preserved: stale routes go on reconnect
        session(sp)
        sp.feed(FROM_PEER.announce(A))
        sp.feed(FROM_PEER.down("closing connection"))
        no_fwd = exabgp.graceful_restart(30, restart_state=True, families=["ipv4/unicast"], forwarding=[])
        session(sp, caps=no_fwd)
        assert sp.best_routes() == {}
        await sp.stop()
    asyncio.run(scenario())

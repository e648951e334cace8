"""Speaker.bfd_down: a BFD-detected failure drops that peer's routes at once, graceful restart or not,
and ECMP keeps the other next hops. The Speaker is fed ExaBGP's JSON lines (tests.fakes.exabgp) without a
process, as in test_bgp_graceful; the netns tests run the same with real ExaBGP, BIRD and FRR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bgp.commands import teardown_command
from bgp.speaker import Speaker
from bgp.view import build_node_view
from l3net.model.resource import Resource
from tests.fakes import exabgp
from tests.unit.speaker_feed import GR_CAP

pytestmark = pytest.mark.unit

ME, P1, P2 = "10.0.0.2", "10.0.0.1", "10.0.0.3"
ANY = "10.244.9.0/26"  # announced by both peers: ECMP
ONLY1 = "10.244.1.0/26"

NODES = [Resource("Node", n, {"bgp": {"ipv4Address": f"{ip}/24"}}) for n, ip in (("n1", P1), ("n2", ME), ("n3", P2))]
FROM = {p: exabgp.Neighbor(local=ME, peer=p, local_as=64512, peer_as=64512) for p in (P1, P2)}


def _up(sp: Speaker, peer: str) -> None:
    sp.feed(FROM[peer].connected())
    sp.feed(FROM[peer].open(GR_CAP, hold_time=90))
    sp.feed(FROM[peer].up())


def test_bfd_down_drops_routes_without_graceful_restart_and_keeps_ecmp_siblings(tmp_path: Path) -> None:
    async def scenario() -> None:
        learned: list[dict[str, list[str]]] = []
        sp = Speaker("n2", tmp_path, on_learned=learned.append)
        cfg = Resource("BGPConfiguration", "default", {"bfd": {"enabled": True}})
        sp.set_view(build_node_view("n2", NODES, [cfg], []))
        _up(sp, P1)
        _up(sp, P2)
        sp.feed(FROM[P1].announce(ANY, ONLY1))
        sp.feed(FROM[P2].announce(ANY))
        assert sp.best_routes() == {ANY: [P1, P2], ONLY1: [P1]}
        sp.bfd_down(P1, "BFD down (detection_time_expired)")
        assert sp.best_routes() == {ANY: [P2]}, "P1's paths go at once; P2 still carries the shared prefix"
        assert learned[-1] == {ANY: [P2]}
        row = next(r for r in sp.peer_status() if r.address == P1)
        assert row.info == "BFD down (detection_time_expired)" and row.stale == 0
        # ExaBGP then reports the session down (our teardown): no graceful-restart hold brings anything back.
        sp.feed(FROM[P1].down("notification sent (6,6)"))
        assert sp.best_routes() == {ANY: [P2]}
        # BFD back: nothing happens until BGP is up and the peer re-sends its routes.
        _up(sp, P1)
        assert sp.best_routes() == {ANY: [P2]}
        sp.feed(FROM[P1].announce(ANY, ONLY1))
        assert sp.best_routes() == {ANY: [P1, P2], ONLY1: [P1]}
        sp.bfd_down("10.9.9.9", "BFD down")  # not a peer: ignored
        await sp.stop()
    asyncio.run(scenario())


def test_bfd_down_ends_a_graceful_restart_hold(tmp_path: Path) -> None:
    async def scenario() -> None:
        sp = Speaker("n2", tmp_path)
        sp.set_view(build_node_view("n2", NODES, [], []))
        _up(sp, P1)
        sp.feed(FROM[P1].announce(ONLY1))
        sp.feed(FROM[P1].down("closing connection"))
        assert sp.best_routes() == {ONLY1: [P1]}, "kept stale through the peer's restart"
        sp.bfd_down(P1, "BFD down (detection_time_expired)")
        assert sp.best_routes() == {}, "a BFD-detected failure is not a restart: the stale routes go"
        await sp.stop()
    asyncio.run(scenario())


def test_teardown_command() -> None:
    assert teardown_command("10.0.0.1", 6) == "neighbor 10.0.0.1 teardown 6"
    assert teardown_command("fd00::0001", 2) == "neighbor fd00::1 teardown 2"
    with pytest.raises(ValueError, match=r"^subcode"):
        teardown_command("10.0.0.1", 0)
    with pytest.raises(ValueError):
        teardown_command("10.0.0.1; shutdown", 6)

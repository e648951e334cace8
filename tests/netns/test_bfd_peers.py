"""bgp.bfd.peers on real sockets in two namespaces: sessions follow the BGP view, a path failure tells BGP,
a deliberate AdminDown does not, timer changes are negotiated live, and single hop vs multihop comes from
the kernel's route to the peer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bgp.bfd.packet import Diag, State
from bgp.bfd.peers import BfdPeers, kernel_is_direct
from bgp.bfd.session import SessionConfig
from bgp.bfd.speaker import BfdSpeaker, PeerKey
from bgp.view import NodeBGPView, build_node_view
from l3net import netns
from l3net.model.resource import Resource
from tests.netns_fixtures import NetnsFactory

pytestmark = pytest.mark.netns

A, B = "10.79.0.1", "10.79.0.2"
NODES = [Resource("Node", "a", {"bgp": {"ipv4Address": f"{A}/24"}}),
         Resource("Node", "b", {"bgp": {"ipv4Address": f"{B}/24"}})]


class RecordingBgp:
    """Stands in for the Speaker: records what BFD asked of BGP."""

    def __init__(self) -> None:
        self.downs: list[tuple[str, str]] = []

    def bfd_down(self, address: str, reason: str) -> None:
        self.downs.append((address, reason))


def view(node: str, **bfd: Any) -> NodeBGPView:
    cfgs = [Resource("BGPConfiguration", "default", {"bfd": bfd})] if bfd else []
    v = build_node_view(node, NODES, cfgs, [])
    assert not v.errors
    return v


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def pair(netns_factory: NetnsFactory) -> tuple[str, str]:
    a, b = netns_factory("bpa"), netns_factory("bpb")
    netns_factory.veth(a, "eth0", b, "eth0")
    netns.run(a, ["ip", "addr", "add", f"{A}/24", "dev", "eth0"])
    netns.run(b, ["ip", "addr", "add", f"{B}/24", "dev", "eth0"])
    return a, b


def run(pair: tuple[str, str], body: Callable[[dict[str, BfdPeers], dict[str, RecordingBgp]], Awaitable[None]]) -> None:
    async def scenario() -> None:
        bgp = {"a": RecordingBgp(), "b": RecordingBgp()}
        peers = {n: BfdPeers(n, bgp[n], netns=ns) for n, ns in zip("ab", pair, strict=True)}
        try:
            for p in peers.values():
                await p.start()
            await body(peers, bgp)
        finally:
            for p in peers.values():
                await p.stop()
    asyncio.run(scenario())


def _up(peers: dict[str, BfdPeers]) -> bool:
    return peers["a"].speaker.state(PeerKey(B)) == State.UP and peers["b"].speaker.state(PeerKey(A)) == State.UP


def test_sessions_follow_the_view_and_a_cut_tells_bgp_once(pair: tuple[str, str]) -> None:
    async def body(peers: dict[str, BfdPeers], bgp: dict[str, RecordingBgp]) -> None:
        peers["a"].set_view(view("a"))
        assert peers["a"].speaker.keys() == [], "BFD off by default"
        for n in "ab":
            peers[n].set_view(view(n, enabled=True))
        await until(lambda: _up(peers), 10, "both Up")
        session = peers["a"].speaker.session(PeerKey(B))
        peers["a"].set_view(view("a", enabled=True))
        assert peers["a"].speaker.session(PeerKey(B)) is session, "the same view changes nothing"
        await until(lambda: not session.polling, 5, "poll sequence done")  # type: ignore[union-attr]
        netns.run(pair[0], ["iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "3784", "-j", "DROP"])
        await until(lambda: bool(bgp["a"].downs), 5, "a to tell BGP")
        assert bgp["a"].downs == [(B, "BFD down (detection_time_expired)")]
        st = {s.peer: s for s in peers["a"].status()}
        assert st[B].state == "down" and st[B].down_events == 1 and st[B].local_diag == "detection_time_expired"
        netns.run(pair[0], ["iptables", "-w", "-D", "INPUT", "-p", "udp", "--dport", "3784", "-j", "DROP"])
        await until(lambda: _up(peers), 10, "both Up again")
        assert len(bgp["a"].downs) == 1, "coming back asks nothing of BGP"
    run(pair, body)


def test_admin_down_from_a_removed_peer_is_not_a_failure(pair: tuple[str, str]) -> None:
    async def body(peers: dict[str, BfdPeers], bgp: dict[str, RecordingBgp]) -> None:
        for n in "ab":
            peers[n].set_view(view(n, enabled=True))
        await until(lambda: _up(peers), 10, "both Up")
        peers["a"].set_view(view("a"))  # BFD switched off on a: its session goes AdminDown
        assert peers["a"].speaker.keys() == []
        await until(lambda: peers["b"].speaker.state(PeerKey(A)) == State.DOWN, 5, "b to see a's AdminDown")
        session = peers["b"].speaker.session(PeerKey(A))
        assert session is not None and session.local_diag == Diag.NEIGHBOR_DOWN
        assert session.remote_state == State.ADMIN_DOWN
        await asyncio.sleep(0.5)
        assert bgp["b"].downs == [], "AdminDown says nothing about the path (RFC 5882 §3.2)"
    run(pair, body)


def test_timer_change_is_negotiated_live(pair: tuple[str, str]) -> None:
    async def body(peers: dict[str, BfdPeers], bgp: dict[str, RecordingBgp]) -> None:
        for n in "ab":
            peers[n].set_view(view(n, enabled=True))
        await until(lambda: _up(peers), 10, "both Up")
        b_session = peers["b"].speaker.session(PeerKey(A))
        assert b_session is not None
        await until(lambda: b_session.detection_time_us == 900_000, 5, "b at 3 x 300 ms")
        peers["a"].set_view(view("a", enabled=True, minTxInterval="500ms", multiplier=4))
        # b's detection time of a follows a's new multiplier and interval, without a flap.
        await until(lambda: b_session.detection_time_us == 4 * 500_000, 5, "b at 4 x 500 ms")
        a_session = peers["a"].speaker.session(PeerKey(B))
        assert a_session is not None
        # b takes the new timers from a's Poll; a ends its poll sequence only when b's Final arrives,
        # which can be a moment later.
        await until(lambda: not a_session.polling, 5, "b's Final ending a's poll sequence")
        assert a_session.state == State.UP and b_session.state == State.UP
        assert bgp["b"].downs == [] and bgp["a"].downs == []
    run(pair, body)


def test_kernel_route_decides_single_hop_or_multihop(pair: tuple[str, str]) -> None:
    a = pair[0]
    netns.run(a, ["ip", "route", "add", "10.80.0.0/16", "via", B])
    assert kernel_is_direct(B, a) is True
    assert kernel_is_direct("10.80.1.1", a) is False
    assert kernel_is_direct("192.0.2.1", a) is True, "no route: counted as direct (a session that stays Down)"


def test_ipv6_single_hop_up_and_detection(netns_factory: NetnsFactory) -> None:
    """The same speaker over IPv6 (hop limit 255 sent and checked), l3net on both ends."""
    a, b = netns_factory("b6a"), netns_factory("b6b")
    netns_factory.veth(a, "eth0", b, "eth0")
    netns.run(a, ["ip", "-6", "addr", "add", "fd00:79::1/64", "dev", "eth0", "nodad"])
    netns.run(b, ["ip", "-6", "addr", "add", "fd00:79::2/64", "dev", "eth0", "nodad"])
    async def scenario() -> None:
        changes: list[tuple[str, State]] = []
        sa = BfdSpeaker(lambda k, c: changes.append(("a", c.new)), netns=a)
        sb = BfdSpeaker(lambda k, c: changes.append(("b", c.new)), netns=b)
        await sa.start()
        await sb.start()
        try:
            ka, kb = PeerKey.parse("fd00:79::2"), PeerKey.parse("fd00:79:0::1")
            assert kb.peer == "fd00:79::1", "addresses are canonical"
            sa.add_session(ka, SessionConfig(), "fd00:79::1")
            sb.add_session(kb, SessionConfig(), "fd00:79::2")
            await until(lambda: sa.state(ka) == State.UP and sb.state(kb) == State.UP, 10, "IPv6 sessions Up")
            netns.run(b, ["ip", "link", "set", "eth0", "down"])
            await until(lambda: sa.state(ka) == State.DOWN, 5, "a to detect b gone")
            assert ("a", State.DOWN) in changes
        finally:
            await sa.stop()
            await sb.stop()
    asyncio.run(scenario())

"""bgp.routing with sourceAddress None: ExaBGP resolves ``next-hop self`` of a ``local-address auto`` neighbour from
the address its session discovered, so the speaker sends it nothing until its session is up, then everything."""

from __future__ import annotations

import pytest

from bgp.events import StateEvent
from bgp.routing import Routing
from bgp.view import build_node_view
from l3net.model.resource import Resource

pytestmark = pytest.mark.unit

NODES = [Resource("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}})]
CFG = [Resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})]
BOUND, UNBOUND = "10.0.0.253", "10.0.0.254"


def routing() -> tuple[Routing, list[str]]:
    lines: list[str] = []
    r = Routing("n1", lambda line, items: lines.append(line) or True, lambda: True, clock=lambda: 0.0,
                monotonic=lambda: 0.0)
    peers = [Resource("BGPPeer", "bound", {"node": "n1", "peerIP": BOUND, "asNumber": 65000}),
             Resource("BGPPeer", "unbound", {"node": "n1", "peerIP": UNBOUND, "asNumber": 65000,
                                             "sourceAddress": "None"})]
    view = build_node_view("n1", NODES, CFG, peers)
    assert view.errors == ()
    r.set_view(view, None)
    r.loaded({BOUND, UNBOUND}, fresh=True)
    return r, lines


def to(peer: str, lines: list[str]) -> list[str]:
    return [line for line in lines if f"neighbor {peer} " in line]


def test_an_unbound_peer_gets_nothing_before_its_session_is_up_then_everything() -> None:
    r, lines = routing()
    r.set_advertisements({"10.244.1.0/26": None})
    assert to(BOUND, lines) and to(UNBOUND, lines) == []
    r.handle(StateEvent(UNBOUND, None, "connected"))
    assert to(UNBOUND, lines) == []
    r.handle(StateEvent(UNBOUND, "10.9.9.1", "up"))
    assert any("announce" in line and "10.244.1.0/26" in line and "next-hop self" in line
               for line in to(UNBOUND, lines))
    r.set_advertisements({"10.244.1.0/26": None, "10.244.1.64/26": None})
    assert any("10.244.1.64/26" in line for line in to(UNBOUND, lines))


def test_while_it_is_down_nothing_is_sent_and_the_next_up_catches_up() -> None:
    r, lines = routing()
    r.handle(StateEvent(UNBOUND, None, "connected"))
    r.handle(StateEvent(UNBOUND, "10.9.9.1", "up"))
    r.set_advertisements({"10.244.1.0/26": None})
    r.handle(StateEvent(UNBOUND, None, "down", "closing connection"))
    lines.clear()
    r.set_advertisements({"10.244.1.64/26": None})
    assert to(UNBOUND, lines) == [] and to(BOUND, lines)
    r.handle(StateEvent(UNBOUND, "10.9.9.1", "up"))
    sent = " ".join(to(UNBOUND, lines))
    assert "withdraw" in sent and "10.244.1.0/26" in sent and "10.244.1.64/26" in sent

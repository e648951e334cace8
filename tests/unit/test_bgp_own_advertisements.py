"""bgp.routing.set_advertisements diffs only the prefixes that changed: each peer still ends up holding
exactly what it should, whatever the sequence of sets and however often ExaBGP was not ready."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.commands import Advertisement
from bgp.events import EorEvent, StateEvent
from bgp.routing import Routing
from bgp.view import build_node_view
from l3net.model.resource import Resource

pytestmark = pytest.mark.unit

NODES = [Resource("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}})]
CFG = [Resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})]
PEERS = ("10.0.0.2", "10.0.0.3")
PREFIXES = [f"10.244.{i}.0/26" for i in range(8)]

advert_sets = st.dictionaries(st.sampled_from(PREFIXES),
                              st.sampled_from([None, Advertisement(communities=("65000:1",))]), max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(advert_sets, st.booleans()), min_size=1, max_size=12))
def test_each_peer_holds_exactly_the_desired_set_after_every_step(steps: list[tuple[dict, bool]]) -> None:
    ready = [True]
    sent_lines: list[str] = []
    r = Routing("n1", lambda line, items: sent_lines.append(line) or True, lambda: ready[0], clock=lambda: 0.0,
                monotonic=lambda: 0.0)
    peers = [Resource("BGPPeer", f"p{i}", {"node": "n1", "peerIP": ip, "asNumber": 65000})
             for i, ip in enumerate(PEERS)]
    r.set_view(build_node_view("n1", NODES, CFG, peers), None)
    r.loaded(set(PEERS), fresh=True)
    for adverts, is_ready in steps:
        ready[0] = is_ready
        r.set_advertisements(adverts)
        if is_ready:
            for spec in (p.spec for p in r.peers.values()):
                assert r.adverts.sent.get(spec.address, {}) == r.adverts.desired(spec), (adverts, spec.address)
    ready[0] = True
    r.set_advertisements(steps[-1][0])
    for spec in (p.spec for p in r.peers.values()):
        assert r.adverts.sent.get(spec.address, {}) == r.adverts.desired(spec)


def test_an_unchanged_set_sends_nothing() -> None:
    lines: list[str] = []
    r = Routing("n1", lambda line, items: lines.append(line) or True, lambda: True, clock=lambda: 0.0,
                monotonic=lambda: 0.0)
    r.set_view(build_node_view("n1", NODES, CFG, [Resource("BGPPeer", "p", {"node": "n1", "peerIP": PEERS[0],
                                                                           "asNumber": 65000})]), None)
    r.loaded({PEERS[0]}, fresh=True)
    r.set_advertisements({PREFIXES[0]: None, PREFIXES[1]: None})
    assert lines
    lines.clear()
    r.set_advertisements({PREFIXES[1]: None, PREFIXES[0]: None})
    assert lines == []
    r.set_advertisements({PREFIXES[1]: None})
    assert len(lines) == 1 and "withdraw" in lines[0] and PREFIXES[0] in lines[0]


def test_a_view_without_peers_is_not_convergence_and_the_first_peers_eor_is() -> None:
    """A view read before the peers' Nodes (the agent's cached view at start) has no peer: Routing must not call
    that "End-of-RIB from every peer", or the agent sweeps the learned routes it kept over its restart."""
    converged: list[bool] = []
    r = Routing("n1", lambda line, items: True, lambda: True, clock=lambda: 0.0, monotonic=lambda: 0.0,
                on_converged=lambda: converged.append(True))
    r.set_view(build_node_view("n1", NODES, CFG, []), None)
    r.check_converged()
    assert converged == [] and not r.converged
    peer = Resource("BGPPeer", "p", {"node": "n1", "peerIP": PEERS[0], "asNumber": 65000})
    r.set_view(build_node_view("n1", NODES, CFG, [peer]), None)
    r.loaded({PEERS[0]}, fresh=True)
    r.handle(StateEvent(PEERS[0], "10.0.0.1", "up"))
    r.check_converged()
    assert converged == []
    r.handle(EorEvent(PEERS[0], "ipv4", "unicast"))
    assert converged == [True] and r.converged

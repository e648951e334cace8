"""bgp.metrics: the Speaker's l3net_bgp_* series in prometheus_client's default registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from bgp import metrics
from tests.unit.speaker_feed import FROM_PEER, A, B, session, speaker

pytestmark = pytest.mark.unit


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_speaker_updates_session_prefix_and_restart_metrics(tmp_path: Path) -> None:
    node = "n2"  # the speaker helper's node
    before_updates = value("l3net_bgp_updates_received_total", node=node) or 0.0
    before_eor = value("l3net_bgp_graceful_restart_sweeps_total", node=node, reason="eor") or 0.0
    before_swept = value("l3net_bgp_stale_routes_swept_total", node=node) or 0.0

    async def scenario() -> None:
        sp, _, _ = speaker(tmp_path)
        peer = sp.peer_status()[0].name
        assert value("l3net_bgp_session_state", node=node, peer=peer, state="idle") == 1.0
        session(sp)
        assert value("l3net_bgp_session_state", node=node, peer=peer, state="up") == 1.0
        assert value("l3net_bgp_session_state", node=node, peer=peer, state="idle") == 0.0
        sp.feed(FROM_PEER.announce(A, B))
        sp.feed(FROM_PEER.eor())
        sp.feed(FROM_PEER.down("closing connection"))
        assert value("l3net_bgp_session_state", node=node, peer=peer, state="down") == 1.0
        assert value("l3net_bgp_prefixes_received", node=node, peer=peer) == 2.0
        assert value("l3net_bgp_prefixes_stale", node=node, peer=peer) == 2.0
        session(sp)
        sp.feed(FROM_PEER.announce(A))
        sp.feed(FROM_PEER.eor())
        assert value("l3net_bgp_prefixes_received", node=node, peer=peer) == 1.0
        assert value("l3net_bgp_prefixes_stale", node=node, peer=peer) == 0.0
        assert value("l3net_bgp_updates_received_total", node=node) == before_updates + 2
        assert value("l3net_bgp_graceful_restart_sweeps_total", node=node, reason="eor") == before_eor + 1
        assert value("l3net_bgp_stale_routes_swept_total", node=node) == before_swept + 1
        assert sp.stats["updates_received"] == 2
        # a peer that leaves the view leaves the registry
        from bgp.view import build_node_view
        from tests.unit.speaker_feed import NODES
        sp.set_view(build_node_view("n2", NODES[1:], [], []))
        assert value("l3net_bgp_session_state", node=node, peer=peer, state="up") is None
        assert value("l3net_bgp_prefixes_received", node=node, peer=peer) is None
        await sp.stop()
    asyncio.run(scenario())


def test_register_into_another_registry_is_idempotent() -> None:
    reg = CollectorRegistry()
    metrics.register_into(reg)
    metrics.register_into(reg)
    metrics.SPEAKER_RESTARTS.labels(node="x").inc()
    text = generate_latest(reg).decode()
    assert 'l3net_bgp_speaker_restarts_total{node="x"}' in text
    assert "l3net_bgp_reloads_total" in text and "l3net_bgp_commands_sent_total" in text

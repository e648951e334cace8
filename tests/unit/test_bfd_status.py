"""bgp.bfd.status and bgp.bfd.metrics: the node status document, its table, and the l3net_bfd_* series."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from bgp.bfd import metrics
from bgp.bfd.speaker import SessionStatus
from bgp.bfd.status import decode, encode, format_table

pytestmark = pytest.mark.unit

ROW = SessionStatus(peer="10.0.0.2", multihop=False, state="up", remote_state="up", local_diag="none",
                    local_discr=7, remote_discr=9, tx_interval_ms=300.0, detection_time_ms=900.0, transitions=3,
                    down_events=1, since=1_000.0)


def test_round_trip_and_table() -> None:
    mh = SessionStatus(**{**{f: getattr(ROW, f) for f in ROW.__slots__}, "peer": "10.9.0.1", "multihop": True,
                          "state": "down", "local_diag": "detection_time_expired"})
    node, sessions = decode(encode("n1", [ROW, mh], now=5.0))
    assert node == "n1" and sessions[0]["peer"] == "10.0.0.2" and sessions[0]["detectionTimeMs"] == 900.0
    table = format_table(sessions, now=2_000.0)
    assert "10.0.0.2" in table and "single hop" in table and "300/900" in table
    assert "multihop" in table and "detection_time_expired" in table
    assert format_table([]).endswith("No BFD sessions.")


@pytest.mark.parametrize("value", [b"[]", b'{"node": 1, "sessions": []}', b'{"node": "n", "sessions": [1]}',
                                   b"not json"])
def test_bad_documents_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode(value)


def test_metrics_follow_the_session_and_are_removed() -> None:
    metrics.set_session("mt", "10.0.0.2", "up", 0.9)
    assert REGISTRY.get_sample_value("l3net_bfd_session_state", {"node": "mt", "peer": "10.0.0.2", "state": "up"}) == 1
    assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                     {"node": "mt", "peer": "10.0.0.2", "state": "down"}) == 0
    assert REGISTRY.get_sample_value("l3net_bfd_detection_time_seconds", {"node": "mt", "peer": "10.0.0.2"}) == 0.9
    metrics.remove_session("mt", "10.0.0.2")
    assert REGISTRY.get_sample_value("l3net_bfd_session_state",
                                     {"node": "mt", "peer": "10.0.0.2", "state": "up"}) is None

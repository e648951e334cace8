"""BGPPeer ``nodeSelector``/``peerSelector``: the model's one compiler, fail closed, as bgp.view uses it.

The view compiles both with :func:`l3net.model.selectors.parse_calico`: absent (None) or empty selects every
node (Calico's empty selector), an expression that does not parse is logged and selects none (a broken BGPPeer
peers with no one rather than with everyone). The model refuses a bad expression with a field error first.
"""

from __future__ import annotations

import logging

import pytest

from bgp.view import _NodeInfo, _selects, build_node_view
from l3net.model.bgp_specs import BGPPeerSpec
from l3net.model.resource import Resource
from l3net.model.selectors import parse_calico

pytestmark = pytest.mark.unit


def _info(name: str, **labels: str) -> _NodeInfo:
    return _NodeInfo(name=name, labels=labels, v4=None, v6=None, asn=None, cluster_id=None)


def test_valid_selectors_match_and_absent_or_empty_selects_all() -> None:
    assert parse_calico("rack == 'r1'").matches({"rack": "r1"})
    assert not parse_calico("rack == 'r1'").matches({"rack": "r2"})
    assert parse_calico(None).matches({}) and parse_calico("").matches({"x": "y"})
    assert parse_calico("  ").matches({})


def test_node_side_absent_empty_or_named() -> None:
    n1 = _info("n1", rack="r1")
    assert _selects(BGPPeerSpec(), n1) and _selects(BGPPeerSpec(node_selector=""), n1)
    assert _selects(BGPPeerSpec(node="n1"), n1) and not _selects(BGPPeerSpec(node="n2"), n1)
    assert _selects(BGPPeerSpec(node_selector="rack == 'r1'"), n1)
    assert not _selects(BGPPeerSpec(node_selector="rack == 'r2'"), n1)


@pytest.mark.parametrize("text", ["rack == ", "has(", "rack == 'r1' &&", "))"])
def test_bad_selector_matches_nothing_and_is_logged(text: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="l3net.model.selectors"):
        sel = parse_calico(text, where="BGPPeer spec.nodeSelector")
        assert not sel.matches({}) and not sel.matches({"rack": ""}) and not sel.matches({"rack": "r1"})
        assert not _selects(BGPPeerSpec(node_selector=text), _info("n1", rack="r1"))
    assert "matching nothing" in caplog.text and "BGPPeer spec.nodeSelector" in caplog.text


def test_bad_peer_selector_in_a_hand_built_bgppeer_is_refused_with_the_field() -> None:
    node = Resource(kind="Node", name="n1", spec={"bgp": {"ipv4Address": "10.0.0.1/24"}}, labels={"rack": "r1"})
    peer = Resource(kind="BGPPeer", name="bad", spec={"nodeSelector": "all()", "peerSelector": "rack == "})
    view = build_node_view("n1", [node], [], [peer])
    assert view.peers == ()
    assert [e.path for e in view.errors] == ["spec.peerSelector"]

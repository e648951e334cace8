"""The ``bfd`` block: validation on BGPConfiguration and BGPPeer, field-wise resolution, and the peers' view."""

from __future__ import annotations

from typing import Any

import pytest

from bgp.view import build_node_view
from l3net.errors import ValidationError
from l3net.model.resource import Resource
from l3net.model.validate.bfd import BfdSettings, resolve_bfd
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def _cfg_doc(bfd: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
            "spec": {"bfd": bfd}}


def _peer_doc(bfd: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": "10.0.0.254", "asNumber": 64513, "bfd": bfd}}


GOOD = {"enabled": True, "minRxInterval": "300ms", "minTxInterval": "0.5s", "multiplier": 5}


@pytest.mark.parametrize("make", [_cfg_doc, _peer_doc], ids=["BGPConfiguration", "BGPPeer"])
def test_valid_bfd_blocks_are_kept_as_written(make: Any) -> None:
    res = resource_from_document(make(GOOD))
    assert res.spec["bfd"] == GOOD
    assert resource_from_document(make({"enabled": False})).spec["bfd"] == {"enabled": False}


BAD = [
    ({"enabled": "yes"}, "spec.bfd.enabled", "true or false"),
    ({"minRxInterval": "300"}, "spec.bfd.minRxInterval", "not a duration"),
    ({"minRxInterval": 300}, "spec.bfd.minRxInterval", "duration string"),
    ({"minTxInterval": "5ms"}, "spec.bfd.minTxInterval", "10ms..60s"),
    ({"minTxInterval": "2m"}, "spec.bfd.minTxInterval", "10ms..60s"),
    ({"multiplier": 0}, "spec.bfd.multiplier", "1..255"),
    ({"multiplier": 256}, "spec.bfd.multiplier", "1..255"),
    ({"multiplier": "3"}, "spec.bfd.multiplier", "integer"),
    ({"interval": "300ms"}, "spec.bfd.interval", "unknown field"),
    ("on", "spec.bfd", "object"),
]


@pytest.mark.parametrize("make", [_cfg_doc, _peer_doc], ids=["BGPConfiguration", "BGPPeer"])
@pytest.mark.parametrize(("bfd", "path", "reason"), BAD, ids=[b[1].rsplit(".", 1)[-1] + "-" + str(i)
                                                              for i, b in enumerate(BAD)])
def test_bad_bfd_fields_are_named(make: Any, bfd: Any, path: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        resource_from_document(make(bfd))
    errors = info.value.errors
    assert any(e.path == path and reason in e.reason for e in errors), [str(e) for e in errors]


def test_resolution_defaults_and_field_wise_override() -> None:
    assert resolve_bfd() == BfdSettings(False, 300_000, 300_000, 3)
    cluster = {"enabled": True, "minRxInterval": "200ms"}
    assert resolve_bfd(cluster) == BfdSettings(True, 200_000, 300_000, 3)
    assert resolve_bfd(cluster, {"multiplier": 4, "minTxInterval": "1s"}) == BfdSettings(True, 200_000, 1_000_000, 4)
    assert resolve_bfd(cluster, {"enabled": False}).enabled is False
    assert resolve_bfd(cluster, None, {"minRxInterval": None}).min_rx_us == 200_000, "null is absent"
    assert BfdSettings(True, 300_000, 300_000, 3).detection_time_s == pytest.approx(0.9)


@pytest.mark.parametrize(("layer", "field"), [({"enabled": 1}, "bfd.enabled"),
                                              ({"minRxInterval": "1ms"}, "bfd.minRxInterval"),
                                              ({"multiplier": True}, "bfd.multiplier")])
def test_resolution_refuses_unvalidated_values(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        resolve_bfd(layer)


NODES = [Resource("Node", n, {"bgp": {"ipv4Address": f"10.0.0.{i}/24"}}) for i, n in ((1, "n1"), (2, "n2"))]


def test_view_carries_bfd_for_mesh_and_overrides_per_peer() -> None:
    cfgs = [Resource("BGPConfiguration", "default", {"bfd": {"enabled": True}})]
    peers = [Resource("BGPPeer", "tor", {"peerIP": "10.0.0.254", "asNumber": 64513,
                                         "bfd": {"minRxInterval": "100ms", "minTxInterval": "100ms"}}),
             Resource("BGPPeer", "quiet", {"peerIP": "10.0.0.253", "asNumber": 64513, "bfd": {"enabled": False}})]
    view = build_node_view("n1", NODES, cfgs, peers)
    assert not view.errors
    mesh, tor, quiet = view.peer("10.0.0.2"), view.peer("10.0.0.254"), view.peer("10.0.0.253")
    assert mesh is not None and mesh.bfd == BfdSettings(True, 300_000, 300_000, 3)
    assert tor is not None and tor.bfd == BfdSettings(True, 100_000, 100_000, 3)
    assert quiet is not None and quiet.bfd is None


def test_view_without_bfd_and_with_a_peer_enabling_it() -> None:
    peers = [Resource("BGPPeer", "tor", {"peerIP": "10.0.0.254", "asNumber": 64513, "bfd": {"enabled": True}})]
    view = build_node_view("n1", NODES, [], peers)
    assert view.peer("10.0.0.2").bfd is None  # type: ignore[union-attr]
    assert view.peer("10.0.0.254").bfd == BfdSettings(True)  # type: ignore[union-attr]


def test_view_reports_bad_bfd_and_runs_that_peer_without_it() -> None:
    peers = [Resource("BGPPeer", "tor", {"peerIP": "10.0.0.254", "asNumber": 64513,
                                         "bfd": {"enabled": True, "minRxInterval": "1ms"}})]
    view = build_node_view("n1", NODES, [], peers)
    assert view.peer("10.0.0.254") is not None and view.peer("10.0.0.254").bfd is None  # type: ignore[union-attr]
    assert [(e.path, "10ms..60s" in e.reason) for e in view.errors] == [("spec.bfd.minRxInterval", True)]

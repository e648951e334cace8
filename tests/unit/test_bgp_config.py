"""bgp.view (and the model's check at its edge), bgp.exabgp_config: peer sets as Calico computes them,
the ExaBGP text (golden)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgp.exabgp_config import exabgp_env, render_exabgp_config
from bgp.view import (
    PEER_GLOBAL,
    PEER_MESH,
    PEER_NODE,
    PEER_RR,
    build_node_view,
)
from l3net.model.bgp_specs import BGPPeerSpec, checked
from l3net.model.values import parse_duration, parse_peer_ip
from tests.unit.bgp_builders import cfg, node, peer

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden" / "bgp"
HELPER = ["/opt/l3net/bin/python", "-m", "bgp.bridge", "--socket", "/run/l3net/bgp.sock"]


THREE = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2"), node("n3", "10.0.0.3")]

SCENARIOS = {
    "mesh_n2": ("n2", THREE, [cfg(holdTime="9s", keepaliveTime="3s", nodeMeshPassword={"value": "m3sh"},
                                          restartTime="5m")], []),
    "rr_client": ("n1", [*THREE, node("rr1", "10.0.0.10", cluster="1.1.1.1", rr="x")],
                  [cfg(nodeToNodeMeshEnabled=False, gracefulRestart=False)],
                  [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)")]),
    "rr_reflector": ("rr1", [*THREE, node("rr1", "10.0.0.10", cluster="1.1.1.1", rr="x"),
                             node("rr2", "10.0.0.11", cluster="1.1.1.1", rr="y")],
                     [cfg(nodeToNodeMeshEnabled=False)],
                     [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)")]),
    "ebgp_rack": ("n1", [node("n1", "10.0.0.1", asn=65001, rack="a"), node("n2", "10.0.0.2", asn=65002)],
                  [cfg(nodeToNodeMeshEnabled=False, holdTime="30s")],
                  [peer("tor-a", nodeSelector="rack == 'a'", peerIP="10.0.0.254:1790", asNumber=65000,
                        password={"value": "t0r"}, holdTime="6s", ttlSecurity=1)]),
    "dual_stack": ("n1", [node("n1", "10.0.0.1", v6="fd00::1"), node("n2", "10.0.0.2", v6="fd00::2")], [], []),
    # sourceAddress None: `local-address auto` where n2 connects (n3, the ToR), the node's address where it is
    # passive (n1 connects to it); keepOriginalNextHop changes nothing in ExaBGP's text (n2 sends only its own routes)
    "source_unbound": ("n2", THREE, [cfg(nodeToNodeMeshEnabled=False)],
                       [peer("pairs", nodeSelector="all()", peerSelector="all()", sourceAddress="None"),
                        peer("tor", node="n2", peerIP="10.0.0.254", asNumber=64512, sourceAddress="None",
                             keepOriginalNextHop=True)]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rendered_config_matches_golden(name: str) -> None:
    me, nodes, configs, peers = SCENARIOS[name]
    view = build_node_view(me, nodes, configs, peers)
    assert view.errors == ()
    text = render_exabgp_config(view, HELPER)
    path = GOLDEN / f"{name}.conf"
    if os.environ.get("L3NET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"rendering of {name} changed; L3NET_UPDATE_GOLDEN=1 to accept"


def test_mesh_names_and_passive_side() -> None:
    v = build_node_view("n2", THREE, [], [])
    assert [(p.name, p.peer_type, p.passive) for p in v.peers] == [
        ("Mesh_10_0_0_1", PEER_MESH, True),     # we are higher than .1: we wait
        ("Mesh_10_0_0_3", PEER_MESH, False),    # .3 is higher: we connect
    ]
    assert v.as_number == 64512 and v.router_id == "10.0.0.2"
    # each pair has exactly one passive side
    views = {n: build_node_view(n, THREE, [], []) for n in ("n1", "n2", "n3")}
    for a in views.values():
        for p in a.peers:
            other = views[p.peer_node].peer(a.address_v4)  # type: ignore[index]
            assert other is not None and other.passive != p.passive


def test_route_reflectors_stay_out_of_the_mesh_and_mesh_can_be_off() -> None:
    nodes = [*THREE, node("rr1", "10.0.0.10", cluster="1.1.1.1")]
    assert {p.address for p in build_node_view("n1", nodes, [], []).peers} == {"10.0.0.2", "10.0.0.3"}
    assert build_node_view("rr1", nodes, [], []).peers == ()
    assert build_node_view("n1", THREE, [cfg(nodeToNodeMeshEnabled=False)], []).peers == ()


def test_peer_selector_is_symmetric_and_marks_clients() -> None:
    nodes = [*THREE, node("rr1", "10.0.0.10", cluster="1.1.1.1", rr="x")]
    peers = [peer("to-rr", nodeSelector="!has(rr)", peerSelector="has(rr)")]
    conf = [cfg(nodeToNodeMeshEnabled=False)]
    client = build_node_view("n1", nodes, conf, peers)
    assert [(p.name, p.peer_type, p.rr_client) for p in client.peers] == [("Node_10_0_0_10", PEER_RR, False)]
    rr = build_node_view("rr1", nodes, conf, peers)
    assert [(p.address, p.rr_client) for p in rr.peers] == [("10.0.0.1", True), ("10.0.0.2", True),
                                                            ("10.0.0.3", True)]
    assert rr.cluster_id == "1.1.1.1"


def test_global_and_node_specific_peers_and_ebgp() -> None:
    nodes = [node("n1", "10.0.0.1", asn=65001, rack="a"), node("n2", "10.0.0.2", rack="b")]
    peers = [peer("g", peerIP="10.0.0.250", asNumber=65000),
             peer("only-n2", node="n2", peerIP="10.0.0.251", asNumber=64512),
             peer("rack-a", nodeSelector="rack == 'a'", peerIP="10.0.0.252", asNumber=65010)]
    v1 = build_node_view("n1", nodes, [], peers)
    got = {p.address: (p.name, p.peer_type, p.ebgp, p.local_as) for p in v1.peers}
    assert got == {"10.0.0.2": ("Mesh_10_0_0_2", PEER_MESH, True, 65001),
                   "10.0.0.250": ("Global_10_0_0_250", PEER_GLOBAL, True, 65001),
                   "10.0.0.252": ("Node_10_0_0_252", PEER_NODE, True, 65001)}
    v2 = build_node_view("n2", nodes, [], peers)
    assert {p.address for p in v2.peers} == {"10.0.0.1", "10.0.0.250", "10.0.0.251"}
    assert not v2.peer("10.0.0.251").ebgp  # type: ignore[union-attr]


def test_explicit_peer_wins_over_mesh_for_the_same_address() -> None:
    v = build_node_view("n1", THREE, [], [peer("x", peerIP="10.0.0.2", asNumber=64512, holdTime="6s")])
    p = v.peer("10.0.0.2")
    assert p is not None and p.peer_type == PEER_GLOBAL and p.hold_time == 6 and not p.passive


@pytest.mark.parametrize(("spec", "path"), [
    ({"peerIP": "10.0.0.300", "asNumber": 1}, "spec.peerIP"),
    ({"peerIP": "10.0.0.3", "asNumber": 1, "peerSelector": "all()"}, "spec.peerSelector"),
    ({"peerIP": "10.0.0.3"}, "spec.asNumber"),
    ({"peerIP": "10.0.0.3", "asNumber": 0}, "spec.asNumber"),
    ({"peerSelector": "role ==", "nodeSelector": "all()"}, "spec.peerSelector"),
    ({"peerIP": "10.0.0.3", "asNumber": 1, "holdTime": "2s"}, "spec.holdTime"),
    ({"peerIP": "10.0.0.3", "asNumber": 1, "holdTime": "9s", "keepaliveTime": "9s"}, "spec.keepaliveTime"),
    ({"peerIP": "10.0.0.3", "asNumber": 1, "password": {"value": ""}}, "spec.password.value"),
    ({"peerIP": "10.0.0.3", "asNumber": 1, "node": "n1", "nodeSelector": "all()"}, "spec.nodeSelector"),
    ({"peerIP": "10.0.0.3:99999", "asNumber": 1}, "spec.peerIP"),
])
def test_bad_peer_is_refused_with_field_path_and_changes_nothing(spec: dict[str, object], path: str) -> None:
    errs = checked(peer("bad", **spec), BGPPeerSpec).errors
    assert path in [e.path for e in errs], errs
    assert all(str(e).startswith("BGPPeer/bad: spec.") for e in errs)
    good = build_node_view("n1", THREE, [], [])
    with_bad = build_node_view("n1", THREE, [], [peer("bad", **spec)])
    assert with_bad.peers == good.peers
    assert [e.path for e in with_bad.errors] == [e.path for e in errs]


def test_node_without_address_has_no_bgp() -> None:
    v = build_node_view("n9", [*THREE, node("n9", None)], [], [])
    assert not v.enabled and v.peers == ()


def test_durations_peer_ip_and_env() -> None:
    assert parse_duration("3s") == 3 and parse_duration("1m30s") == 90 and parse_duration("1.5m") == 90
    assert parse_duration("500ms") == 0.5
    for bad in ("3x", "", "s", "90", 90, -1, True):   # a number is not a duration (Calico's metav1.Duration)
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_peer_ip("[fd00::1]:1790") == ("fd00::1", 1790)
    v = build_node_view("n1", [node("n1", "10.0.0.1", v6="fd00::10")], [],
                        [peer("tor", node="n1", peerIP="fd00::1", asNumber=65000, ebgpMultihop=2)])
    assert [(p.address, p.port) for p in v.peers if p.address == "fd00::1"] == [("fd00::1", 179)]
    env = exabgp_env(build_node_view("n1", THREE, [cfg(listenPort=1179)], []))
    assert env["exabgp_daemon_user"] == "root" and env["exabgp_api_cli"] == "false"
    assert env["exabgp_tcp_bind"] == "10.0.0.1" and env["exabgp_tcp_port"] == "1179"


def test_communities_follow_prefix_advertisements() -> None:
    conf = cfg(communities=[{"name": "pods", "value": "64512:100"}],
               prefixAdvertisements=[{"cidr": "10.244.0.0/16", "communities": ["pods", "65000:1:2"]},
                                     {"cidr": "10.96.0.0/12", "communities": ["nope"]}])
    v = build_node_view("n1", THREE, [conf], [])
    assert v.communities_for("10.244.1.0/26") == ("64512:100", "65000:1:2")
    assert v.communities_for("10.245.0.0/26") == ()
    assert [e.path for e in v.errors] == ["spec.prefixAdvertisements[1].communities[0]"]


def test_helper_argv_with_spaces_is_refused() -> None:
    with pytest.raises(ValueError, match="helper argv"):
        render_exabgp_config(build_node_view("n1", THREE, [], []), ["/a b/python"])


def test_restart_times_from_configuration_and_peer() -> None:
    v = build_node_view("n1", THREE, [cfg(restartTime="45s")], [
        peer("tor", node="n1", peerIP="10.0.0.254", asNumber=65000, maxRestartTime="2m")])
    assert v.errors == ()
    assert {p.address: (p.graceful_restart, p.restart_time) for p in v.peers} == {
        "10.0.0.2": (True, 45), "10.0.0.3": (True, 45), "10.0.0.254": (True, 120)}
    text = render_exabgp_config(v, HELPER)
    assert text.count("graceful-restart 45;") == 2 and text.count("graceful-restart 120;") == 1
    assert text.count("manual-eor true;") == 3, "we send End-of-RIB ourselves, after the full table"
    off = build_node_view("n1", THREE, [cfg(gracefulRestart=False)], [])
    assert all(not p.graceful_restart for p in off.peers)
    assert "graceful-restart" not in render_exabgp_config(off, HELPER)
    assert build_node_view("n1", THREE, [], []).peers[0].restart_time == 120, "Calico's default"


@pytest.mark.parametrize("value", ["0s", "2h", "soon"])
def test_bad_restart_times_name_the_field(value: str) -> None:
    v = build_node_view("n1", THREE, [cfg(restartTime=value)], [])
    assert [e.path for e in v.errors] == ["spec.restartTime"]
    assert all(p.restart_time == 120 for p in v.peers), "the bad value is treated as absent"
    errs = checked(peer("p", peerIP="10.0.0.9", asNumber=65000, maxRestartTime=value), BGPPeerSpec).errors
    assert [e.path for e in errs] == ["spec.maxRestartTime"]


def _neighbor_lines(text: str, address: str) -> list[str]:
    block = text.split(f"neighbor {address} {{", 1)[1].split("\n}", 1)[0]
    return [line.strip() for line in block.splitlines()]


@pytest.mark.parametrize(("source", "want"), [(None, "10.0.0.2"), ("UseNodeIP", "10.0.0.2"), ("None", "auto")])
def test_source_address_sets_exabgps_local_address(source: str | None, want: str) -> None:
    """None: ``local-address auto`` (ExaBGP connects unbound, the kernel picks the source); default UseNodeIP."""
    spec: dict[str, object] = {"node": "n2", "peerIP": "10.0.0.254", "asNumber": 64512}
    if source is not None:
        spec["sourceAddress"] = source
    view = build_node_view("n2", THREE, [cfg(nodeToNodeMeshEnabled=False)], [peer("tor", **spec)])
    p = view.peer("10.0.0.254")
    assert p is not None and p.source_node_ip is (source != "None") and p.local_address == "10.0.0.2"
    assert f"local-address {want};" in _neighbor_lines(render_exabgp_config(view, HELPER), "10.0.0.254")


def test_source_address_none_on_a_passive_session_keeps_the_node_address() -> None:
    """The passive side never connects: its local end is the address the peer connected to (ExaBGP listens on the
    node's addresses only), so ``auto`` would change nothing but ExaBGP's matching of the incoming connection."""
    view = build_node_view("n2", THREE, [cfg(nodeToNodeMeshEnabled=False)],
                           [peer("pairs", nodeSelector="all()", peerSelector="all()", sourceAddress="None")])
    text = render_exabgp_config(view, HELPER)
    assert "passive true;" in _neighbor_lines(text, "10.0.0.1")
    assert "local-address 10.0.0.2;" in _neighbor_lines(text, "10.0.0.1")
    assert "local-address auto;" in _neighbor_lines(text, "10.0.0.3")


def test_keep_original_next_hop_is_carried_and_changes_no_exabgp_text() -> None:
    """A node sends only its own routes (next hop: itself, their original next hop), so ExaBGP's text is the same."""
    views = [build_node_view("n2", THREE, [], [peer("tor", node="n2", peerIP="10.0.0.254", asNumber=65000,
                                                    keepOriginalNextHop=keep)]) for keep in (True, False)]
    assert [v.peer("10.0.0.254").keep_next_hop for v in views] == [True, False]  # type: ignore[union-attr]
    assert render_exabgp_config(views[0], HELPER) == render_exabgp_config(views[1], HELPER)


@pytest.mark.parametrize(("hops", "min_ttl"), [(1, 255), (2, 254), (255, 1)])
def test_ttl_security_hops_become_the_lowest_ttl_exabgp_accepts(hops: int, min_ttl: int) -> None:
    """Calico's ttlSecurity counts hops; ExaBGP's incoming-ttl is IP_MINTTL (a GTSM peer sends 255)."""
    view = build_node_view("n1", [node("n1", "10.0.0.1", asn=65001), node("n2", "10.0.0.2", asn=65002)],
                           [cfg(nodeToNodeMeshEnabled=False)],
                           [peer("tor", node="n1", peerIP="10.0.0.254", asNumber=65000, ttlSecurity=hops)])
    assert view.errors == ()
    text = render_exabgp_config(view, HELPER)
    assert f"incoming-ttl {min_ttl};" in text and "outgoing-ttl" not in text


def test_a_routed_ebgp_peer_is_accepted_with_gtsm_hops_and_refused_without() -> None:
    nodes = [node("n1", "10.0.0.1", asn=65001), node("n2", "10.0.0.2", asn=65002)]
    far = {"node": "n1", "peerIP": "192.0.2.1", "asNumber": 65000}
    refused = build_node_view("n1", nodes, [cfg(nodeToNodeMeshEnabled=False)], [peer("far", **far)])
    assert [e.path for e in refused.errors] == ["spec.peerIP"] and "ttlSecurity" in refused.errors[0].reason
    gtsm = build_node_view("n1", nodes, [cfg(nodeToNodeMeshEnabled=False)], [peer("far", **far, ttlSecurity=2)])
    assert gtsm.errors == ()
    text = render_exabgp_config(gtsm, HELPER)
    assert "incoming-ttl 254;" in text and "outgoing-ttl" not in text  # ExaBGP sends 255 (GTSM)

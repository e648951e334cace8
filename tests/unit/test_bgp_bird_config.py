"""bgp.bird_config and bgp.bird_control: BIRD text for a reflector (golden files, `bird -p`), hostile
passwords, and `show protocols all` parsed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.bird_config import password_error, protocol_name, render_bird_config
from bgp.bird_control import parse_bfd_sessions, parse_protocols
from bgp.view import build_node_view
from l3net.model.resource import Resource
from tests.unit.bgp_builders import CLIENTS, RRS, TO_RR, cfg, node, peer

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden" / "bird"   # not golden/bgp: those are ExaBGP files
needs_bird = pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")

SCENARIOS = {
    # the dual-rr shape: clients by selector, the other reflector is not a client
    "bird_rr_dual": ("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR]),
    # timers, restart time, an MD5 password, a listen port and an eBGP upstream on another port
    "bird_rr_timers_md5": ("rr1", [*CLIENTS, *RRS],
                           [cfg(nodeToNodeMeshEnabled=False, holdTime="9s", keepaliveTime="3s", restartTime="5m",
                                listenPort=1790)],
                           [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)",
                                 password={"value": "s3cret 'x' $y {z};#"}, maxRestartTime="30s"),
                            peer("upstream", node="rr1", peerIP="10.0.0.254:1179", asNumber=65000, ttlSecurity=1)]),
    # dual stack, graceful restart off
    "bird_rr_dual_stack": ("rr1", [node("n1", "10.0.0.11", v6="fd00::11"),
                                   node("rr1", "10.0.0.2", v6="fd00::2", cluster="224.0.0.1", rr="true")],
                           [cfg(nodeToNodeMeshEnabled=False, gracefulRestart=False)], [TO_RR]),
    # BFD: the cluster default (300 ms x 3), a node override for rr1 (multiplier 4), a faster eBGP upstream
    # (peer override, 50 ms and 12500 us); n1, n3 and the upstream on rr1's link (single hop), n2 behind a router
    "bird_rr_bfd": ("rr1", [*CLIENTS, *RRS],
                    [cfg(nodeToNodeMeshEnabled=False,
                         bfd={"enabled": True, "minRxInterval": "300ms", "minTxInterval": "300ms"}),
                     Resource("BGPConfiguration", "node.rr1", {"bfd": {"multiplier": 4}})],
                    [TO_RR, peer("upstream", node="rr1", peerIP="10.0.0.254", asNumber=65000,
                                 bfd={"minRxInterval": "50ms", "minTxInterval": "12500us"})]),
    # BGPFilter rules on an eBGP upstream (every operator, prefix lengths, both families) and a prefix limit
    "bird_rr_filters": ("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)],
                        [TO_RR, peer("upstream", node="rr1", peerIP="10.0.0.254", asNumber=65000, maxPrefixes=500,
                                     filters=["edge", "last"])]),
    # sourceAddress None (no local address) on the clients and the upstream; keepOriginalNextHop: `next hop keep`
    # for the eBGP upstream (with BGPFilters too), nothing for an iBGP peer (BIRD keeps its next hop anyway)
    "bird_rr_source_keep": ("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)],
                            [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)", sourceAddress="None",
                                  keepOriginalNextHop=True),
                             peer("upstream", node="rr1", peerIP="10.0.0.254", asNumber=65000,
                                  sourceAddress="None", keepOriginalNextHop=True),
                             peer("upstream2", node="rr1", peerIP="10.0.0.253", asNumber=65000,
                                  keepOriginalNextHop=True, filters=["last"])]),
    # ebgpMultihop: `multihop N` for eBGP peers off rr1's subnet (one with BFD, bound to the node's address: BIRD's
    # multihop BFD needs it; one unbound without BFD, with BGPFilters), nothing for 1 (BIRD's direct session sends
    # TTL 1) and nothing for an iBGP peer (bgp.view keeps the field for eBGP only)
    "bird_rr_multihop": ("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)],
                         [TO_RR, peer("far", node="rr1", peerIP="192.0.2.1", asNumber=65000, ebgpMultihop=3,
                                      bfd={"enabled": True}),
                          peer("far-unbound", node="rr1", peerIP="198.51.100.1", asNumber=65001, ebgpMultihop=2,
                               sourceAddress="None", filters=["last"]),
                          peer("near", node="rr1", peerIP="10.0.0.254", asNumber=65000, ebgpMultihop=1),
                          peer("ibgp", node="rr1", peerIP="10.0.0.200", asNumber=64512, ebgpMultihop=5)]),
}
SINGLE_HOP = {"bird_rr_bfd": frozenset({"10.0.0.11", "10.0.0.13", "10.0.0.254"})}
FILTERS = {"bird_rr_filters": [
    Resource("BGPFilter", "edge", {
        "importV4": [{"action": "Accept", "matchOperator": "Equal", "cidr": "0.0.0.0/0"},
                     {"action": "Reject", "matchOperator": "In", "cidr": "10.244.0.0/16"},
                     {"action": "Accept", "matchOperator": "NotIn", "cidr": "192.168.0.0/16",
                      "prefixLength": {"min": 16, "max": 24}}],
        "exportV4": [{"action": "Reject", "matchOperator": "NotEqual", "cidr": "10.244.1.0/26"}],
        "importV6": [{"action": "Reject", "matchOperator": "In", "cidr": "fd00::/8"}]}),
    Resource("BGPFilter", "last", {"importV4": [{"action": "Reject"}]}),
], "bird_rr_source_keep": [Resource("BGPFilter", "last", {"importV4": [{"action": "Reject"}]})],
           "bird_rr_multihop": [Resource("BGPFilter", "last", {"importV4": [{"action": "Reject"}]})]}


def _bird_parses(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    return subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rendered_bird_config_matches_golden(name: str) -> None:
    me, nodes, configs, peers = SCENARIOS[name]
    view = build_node_view(me, nodes, configs, peers, FILTERS.get(name, []))
    assert view.errors == ()
    rendered = render_bird_config(view, SINGLE_HOP.get(name, frozenset()))
    assert rendered.errors == ()
    assert sorted(rendered.protocols.values()) == sorted(p.address for p in view.peers)
    path = GOLDEN / f"{name}.conf"
    if os.environ.get("L3NET_UPDATE_GOLDEN"):
        path.write_text(rendered.text)
    assert rendered.text == path.read_text(), f"rendering of {name} changed; L3NET_UPDATE_GOLDEN=1 to accept"


@needs_bird
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_bird_configs_parse(name: str, tmp_path: Path) -> None:
    proc = _bird_parses((GOLDEN / f"{name}.conf").read_text(), tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_clients_and_non_clients() -> None:
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR])
    text = render_bird_config(view).text
    blocks = {b.split()[0]: b for b in text.split("protocol bgp ")[1:]}
    assert set(blocks) == {"Node_10_0_0_11", "Node_10_0_0_12", "Node_10_0_0_13", "Node_10_0_0_3"}
    for client in ("Node_10_0_0_11", "Node_10_0_0_12", "Node_10_0_0_13"):
        assert "rr client;" in blocks[client] and "rr cluster id 224.0.0.1;" in blocks[client]
    assert "rr client" not in blocks["Node_10_0_0_3"], "the other reflector of the cluster is a non-client"
    assert "protocol kernel" not in text, "a reflector writes no kernel routes"


def test_bad_peer_is_left_out_alone() -> None:
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR])
    bad = dataclasses.replace(view.peers[0], password='x";} protocol bgp evil { neighbor 6.6.6.6 as 1; #')
    rendered = render_bird_config(dataclasses.replace(view, peers=(bad, *view.peers[1:])))
    assert [e.path for e in rendered.errors] == [f"peer {bad.name}"]
    assert "password" in rendered.errors[0].reason and rendered.errors[0].document == "BGPPeer/to-rr"
    assert "evil" not in rendered.text and bad.address not in rendered.protocols.values()
    assert len(rendered.protocols) == len(view.peers) - 1


def test_no_identity_is_an_error() -> None:
    view = build_node_view("rr9", CLIENTS, [], [])
    with pytest.raises(ValueError, match="no BGP address"):
        render_bird_config(view)


@pytest.mark.parametrize(("value", "ok"), [
    ("plain", True), ("with space and 'quotes' {};#$%/*", True), ("x" * 80, True), ("x" * 81, False),
    ("", False), ('a"b', False), ("a\\b", False), ("a\nb", False), ("a\tb", False), ("caf\u00e9", False),
    ("nul\x00", False), (None, False), (5, False)])
def test_password_grammar(value: object, ok: bool) -> None:
    assert (password_error(value) is None) is ok


def test_protocol_names_are_symbols() -> None:
    assert protocol_name("10.0.0.11", 179) == "Node_10_0_0_11"
    assert protocol_name("fd00::0011", 1790) == "Node_fd00__11_port_1790"
    with pytest.raises(ValueError):
        protocol_name("10.0.0.11; evil", 179)


@needs_bird
@settings(max_examples=60, deadline=None)
@given(pw=st.text(min_size=0, max_size=90))
def test_hostile_password_fails_validation_or_parses_to_the_intended_protocols(pw: str, tmp_path_factory:
                                                                               pytest.TempPathFactory) -> None:
    """Either the password is refused (the peer is left out, named), or BIRD parses the text and it declares
    exactly one BGP protocol per intended peer; the parse check here, the running-BIRD check in
    tests/integration/test_bgp_bird_engine.py."""
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR])
    hostile = dataclasses.replace(view.peers[0], password=pw)
    rendered = render_bird_config(dataclasses.replace(view, peers=(hostile, *view.peers[1:])))
    if password_error(pw) is not None:
        assert [e.path for e in rendered.errors] == [f"peer {hostile.name}"]
        assert hostile.address not in rendered.protocols.values()
        return
    assert rendered.errors == ()
    proc = _bird_parses(rendered.text, tmp_path_factory.mktemp("bird"))
    assert proc.returncode == 0, (pw, proc.stderr)
    assert sorted(rendered.protocols.values()) == sorted(p.address for p in view.peers)


SHOW_PROTOCOLS_ALL = [
    (2002, "Name       Proto      Table      State  Since         Info"),
    (1002, "device1    Device     ---        up     2026-12-03 17:25:29  "),
    (1006, ""),
    (1002, "Node_10_0_0_11 BGP        ---        up     2026-12-03 17:25:30  Established   "),
    (1006, "  BGP state:          Established"),
    (1006, "    Neighbor address: 10.0.0.11"),
    (1006, "  Channel ipv4"),
    (1006, "    Routes:         4 imported, 8 exported, 4 preferred"),
    (1006, ""),
    (1002, "Node_10_0_0_12 BGP        ---        start  2026-12-03 17:26:01  Active        Socket: Connection refused"),
    (1006, "  BGP state:          Active"),
    (1006, "    Last error:       Hold timer expired"),
    (1006, "  Channel ipv4"),
    (1006, "    State:          DOWN"),
    (0, ""),
]


def test_show_protocols_all_is_parsed() -> None:
    got = parse_protocols(SHOW_PROTOCOLS_ALL)
    assert set(got) == {"Node_10_0_0_11", "Node_10_0_0_12"}, "only BGP protocols"
    up, down = got["Node_10_0_0_11"], got["Node_10_0_0_12"]
    assert (up.state, up.bgp_state, up.imported, up.exported, up.last_error) == ("up", "Established", 4, 8, "")
    assert (down.state, down.bgp_state, down.imported, down.last_error) == ("start", "Active", 0, "Hold timer expired")
    assert up.since > 0 and down.since - up.since == 31


def test_show_protocols_brief_is_parsed() -> None:
    got = parse_protocols([
        (2002, "Name       Proto      Table      State  Since         Info"),
        (1002, "Node_10_0_0_11 BGP        ---        up     2026-12-03 17:25:30  Established   "),
        (1002, "Node_10_0_0_12 BGP   ---   start  2026-12-03 17:26:01  Active        Socket: Connection refused"),
        (0, "")])
    assert (got["Node_10_0_0_11"].bgp_state, got["Node_10_0_0_11"].last_error) == ("Established", "")
    down = got["Node_10_0_0_12"]
    assert (down.bgp_state, down.last_error) == ("Active", "Socket: Connection refused")
    assert got["Node_10_0_0_11"].imported == 0, "no counts without 'all'"


def test_bfd_only_where_enabled() -> None:
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR])
    text = render_bird_config(view, frozenset({"10.0.0.11"})).text
    assert "bfd" not in text and "direct;" not in text, "no BFD configured: no protocol bfd, BGP sessions as before"


SHOW_BFD_SESSIONS = [
    (1020, "bfd1:"),
    (1020, "    IP address                Interface  State      Since         Interval  Timeout"),
    (1020, "    10.0.0.11                 eth0       Up         2026-12-04 14:48:44.716    0.300    0.900"),
    (1020, "    10.0.0.12                 ---        Down       2026-12-04 14:48:45.000    1.000    0.000"),
    (1020, "    fd00::0011                eth0       Init       2026-12-04 14:48:46.250    1.000    3.000"),
    (1020, "    not-an-address            eth0       Up         2026-12-04 14:48:46.250    1.000    3.000"),
    (0, ""),
]


def test_show_bfd_sessions_is_parsed() -> None:
    got = parse_bfd_sessions(SHOW_BFD_SESSIONS)
    assert set(got) == {"10.0.0.11", "10.0.0.12", "fd00::11"}, "canonical addresses; junk rows skipped"
    up, down = got["10.0.0.11"], got["10.0.0.12"]
    assert (up.state, up.interval_s, up.timeout_s, up.multihop) == ("up", 0.3, 0.9, False)
    assert (down.state, down.multihop) == ("down", True)
    assert round(down.since - up.since, 3) == 0.284, "milliseconds kept"
    assert got["fd00::11"].state == "init"


@pytest.mark.parametrize("bad", [
    {"min_rx_us": "300 ms; }; protocol bgp evil { neighbor 6.6.6.6 as 1; #"}, {"min_tx_us": 0},
    {"multiplier": 256}, {"multiplier": True}, {"min_rx_us": 300_000.5}])
def test_bfd_values_are_re_serialised_or_the_peer_left_out(bad: dict[str, object]) -> None:
    """The renderer takes only integers in range for BFD timers (a bypassed validation cannot inject text)."""
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False, bfd={"enabled": True})],
                           [TO_RR])
    first = view.peers[0]
    assert first.bfd is not None
    hostile = dataclasses.replace(first, bfd=dataclasses.replace(first.bfd, **bad))  # type: ignore[arg-type]
    rendered = render_bird_config(dataclasses.replace(view, peers=(hostile, *view.peers[1:])), frozenset())
    assert [e.path for e in rendered.errors] == [f"peer {hostile.name}"]
    assert "evil" not in rendered.text and hostile.address not in rendered.protocols.values()
    assert "protocol bfd { }" in rendered.text, "the other peers keep their BFD"


def _blocks(text: str) -> dict[str, str]:
    return {b.split()[0]: b for b in text.split("protocol bgp ")[1:]}


def test_source_address_none_writes_no_local_address() -> None:
    """Calico writes `source address` for UseNodeIP only; None leaves the source to the kernel's route lookup."""
    peers = [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)", sourceAddress="None"),
             peer("up", node="rr1", peerIP="10.0.0.254:1179", asNumber=65000, sourceAddress="UseNodeIP")]
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False, listenPort=1790)], peers)
    blocks = _blocks(render_bird_config(view).text)
    assert "  local port 1790 as 64512;" in blocks["Node_10_0_0_11_port_1790"]
    assert "  local 10.0.0.2 port 1790 as 64512;" in blocks["Node_10_0_0_254_port_1179"]


def test_keep_original_next_hop_only_for_ebgp_peers() -> None:
    """`next hop keep` for an eBGP peer, as Calico's template writes it; off by default."""
    peers = [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)", keepOriginalNextHop=True),
             peer("up", node="rr1", peerIP="10.0.0.254", asNumber=65000, keepOriginalNextHop=True),
             peer("up2", node="rr1", peerIP="10.0.0.253", asNumber=65000)]
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], peers)
    blocks = _blocks(render_bird_config(view).text)
    assert "next hop keep;" in blocks["Node_10_0_0_254"]
    assert "next hop" not in blocks["Node_10_0_0_253"]
    assert "next hop" not in blocks["Node_10_0_0_11"], "iBGP: BIRD keeps the next hop of a BGP route already"


@pytest.mark.parametrize(("single_hop", "ttl", "refused"), [(True, 0, False), (False, 0, True), (True, 1, True)])
def test_source_address_none_with_multihop_bfd_is_refused_for_that_peer(single_hop: bool, ttl: int,
                                                                        refused: bool) -> None:
    """BIRD refuses multihop BFD without a local address: that peer is left out, named; the rest is rendered."""
    spec: dict[str, object] = {"nodeSelector": "all()", "peerSelector": "has(rr)", "sourceAddress": "None",
                               "bfd": {"enabled": True}}
    if ttl:
        spec["ttlSecurity"] = ttl
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [peer("to-rr", **spec)])
    hops = frozenset({"10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.3"}) if single_hop else frozenset()
    rendered = render_bird_config(view, hops)
    if refused:
        assert len(rendered.errors) == len(view.peers) and rendered.protocols == {}
        assert all("sourceAddress None" in e.reason and "multihop BFD" in e.reason for e in rendered.errors)
    else:
        assert rendered.errors == () and len(rendered.protocols) == len(view.peers)


@needs_bird
def test_source_address_none_with_multihop_bfd_is_what_bird_refuses(tmp_path: Path) -> None:
    """The refusal above is BIRD's own rule, not a guess: the block rendered anyway does not parse."""
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)],
                           [peer("to-rr", nodeSelector="all()", peerSelector="has(rr)", bfd={"enabled": True})])
    text = render_bird_config(view).text.replace("local 10.0.0.2 as", "local as")
    proc = _bird_parses(text, tmp_path)
    assert proc.returncode != 0 and "Multihop BGP with BFD requires specified local address" in proc.stderr


def test_ebgp_multihop_is_birds_multihop_for_ebgp_peers() -> None:
    """ebgpMultihop N (N > 1) is `multihop N;` (BIRD's outgoing TTL); 1 and iBGP peers write nothing."""
    peers = [peer("far", node="rr1", peerIP="192.0.2.1", asNumber=65000, ebgpMultihop=2),
             peer("far255", node="rr1", peerIP="192.0.2.2", asNumber=65000, ebgpMultihop=255),
             peer("near", node="rr1", peerIP="10.0.0.254", asNumber=65000, ebgpMultihop=1),
             peer("plain", node="rr1", peerIP="10.0.0.253", asNumber=65000),
             peer("ibgp", node="rr1", peerIP="10.0.0.200", asNumber=64512, ebgpMultihop=4)]
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], peers)
    assert view.errors == ()
    rendered = render_bird_config(view)
    assert rendered.errors == ()
    blocks = _blocks(rendered.text)
    assert "  multihop 2;" in blocks["Node_192_0_2_1"] and "  multihop 255;" in blocks["Node_192_0_2_2"]
    for name in ("Node_10_0_0_254", "Node_10_0_0_253", "Node_10_0_0_200"):
        assert "multihop" not in blocks[name], name


@pytest.mark.parametrize(("spec", "reason"), [
    ({"bfd": {"enabled": True}, "sourceAddress": "None"}, "multihop BFD"),
])
def test_ebgp_multihop_combinations_bird_cannot_honour_are_refused_for_that_peer(spec: dict[str, object],
                                                                                 reason: str) -> None:
    """BFD without a local address on a multihop session: that peer is left out, named. (ebgpMultihop with
    ttlSecurity is refused by validation already: GTSM sends TTL 255.)"""
    far = peer("far", node="rr1", peerIP="192.0.2.1", asNumber=65000, ebgpMultihop=3, **spec)
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [TO_RR, far])
    rendered = render_bird_config(view)
    assert [(e.path, e.document) for e in rendered.errors] == [(f"peer {view.peer('192.0.2.1').name}", "BGPPeer/far")]
    assert reason in rendered.errors[0].reason and "192.0.2.1" not in rendered.protocols.values()
    assert len(rendered.protocols) == len(view.peers) - 1, "the other peers are rendered"


@needs_bird
def test_ebgp_multihop_refusals_are_what_bird_refuses(tmp_path: Path) -> None:
    """Multihop BFD without a local address does not parse in BIRD; and with ttl security BIRD has one `multihop`
    only (the accepted hop count), so nothing could carry the outgoing TTL."""
    far = peer("far", node="rr1", peerIP="192.0.2.1", asNumber=65000, ebgpMultihop=3, bfd={"enabled": True})
    view = build_node_view("rr1", [*CLIENTS, *RRS], [cfg(nodeToNodeMeshEnabled=False)], [far])
    text = render_bird_config(view).text
    assert "  multihop 3;" in text and _bird_parses(text, tmp_path).returncode == 0
    proc = _bird_parses(text.replace("local 10.0.0.2 as", "local as"), tmp_path)
    assert proc.returncode != 0 and "Multihop BGP with BFD requires specified local address" in proc.stderr

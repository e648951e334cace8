"""Nothing a field sends to ExaBGP becomes code: property tests against ExaBGP 5's own parsers.

Every field that reaches ExaBGP's configuration or API text is fed arbitrary strings. Each
either fails validation (the model's document check, or its check at the view's edge) or renders to
text that ExaBGP's configuration parser loads into exactly the intended objects: the one
``l3net-bridge`` process with the intended argv, the intended neighbours, the intended
password bytes. The payloads of issue 13 are regression cases.
"""

from __future__ import annotations

import base64
import ipaddress
import tempfile
from pathlib import Path
from typing import Any

import pytest
from exabgp.configuration.configuration import Configuration
from exabgp.environment import getenv
from exabgp.logger import log
from exabgp.reactor.api.command.limit import extract_neighbors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp.commands import Advertisement, announce_batch_command, announce_command, eor_command, withdraw_batch_command
from bgp.exabgp_config import PROCESS_NAME, render_exabgp_config
from bgp.view import build_node_view
from l3net.errors import ValidationError
from l3net.model.bgp_specs import BGPPeerSpec, checked
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document
from l3net.model.values import parse_peer_ip

pytestmark = pytest.mark.unit

HELPER = ["/usr/bin/python3", "-m", "bgp.bridge", "--socket", "/run/l3net/n1/bgp/bridge.sock"]
INJECTION = 'x";}process p{run sh -c id>p;encoder text;}template{neighbor t{#'
# Hostile text: quotes, braces, separators, comments, newlines, NULs, non-ASCII, surrogates.
HOSTILE = st.text(alphabet=st.characters(codec=None), max_size=90) | st.sampled_from([
    INJECTION, '"', "\n", "a\nprocess p { run /bin/sh; }", "\\", "\\\"", "}", "{", ";", "#", "[", "]",
    "fd00::2%x\nshutdown", "10.0.0.9 ; neighbor 10.6.6.6", "é" * 40, "\x00", "a" * 80, "a" * 81])

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _exabgp_env() -> None:
    log.init(getenv())


def parse_config(text: str) -> Configuration:
    """ExaBGP's own configuration parser on ``text`` (asserts that it accepts it)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "exabgp.conf"
        path.write_text(text)
        conf = Configuration([str(path)])
        assert conf.reload(), f"ExaBGP refused the rendered configuration: {conf.error}\n{text}"
        return conf


def node(name: str, ip: str, v6: str | None = None, **bgp: Any) -> Resource:
    spec: dict[str, Any] = {"ipv4Address": ip, **bgp}
    if v6:
        spec["ipv6Address"] = v6
    return Resource(kind="Node", name=name, spec={"bgp": spec})


NODES = [node("n1", "10.0.0.1/24", v6="fd00::1/64"), node("n2", "10.0.0.2/24", v6="fd00::2/64")]


def model_ok(kind: str, name: str, spec: dict[str, Any]) -> bool:
    try:
        resource_from_document({"apiVersion": "l3net.io/v1", "kind": kind, "metadata": {"name": name},
                                "spec": spec})
    except ValidationError:
        return False
    return True


def assert_only_intended(conf: Configuration, neighbours: set[str]) -> None:
    assert list(conf.processes) == [PROCESS_NAME]
    assert conf.processes[PROCESS_NAME]["run"] == HELPER
    assert {str(n["peer-address"]) for n in conf.neighbors.values()} == neighbours
    for n in conf.neighbors.values():
        assert list(n.changes) == []   # no route came in through the configuration


def md5_of(conf: Configuration, peer: str) -> bytes | None:
    for n in conf.neighbors.values():
        if str(n["peer-address"]) == peer:
            pw = n["md5-password"]
            if not pw:
                return None
            assert n["md5-base64"] is True
            return base64.b64decode(pw, validate=True)
    raise AssertionError(f"no neighbour {peer}")


# -- passwords -------------------------------------------------------------------------------
def check_password(pw: str, where: str) -> None:
    if where == "peer":
        spec = {"peerIP": "10.0.0.9", "asNumber": 64512, "password": {"value": pw}}
        valid = model_ok("BGPPeer", "p", spec) and not checked(Resource("BGPPeer", "p", spec), BGPPeerSpec).errors
        view = build_node_view("n1", NODES, [], [Resource(kind="BGPPeer", name="p", spec=spec)])
        peer = "10.0.0.9"
    else:
        spec = {"nodeMeshPassword": {"value": pw}}
        valid = model_ok("BGPConfiguration", "default", spec)
        view = build_node_view("n1", NODES, [Resource(kind="BGPConfiguration", name="default", spec=spec)], [])
        peer = "10.0.0.2"
    if not valid:
        assert view.errors, "the model refused it, so must the view"
        assert pw not in " ".join(str(e) for e in view.errors) or len(pw) < 3, "a refused password was echoed"
        return
    assert view.errors == ()
    conf = parse_config(render_exabgp_config(view, HELPER))
    assert_only_intended(conf, {p.address for p in view.peers})
    assert md5_of(conf, peer) == pw.encode("utf-8")


@SETTINGS
@given(pw=HOSTILE)
def test_any_peer_password_is_refused_or_reaches_exabgp_byte_exact(pw: str) -> None:
    check_password(pw, "peer")


@SETTINGS
@given(pw=HOSTILE)
def test_any_mesh_password_is_refused_or_reaches_exabgp_byte_exact(pw: str) -> None:
    check_password(pw, "mesh")


@pytest.mark.parametrize("pw", [INJECTION, '"', "\n", "a\"\nb", "}{;#", "x" * 80, "ü" * 40])
def test_issue_13_password_payloads_are_data_not_configuration(pw: str) -> None:
    for where in ("peer", "mesh"):
        check_password(pw, where)


def test_too_long_password_is_refused_without_echoing_it() -> None:
    secret = "s3cr3t-" + "x" * 80
    with pytest.raises(ValidationError) as exc:
        resource_from_document({"apiVersion": "l3net.io/v1", "kind": "BGPPeer", "metadata": {"name": "p"},
                                "spec": {"peerIP": "10.0.0.9", "asNumber": 1, "password": {"value": secret}}})
    assert "spec.password.value" in str(exc.value) and "s3cr3t" not in str(exc.value)


# -- addresses -------------------------------------------------------------------------------
@SETTINGS
@given(ip=HOSTILE | st.ip_addresses().map(str) | st.ip_addresses().map(lambda a: f"{a}%{'x'}"))
def test_any_peer_ip_is_refused_or_becomes_exactly_one_neighbour(ip: str) -> None:
    spec = {"peerIP": ip, "asNumber": 64512}
    valid = model_ok("BGPPeer", "p", spec)
    view = build_node_view("n1", NODES, [], [Resource(kind="BGPPeer", name="p", spec=spec)])
    if not valid:
        assert view.errors or all(p.name.startswith("Mesh_") for p in view.peers)
        return
    canonical, _ = parse_peer_ip(ip)
    assert "%" not in canonical
    conf = parse_config(render_exabgp_config(view, HELPER))
    assert_only_intended(conf, {p.address for p in view.peers})
    assert {p.address for p in view.peers} <= {"10.0.0.2", "fd00::2", canonical}


@SETTINGS
@given(v4=HOSTILE, v6=HOSTILE, name=HOSTILE)
def test_any_node_address_or_name_is_refused_or_renders_cleanly(v4: str, v6: str, name: str) -> None:
    other = Resource(kind="Node", name=name or "x", spec={"bgp": {"ipv4Address": v4, "ipv6Address": v6}})
    view = build_node_view("n1", [NODES[0], other], [], [])
    text = render_exabgp_config(view, HELPER)
    conf = parse_config(text)
    assert_only_intended(conf, {p.address for p in view.peers})
    for p in view.peers:
        assert "%" not in p.address


def test_issue_13_scoped_address_is_refused_everywhere() -> None:
    bad = "fd00::2%x\nshutdown"
    assert not model_ok("BGPPeer", "p", {"peerIP": bad, "asNumber": 1})
    assert not model_ok("BGPPeer", "p", {"peerIP": f"[{bad}]:179", "asNumber": 1})
    assert not model_ok("Node", "n", {"bgp": {"ipv6Address": bad + "/64"}})
    assert not model_ok("Node", "n", {"bgp": {"routeReflectorClusterID": "1.1.1.1%x"}})
    assert checked(Resource("BGPPeer", "p", {"peerIP": bad, "asNumber": 1}), BGPPeerSpec).errors
    with pytest.raises(ValueError):
        announce_command(bad, "10.0.0.0/26", Advertisement())
    with pytest.raises(ValueError):
        withdraw_batch_command([bad], ["10.0.0.0/26"])
    with pytest.raises(ValueError):
        eor_command(bad)
    with pytest.raises(ValueError):
        announce_command("10.0.0.2", "10.0.0.0/26", Advertisement(next_hop=bad))


# -- API lines -------------------------------------------------------------------------------
PREFIXES = st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
                     st.ip_addresses(v=4), st.integers(0, 32))


@SETTINGS
@given(peer=HOSTILE | st.ip_addresses().map(str), prefix=HOSTILE | PREFIXES,
       nh=st.none() | HOSTILE | st.ip_addresses().map(str), comm=st.lists(HOSTILE, max_size=2),
       origin=st.sampled_from(["igp", "egp", "incomplete"]) | HOSTILE)
def test_api_commands_are_one_line_addressed_to_exactly_the_intended_neighbour(
        peer: str, prefix: str, nh: str | None, comm: list[str], origin: str) -> None:
    adv = Advertisement(next_hop=nh, origin=origin, communities=tuple(comm))
    try:
        line = announce_batch_command([peer], [prefix], adv)
    except ValueError:
        return
    assert "\n" not in line and "\r" not in line and "%" not in line
    neighbours, rest = extract_neighbors(line)
    assert neighbours == [[f"neighbor {ipaddress.ip_address(peer)}"]]
    words = rest.split()
    assert words[:3] == ["announce", "attributes", "next-hop"]
    assert words[-2:] == ["nlri", str(ipaddress.ip_network(prefix))]
    assert words.count("nlri") == 1 and "neighbor" not in words


def test_multihop_and_limits_render_to_what_exabgp_reads() -> None:
    spec = {"peerIP": "192.0.2.1", "asNumber": 65000, "ebgpMultihop": 3, "password": {"value": "p w\"{"}}
    view = build_node_view("n1", NODES, [], [Resource(kind="BGPPeer", name="far", spec=spec)])
    conf = parse_config(render_exabgp_config(view, HELPER))
    assert_only_intended(conf, {"10.0.0.2", "fd00::2", "192.0.2.1"})
    far = next(n for n in conf.neighbors.values() if str(n["peer-address"]) == "192.0.2.1")
    assert far["outgoing-ttl"] == 3 and md5_of(conf, "192.0.2.1") == b'p w"{'


# -- every other field that reaches ExaBGP -----------------------------------------------------
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | HOSTILE
    | st.sampled_from(["3s", "90s", "1m30s", "0", "100000s", "9999999h", "65000", "1.1", "65535.65535", "Debug",
                       "UseNodeIP", "None", "all()", "has(rack)", "n2"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["value", "name", "key"]), inner,
                                                                max_size=2), max_leaves=4)
PEER_FIELDS = ["asNumber", "holdTime", "keepaliveTime", "maxRestartTime", "ttlSecurity", "ebgpMultihop",
               "maxPrefixes", "sourceAddress", "node", "nodeSelector", "filters", "keepOriginalNextHop"]
CONFIG_FIELDS = ["asNumber", "holdTime", "keepaliveTime", "restartTime", "listenPort", "logSeverityScreen",
                 "gracefulRestart", "nodeToNodeMeshEnabled", "maxPrefixes", "communities", "prefixAdvertisements"]


@SETTINGS
@given(field=st.sampled_from(PEER_FIELDS), value=ANY_VALUE)
def test_any_other_peer_field_is_refused_or_renders_to_exactly_the_intended_neighbours(field: str, value: Any) -> None:
    spec = {"peerIP": "10.0.0.9", "asNumber": 65000, field: value}
    if not model_ok("BGPPeer", "p", spec):
        return
    view = build_node_view("n1", NODES, [], [Resource(kind="BGPPeer", name="p", spec=spec)])
    conf = parse_config(render_exabgp_config(view, HELPER))
    assert_only_intended(conf, {p.address for p in view.peers})
    assert {p.address for p in view.peers} <= {"10.0.0.2", "fd00::2", "10.0.0.9"}


@SETTINGS
@given(field=st.sampled_from(CONFIG_FIELDS), value=ANY_VALUE)
def test_any_configuration_field_is_refused_or_renders_to_exactly_the_mesh(field: str, value: Any) -> None:
    spec = {field: value}
    if not model_ok("BGPConfiguration", "default", spec):
        return
    view = build_node_view("n1", NODES, [Resource(kind="BGPConfiguration", name="default", spec=spec)], [])
    conf = parse_config(render_exabgp_config(view, HELPER))
    assert_only_intended(conf, {p.address for p in view.peers})
    mesh = {"10.0.0.2", "fd00::2"} if view.peers else set()
    assert {p.address for p in view.peers} == mesh

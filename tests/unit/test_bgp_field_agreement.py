"""l3netctl's validation and the agent's BGP view take exactly the same BGP values (issue 14).

One table of inputs per field goes through both sides: the model's document check
(``resource_from_document``, what ``l3netctl apply`` runs) and the agent's ``build_node_view``.
Every input the model accepts, the agent accepts with the value the model means; every input
the model refuses, the agent refuses too, at the same field. The regression: ``holdTime: "1.5m"``
passed ``l3netctl`` and was refused by the agent, which had a second duration grammar.

The agent meets a document in two ways, and both are walked: as the datastore hands it over
(``l3net.model.decode``, then the typed spec; the last tests, for every field of the three kinds) and
as a Resource built by hand (checked with the model's rules at the view's edge; the tests above).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from bgp.secrets import SecretReader
from bgp.view import NodeBGPView, PeerSpec, build_node_view
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.decode import Invalid, decode
from l3net.model.parity import PARITY
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

NODES = [Resource("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24", "ipv6Address": "fd00::1/64"}}),
         Resource("Node", "n2", {"bgp": {"ipv4Address": "10.0.0.2/24"}})]
PEER = {"peerIP": "10.0.0.9", "asNumber": 64512}

DURATIONS: list[Any] = [
    "0", "0s", "3s", "90s", "1.5m", "1m30s", "1h2m", "300ms", "2.5s", "3.5s", "0.5s", "2s", "1s", "65535s",
    "65535.5s", "65536s", "18h12m15s", "1h8m15s", "1h8m16s", "4095s", "4096s", ".5m", "5.m", "1.000000001s",
    "1500ms", "3000000us", "3000000µs", "3000000μs", "3000000000ns", "2h", "1h", "45s", "5m",
    # hostile or wrong
    "", "s", "m", ".s", "1.5", "90", "3x", "3S", "-3s", "+3s", "3 s", " 3s", "3s ", "3s\n", "1e3s", "\u0663s",
    "9" * 30 + "h", "2562048h", "1.5.5s", "3ss", "ms", "0x10s", "3s;", 'x";}', 90, 90.0, 0, True, -1, [], {},
]
ASNS: list[Any] = [
    1, 64512, 65535, 65536, 4294967295, "1.10", "0.1", "65535.65535", "1.0",
    0, -1, 4294967296, "64512", "", "0.0", "65536.1", "1.65536", "1.", ".1", "1.1.1", "\u0661.\u0661\u0660", " 1.10",
    64512.0, True, [], {},
]
PEER_IPS: list[Any] = [
    "10.0.0.9", "10.0.0.9:1790", "10.0.0.9:179", "fd00::9", "[fd00::9]:1790", "[fd00::9]", "10.0.0.9:65535",
    "", "10.0.0.9:0", "10.0.0.9:65536", "10.0.0.9:", "10.0.0.9:\u0663", "10.0.0.9:+80", "[10.0.0.9]:80", "[fd00::9",
    "[fd00::9]x", "[fd00::9]:", "fd00::9%eth0", "10.0.0.300", "010.0.0.9", "host:80", "10.0.0.9 ", 5, [],
]


def model_errors(kind: str, name: str, spec: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The paths the model refuses ``spec`` at, and the normalised spec when it accepts it."""
    try:
        res = resource_from_document({"apiVersion": "l3net.io/v1", "kind": kind, "metadata": {"name": name},
                                      "spec": spec})
    except ValidationError as exc:
        return sorted({e.path for e in exc.errors}), {}
    return [], dict(res.spec)


def peer_view(spec: dict[str, Any]) -> NodeBGPView:
    return build_node_view("n1", NODES, [], [Resource("BGPPeer", "p", spec)])


def config_view(spec: dict[str, Any]) -> NodeBGPView:
    return build_node_view("n1", NODES, [Resource("BGPConfiguration", "default", spec)], [])


def the_peer(view: NodeBGPView) -> PeerSpec:
    p = view.peer("10.0.0.9")
    assert p is not None, view.errors
    return p


def assert_same_verdict(model: list[str], view: NodeBGPView, field: str) -> None:
    agent = sorted({e.path for e in view.errors})
    assert (field in model) == (field in agent), f"model refuses at {model}, agent at {agent}"
    assert bool(model) == bool(agent), f"model refuses at {model}, agent at {agent}"


@pytest.mark.parametrize("value", DURATIONS, ids=repr)
@pytest.mark.parametrize("field", ["holdTime", "keepaliveTime", "maxRestartTime"])
def test_peer_durations(field: str, value: Any) -> None:
    spec = {**PEER, field: value}
    model, _ = model_errors("BGPPeer", "p", spec)
    view = peer_view(spec)
    assert_same_verdict(model, view, f"spec.{field}")
    if model:
        assert view.peer("10.0.0.9") is None, "a refused BGPPeer adds no peering"
        return
    seconds = resource_seconds(value)
    p = the_peer(view)
    got = {"holdTime": p.hold_time, "keepaliveTime": p.keepalive_time, "maxRestartTime": p.restart_time}[field]
    assert got == int(seconds)


@pytest.mark.parametrize("value", DURATIONS, ids=repr)
@pytest.mark.parametrize("field", ["holdTime", "keepaliveTime", "restartTime"])
def test_configuration_durations(field: str, value: Any) -> None:
    model, _ = model_errors("BGPConfiguration", "default", {field: value})
    view = config_view({field: value})
    assert_same_verdict(model, view, f"spec.{field}")
    mesh = view.peer("10.0.0.2")
    assert mesh is not None, "a refused timer never takes the mesh down"
    got = {"holdTime": mesh.hold_time, "keepaliveTime": mesh.keepalive_time, "restartTime": mesh.restart_time}[field]
    if model:
        assert got == {"holdTime": 90, "keepaliveTime": None, "restartTime": 120}[field], "the default applies"
    else:
        assert got == int(resource_seconds(value))


@pytest.mark.parametrize(("hold", "keepalive"), [
    ("9s", "3s"), ("9s", "9s"), ("9s", "10s"), ("0", "5s"), ("90s", "1.5m"), ("1.5m", "89s"), ("3s", "2.999s"),
    ("1.5m", "bad"), ("bad", "3s"),
])
@pytest.mark.parametrize("kind", ["BGPPeer", "BGPConfiguration"])
def test_keepalive_against_hold(kind: str, hold: str, keepalive: str) -> None:
    timers = {"holdTime": hold, "keepaliveTime": keepalive}
    if kind == "BGPPeer":
        model, _ = model_errors(kind, "p", {**PEER, **timers})
        view = peer_view({**PEER, **timers})
    else:
        model, _ = model_errors(kind, "default", timers)
        view = config_view(timers)
    assert model == sorted({e.path for e in view.errors})


@pytest.mark.parametrize("value", ASNS, ids=repr)
def test_peer_as_number(value: Any) -> None:
    spec = {**PEER, "asNumber": value, "ebgpMultihop": 2}
    model, normalised = model_errors("BGPPeer", "p", spec)
    view = peer_view(spec)
    assert_same_verdict(model, view, "spec.asNumber")
    if not model:
        assert the_peer(view).peer_as == normalised["asNumber"]


@pytest.mark.parametrize("value", ASNS, ids=repr)
def test_configuration_as_number(value: Any) -> None:
    model, normalised = model_errors("BGPConfiguration", "default", {"asNumber": value})
    view = config_view({"asNumber": value})
    assert_same_verdict(model, view, "spec.asNumber")
    assert view.as_number == (64512 if model else normalised["asNumber"])


@pytest.mark.parametrize("value", PEER_IPS, ids=repr)
def test_peer_ip(value: Any) -> None:
    spec = {**PEER, "peerIP": value}
    model, _ = model_errors("BGPPeer", "p", spec)
    view = peer_view(spec)
    assert_same_verdict(model, view, "spec.peerIP")
    peers = [p for p in view.peers if p.source == "BGPPeer/p"]
    if model:
        assert peers == []
    else:
        (p,) = peers
        assert (p.address, p.port) == PEER_IP_MEANS[value]


# What each accepted peerIP means: the address re-serialised, the port defaulting to 179.
PEER_IP_MEANS = {"10.0.0.9": ("10.0.0.9", 179), "10.0.0.9:1790": ("10.0.0.9", 1790), "10.0.0.9:179": ("10.0.0.9", 179),
                 "fd00::9": ("fd00::9", 179), "[fd00::9]:1790": ("fd00::9", 1790), "[fd00::9]": ("fd00::9", 179),
                 "10.0.0.9:65535": ("10.0.0.9", 65535)}


def resource_seconds(value: str) -> float:
    """The seconds a duration means, written out for the table's accepted values (not re-parsed)."""
    return SECONDS[value]


SECONDS = {"0": 0, "0s": 0, "3s": 3, "90s": 90, "1.5m": 90, "1m30s": 90, "1h2m": 3720, "300ms": 0.3, "2.5s": 2.5,
           "3.5s": 3.5, "0.5s": 0.5, "2s": 2, "1s": 1, "65535s": 65535, "65535.5s": 65535.5, "18h12m15s": 65535,
           "1h8m15s": 4095, "1h8m16s": 4096, "4095s": 4095, ".5m": 30, "5.m": 300, "1.000000001s": 1.000000001,
           "1500ms": 1.5, "3000000us": 3, "3000000µs": 3, "3000000μs": 3, "3000000000ns": 3, "2h": 7200, "1h": 3600,
           "45s": 45, "5m": 300, "65536s": 65536, "4096s": 4096}


def test_the_regression_hold_time_one_and_a_half_minutes() -> None:
    """``holdTime: "1.5m"`` passes l3netctl and the agent holds the session for 90 s."""
    assert model_errors("BGPPeer", "p", {**PEER, "holdTime": "1.5m"})[0] == []
    view = peer_view({**PEER, "holdTime": "1.5m"})
    assert view.errors == () and the_peer(view).hold_time == 90
    conf = config_view({"holdTime": "1.5m"})
    assert conf.errors == () and {p.hold_time for p in conf.peers} == {90}


# -- every other field of both kinds ----------------------------------------------------------------
# Values either side could take differently: type confusion (strings for numbers, numbers for booleans),
# the ends of each range, enumerations in the wrong case, nested objects with a bad or unknown member.
BFD_VALUES: list[Any] = [
    {"enabled": True}, {"enabled": True, "minRxInterval": "300ms", "minTxInterval": "300ms", "multiplier": 3},
    {"enabled": "yes"}, {"minRxInterval": "1ms"}, {"minTxInterval": "61s"}, {"multiplier": 0}, {"multiplier": 256},
    {"multiplier": True}, {"enabled": True, "interval": "1s"}, "on", [],
]
PASSWORDS: list[Any] = [
    {"value": "s3cret"}, {"value": "x" * 80}, {"value": "x" * 81}, {"value": ""}, {"value": "<redacted>"},
    {"value": "\ud800"}, {"value": 5}, {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh.pw"}},
    {"secretKeyRef": {"name": "Bad_Name", "key": "pw"}}, {"secretKeyRef": {"name": "bgp-secrets", "key": ".."}},
    {"secretKeyRef": {"name": "bgp-secrets"}}, {"value": "a", "secretKeyRef": {"name": "bgp-secrets", "key": "pw"}},
    {}, "plain", {"value": "a", "extra": 1},
]
SELECTORS: list[Any] = ["all()", "role == 'tor'", "has(rack)", "role ==", "", "role == 'a' &&", 5, ["all()"]]
PEER_FIELDS: dict[str, list[Any]] = {
    "node": ["n1", "n2", "N1", "", "-n1", "n1.", "a" * 254, 5],
    "nodeSelector": SELECTORS,
    "peerSelector": SELECTORS,
    "ebgpMultihop": [1, 2, 255, 256, 0, -1, True, "2", 2.0, 2.5],
    "maxPrefixes": [1, 10_000_000, 10_000_001, 0, -5, True, "5", 5.0],
    "ttlSecurity": [0, 1, 255, 256, -1, True, "1"],
    "filters": [[], ["f1"], ["f1", "f2"], ["f1", "f1"], ["F_1"], [""], [5], "f1", {}],
    "sourceAddress": ["UseNodeIP", "None", "none", "usenodeip", "", None, "10.0.0.1", 5, True],
    "keepOriginalNextHop": [False, True, None, "false", "true", 0, 1],
    "password": PASSWORDS,
    "bfd": BFD_VALUES,
}
SERVICE_IPS: list[Any] = [[{"cidr": "10.96.0.0/12"}], [{"cidr": "fd00:96::/108"}], [{"cidr": "10.96.0.1/12"}],
                          [{"cidr": "bad"}], [{}], [{"cidr": "10.96.0.0/12", "x": 1}], "10.96.0.0/12", [5]]
CONFIG_FIELDS: dict[str, list[Any]] = {
    "nodeToNodeMeshEnabled": [True, False, "false", 0],
    "listenPort": [179, 1, 65535, 0, 65536, "179", True, 179.0],
    "logSeverityScreen": ["Debug", "Info", "Warning", "Error", "Fatal", "info", "Verbose", 5],
    "gracefulRestart": [True, False, "true", 1],
    "maxPrefixes": [1, 10_000_000, 10_000_001, 0, True, "5"],
    "nodeMeshPassword": PASSWORDS,
    "communities": [[{"name": "c1", "value": "64512:100"}], [{"name": "big", "value": "1:2:3"}],
                    [{"name": "c1", "value": "64512:70000"}], [{"name": "C_1", "value": "1:1"}], [{"value": "1:1"}],
                    [{"name": "c1"}], [{"name": ["c1"], "value": "1:1"}], "c1", [5]],
    "prefixAdvertisements": [[{"cidr": "10.65.0.0/16", "communities": ["64512:1"]}],
                             [{"cidr": "10.65.0.0/16", "communities": ["nope"]}], [{"cidr": "bad"}],
                             [{"communities": ["1:1"]}], [{"cidr": "10.65.0.0/16", "communities": "1:1"}], [5],
                             [{"cidr": "10.65.0.0/16", "communities": [["1:1"], {"a": 1}, 5]}]],
    "serviceClusterIPs": SERVICE_IPS,
    "serviceExternalIPs": SERVICE_IPS,
    "serviceLoadBalancerIPs": SERVICE_IPS,
    "bfd": BFD_VALUES,
}
SECRET = "from-the-secret"


def paths(errors: Any) -> list[str]:
    return sorted({e.path for e in errors})


@pytest.fixture
def secrets(tmp_path: Any) -> SecretReader:
    (tmp_path / "bgp-secrets").mkdir()
    (tmp_path / "bgp-secrets" / "mesh.pw").write_text(SECRET)
    return SecretReader(tmp_path)


def test_every_field_of_both_kinds_has_a_table() -> None:
    """A field added to the model without a row here fails, so agreement stays total."""
    timers = {"holdTime", "keepaliveTime", "maxRestartTime", "restartTime", "asNumber", "peerIP"}
    assert set(PARITY["BGPPeer"]) == set(PEER_FIELDS) | (timers - {"restartTime"})
    assert set(PARITY["BGPConfiguration"]) == set(CONFIG_FIELDS) | (timers - {"maxRestartTime", "peerIP"})


def _cases(table: dict[str, list[Any]]) -> list[Any]:
    return [pytest.param(f, v, id=f"{f}={v!r}"[:80]) for f, vs in table.items() for v in vs]


# The BGPFilters the peers' ``filters`` may name (a missing one is a reference error, not a grammar).
FILTERS = [Resource("BGPFilter", n, {"importV4": [{"action": "Accept"}]}) for n in ("f1", "f2")]


@pytest.mark.parametrize(("field", "value"), _cases(PEER_FIELDS))
def test_every_peer_field(field: str, value: Any, secrets: SecretReader) -> None:
    spec = {"peerSelector": value} if field == "peerSelector" else {**PEER, field: value}
    model, normalised = model_errors("BGPPeer", "p", spec)
    view = build_node_view("n1", NODES, [], [Resource("BGPPeer", "p", spec)], FILTERS, secrets=secrets)
    assert paths(view.errors) == model
    ours = [p for p in view.peers if p.source == "BGPPeer/p"]
    if model and not all(p.startswith("spec.bfd") for p in model):
        assert ours == [], "a refused BGPPeer adds no peering"
        return
    if field in ("node", "nodeSelector", "peerSelector"):
        return  # accepted; whether it selects n1 is the selector tests' business
    p = the_peer(view)
    if field == "bfd":
        enabled = not model and isinstance(value, dict) and value.get("enabled") is True
        assert (p.bfd is not None) == enabled, "refused BFD settings: the peering runs without BFD"
    elif field == "password":
        assert p.password == (value.get("value") or SECRET)
    elif field == "maxPrefixes":
        assert p.max_prefixes == normalised[field]
    elif field == "ttlSecurity":
        assert p.ttl_security == normalised[field]
    elif field == "ebgpMultihop":
        assert p.multihop in (None, normalised[field]), "kept for an eBGP peer off the node's subnets"
    elif field == "filters":
        assert len(p.import_rules) == len(normalised[field])
    elif field == "sourceAddress":
        assert p.source_node_ip is (normalised.get(field) != "None"), "absent or UseNodeIP: the node's address"
    elif field == "keepOriginalNextHop":
        assert p.keep_next_hop is (normalised.get(field) is True)


@pytest.mark.parametrize(("field", "value"), _cases(CONFIG_FIELDS))
def test_every_configuration_field(field: str, value: Any, secrets: SecretReader) -> None:
    model, normalised = model_errors("BGPConfiguration", "default", {field: value})
    view = build_node_view("n1", NODES, [Resource("BGPConfiguration", "default", {field: value})], [],
                           secrets=secrets)
    assert paths(view.errors) == model
    mesh = view.peer("10.0.0.2")
    if field == "nodeToNodeMeshEnabled" and not model and normalised[field] is False:
        assert mesh is None
        return
    assert mesh is not None, "a refused field never takes the mesh down"
    default = build_node_view("n1", NODES, [], [])
    if model:   # refused: as if the field were absent
        assert (view.listen_port, view.log_severity, view.peers, view.communities) == \
            (default.listen_port, default.log_severity, default.peers, default.communities)
    elif field == "listenPort":
        assert view.listen_port == normalised[field]
    elif field == "logSeverityScreen":
        assert view.log_severity == normalised[field]
    elif field == "gracefulRestart":
        assert mesh.graceful_restart is normalised[field]
    elif field == "maxPrefixes":
        assert mesh.max_prefixes == normalised[field]
    elif field == "nodeMeshPassword":
        assert mesh.password == (value.get("value") or SECRET)
    elif field == "prefixAdvertisements":
        assert [c.value for c in view.communities] == list(value[0]["communities"])


@pytest.mark.parametrize("field", ["asNumber", "nodeToNodeMeshEnabled", "serviceClusterIPs"])
def test_a_node_configuration_may_not_set_cluster_wide_fields_on_either_side(field: str) -> None:
    value = {"asNumber": 65001, "nodeToNodeMeshEnabled": False, "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}[field]
    model, _ = model_errors("BGPConfiguration", "node.n1", {field: value})
    view = build_node_view("n1", NODES, [Resource("BGPConfiguration", "node.n1", {field: value})], [])
    assert model == [f"spec.{field}"] == paths(view.errors)
    assert view.as_number == 64512 and view.peer("10.0.0.2") is not None


# -- the agent's own path: the datastore's bytes, decoded once, read typed ---------------------------------------
KEYS = KeyLayout("/l3net-test/")
PLURALS = {"Node": "nodes", "BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers"}


def as_the_agent_decodes(kind: str, name: str, spec: dict[str, Any]) -> Resource | Invalid:
    """What the agent's model (and the route reflector's store) holds for this document once stored."""
    doc = {"apiVersion": "l3net.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    return decode(KEYS, KEYS.resource(PLURALS[kind], name), json.dumps(doc).encode(), 3)


def _timer_table(fields: tuple[str, ...]) -> dict[str, list[Any]]:
    return {f: DURATIONS for f in fields}


ALL_PEER_FIELDS: dict[str, list[Any]] = {**_timer_table(("holdTime", "keepaliveTime", "maxRestartTime")),
                                         "asNumber": ASNS, "peerIP": PEER_IPS, **PEER_FIELDS}
ALL_CONFIG_FIELDS: dict[str, list[Any]] = {**_timer_table(("holdTime", "keepaliveTime", "restartTime")),
                                           "asNumber": ASNS, **CONFIG_FIELDS}
NODE_FIELDS: dict[str, list[Any]] = {
    "ipv4Address": ["10.0.0.5/24", "10.0.0.5", "10.0.0.5/32", "10.0.0.5/0", "fd00::5/64", "10.0.0.300/24",
                    "10.0.0.5/33", "", "10.0.0.5 ", "010.0.0.5/24", "10.0.0.5%x/24", 5, True, []],
    "ipv6Address": ["fd00::5/64", "FD00:0::5/64", "fd00::5", "10.0.0.5/24", "fd00::5%eth0/64", "fd00::5/129",
                    "", "fd00::5\n", 5, {}],
    "asNumber": ASNS,
    "routeReflectorClusterID": ["224.0.0.1", "1.1.1.1", "fd00::1", "1.1.1.1%x", "1.1.1", "", " 1.1.1.1", 5],
}


def test_every_bgp_field_of_the_three_kinds_has_a_table() -> None:
    assert set(ALL_PEER_FIELDS) == set(PARITY["BGPPeer"])
    assert set(ALL_CONFIG_FIELDS) == set(PARITY["BGPConfiguration"])
    assert {f"bgp.{f}" for f in NODE_FIELDS} == {p for p in PARITY["Node"] if p.startswith("bgp.")}


@pytest.mark.parametrize(("field", "value"), _cases(ALL_PEER_FIELDS))
def test_the_agent_decodes_exactly_what_l3netctl_takes_for_every_peer_field(field: str, value: Any,
                                                                             secrets: SecretReader) -> None:
    spec = {"peerSelector": value} if field == "peerSelector" else {**PEER, field: value}
    model, _ = model_errors("BGPPeer", "p", spec)
    got = as_the_agent_decodes("BGPPeer", "p", spec)
    if model:   # refused as a whole, at the same fields: the agent holds no such BGPPeer
        assert isinstance(got, Invalid) and paths(got.errors) == model
        return
    assert isinstance(got, Resource) and got.validated
    agent = build_node_view("n1", NODES, [], [got], FILTERS, secrets=secrets)
    by_hand = build_node_view("n1", NODES, [], [Resource("BGPPeer", "p", spec)], FILTERS, secrets=secrets)
    assert agent == by_hand, "the typed spec means what the document means, on either path"


@pytest.mark.parametrize(("field", "value"), _cases(ALL_CONFIG_FIELDS))
def test_the_agent_decodes_exactly_what_l3netctl_takes_for_every_configuration_field(
        field: str, value: Any, secrets: SecretReader) -> None:
    model, _ = model_errors("BGPConfiguration", "default", {field: value})
    got = as_the_agent_decodes("BGPConfiguration", "default", {field: value})
    if model:
        assert isinstance(got, Invalid) and paths(got.errors) == model
        return
    assert isinstance(got, Resource) and got.validated
    agent = build_node_view("n1", NODES, [got], [], secrets=secrets)
    by_hand = build_node_view("n1", NODES, [Resource("BGPConfiguration", "default", {field: value})], [],
                              secrets=secrets)
    assert agent == by_hand


def _node_reads(view: NodeBGPView, field: str) -> Any:
    return {"ipv4Address": view.address_v4, "ipv6Address": view.address_v6, "asNumber": view.as_number,
            "routeReflectorClusterID": view.cluster_id}[field]


@pytest.mark.parametrize(("field", "value"), _cases(NODE_FIELDS))
def test_every_node_bgp_field(field: str, value: Any) -> None:
    """A Node's BGP field means the same to both sides; a refused one never reaches the view."""
    bgp = {"ipv6Address": "fd00::3/64", field: value}
    model, normalised = model_errors("Node", "n3", {"bgp": bgp})
    got = as_the_agent_decodes("Node", "n3", {"bgp": bgp})
    by_hand = build_node_view("n3", [*NODES, Resource("Node", "n3", {"bgp": bgp})], [], [])
    assert by_hand.errors == (), "a Node's refused field is left out (logged), not one of the view's errors"
    if model:
        assert isinstance(got, Invalid) and paths(got.errors) == model
        assert _node_reads(by_hand, field) == {"asNumber": 64512}.get(field), "the field is left out"
        return
    assert isinstance(got, Resource) and got.validated
    agent = build_node_view("n3", [*NODES, got], [], [])
    assert agent == by_hand
    wanted = normalised["bgp"][field]
    if field.endswith("Address"):
        wanted = str(ipaddress.ip_interface(wanted).ip)
    assert _node_reads(agent, field) == wanted

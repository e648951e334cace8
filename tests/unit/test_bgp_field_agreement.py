"""l3netctl's validation and the agent's BGP view take exactly the same BGP values (issue 14).

One table of inputs per field goes through both sides: the model's document check
(``resource_from_document``, what ``l3netctl apply`` runs) and the agent's ``build_node_view``.
Every input the model accepts, the agent accepts with the value the model means; every input
the model refuses, the agent refuses too, at the same field. The regression: ``holdTime: "1.5m"``
passed ``l3netctl`` and was refused by the agent, which had a second duration grammar.
"""

from __future__ import annotations

from typing import Any

import pytest

from bgp.view import NodeBGPView, PeerSpec, build_node_view
from l3net.errors import ValidationError
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

"""bgp.events: ExaBGP 5 JSON lines to typed events; anything else is skipped, never raised."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.events import AckEvent, EorEvent, PathAttrs, StateEvent, TextEvent, UpdateEvent, parse_line

pytestmark = pytest.mark.unit

NB = {"address": {"local": "10.99.0.12", "peer": "10.99.0.1"}, "asn": {"local": 64512, "peer": 64512},
      "router-id": "10.99.0.12", "direction": "receive"}


def line(kind: str, **neighbor: object) -> str:
    return json.dumps({"exabgp": "5.0.0", "time": 1.0, "host": "vm", "pid": 1, "ppid": 1, "counter": 43,
                       "type": kind, "neighbor": {**NB, **neighbor}})


def test_announce_with_reflection_attributes() -> None:
    ev = parse_line(line("update", message={"update": {
        "attribute": {"origin": "igp", "as-path": [65001, 65002], "med": 5, "local-preference": 200,
                      "community": [[64512, 100]], "originator-id": "10.99.0.11", "cluster-list": ["10.99.0.1"]},
        "announce": {"ipv4 unicast": {"10.99.0.11": [{"nlri": "10.244.119.0/26"}, {"nlri": "10.244.1.0/26"}]}}}}))
    assert isinstance(ev, UpdateEvent) and ev.peer == "10.99.0.1" and ev.peer_as == 64512
    assert [(a.prefix, a.next_hop) for a in ev.announces] == [("10.244.119.0/26", "10.99.0.11"),
                                                              ("10.244.1.0/26", "10.99.0.11")]
    assert ev.announces[0].attrs == PathAttrs(origin="igp", as_path=(65001, 65002), med=5, local_pref=200,
                                              communities=("64512:100",), originator_id="10.99.0.11",
                                              cluster_list=("10.99.0.1",))


def test_as_path_as_string_and_withdraw() -> None:
    ev = parse_line(line("update", message={"update": {
        "attribute": {"as-path": "[ 65001 65002 ]"},
        "announce": {"ipv6 unicast": {"fd00::2": [{"nlri": "fd00:244::/64"}]}},
        "withdraw": {"ipv4 unicast": [{"nlri": "10.244.2.0/26"}, "10.244.3.0/26"]}}}))
    assert isinstance(ev, UpdateEvent)
    assert ev.announces[0].attrs.as_path == (65001, 65002) and ev.announces[0].next_hop == "fd00::2"
    assert ev.withdraws == ("10.244.2.0/26", "10.244.3.0/26")


def test_end_of_rib_has_no_update_key() -> None:
    ev = parse_line(line("update", message={"eor": {"afi": "ipv4", "safi": "unicast"}}))
    assert ev == EorEvent("10.99.0.1", "ipv4", "unicast")


def test_state_acks_and_text() -> None:
    assert parse_line(line("state", state="down", reason="notification received")) == StateEvent(
        "10.99.0.1", "10.99.0.12", "down", "notification received", 64512, 64512)
    assert parse_line("done\n") == AckEvent(True)
    assert parse_line(b"error") == AckEvent(False)
    assert parse_line("neighbor 10.0.0.1 up") == TextEvent("neighbor 10.0.0.1 up")


@pytest.mark.parametrize("bad", [
    "{", "[]", '{"type": "state"}', line("state", state="weird"), line("update"),
    line("update", message={"update": "x"}), line("update", message={"update": {"announce": {"ipv4 unicast": 3}}}),
    '{"type": "update", "neighbor": {"address": {"peer": "not-an-ip"}}}', line("bogus"), "",
    '{"type":"update","neighbor":{"address":{"peer":"10.0.0.1"},"message":{"update":{"announce":'
    '{"ipv4 unicast":{"10.0.0.1":[{"nlri":"300.0.0.0/8"}]}}}}}}',
])
def test_malformed_lines_are_skipped(bad: str) -> None:
    ev = parse_line(bad)
    assert ev is None or (isinstance(ev, UpdateEvent) and not ev.announces)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                     max_leaves=20)
_keys = st.sampled_from(["type", "neighbor", "address", "peer", "local", "message", "update", "eor", "announce",
                         "withdraw", "attribute", "as-path", "community", "cluster-list", "originator-id", "nlri",
                         "ipv4 unicast", "10.0.0.1", "state", "asn", "med", "local-preference", "origin"])
_shaped = st.recursive(st.none() | st.integers() | st.text(max_size=8) | st.sampled_from(
    ["update", "state", "up", "down", "10.0.0.1", "10.0.0.0/24", "igp", "[ 1 2 ]"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_keys, c, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), _json.map(json.dumps), _shaped.map(json.dumps), st.binary(max_size=100)))
def test_fuzz_never_raises(data: str | bytes) -> None:
    parse_line(data)


@settings(max_examples=200, deadline=None)
@given(_shaped)
def test_fuzz_inside_a_valid_envelope(body: object) -> None:
    parse_line(line("update", message={"update": body}))
    parse_line(line("update", message={"update": {"attribute": body, "announce": {"ipv4 unicast": body}}}))

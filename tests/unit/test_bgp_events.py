"""bgp.events: ExaBGP 5 JSON lines to typed events; anything else is skipped, never raised.

The lines come from tests.fakes.exabgp (the shapes ExaBGP 5.0.15 prints, with the full envelope); ``NB.line``
wraps the odd and malformed bodies ExaBGP does not print.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.events import AckEvent, EorEvent, PathAttrs, StateEvent, TextEvent, UpdateEvent, parse_line
from tests.fakes import exabgp

pytestmark = pytest.mark.unit

NB = exabgp.Neighbor(local="10.99.0.12", peer="10.99.0.1", local_as=64512, peer_as=64512, router_id="10.99.0.12")


def test_announce_with_reflection_attributes() -> None:
    ev = parse_line(NB.update({"10.99.0.11": ["10.244.119.0/26", "10.244.1.0/26"]}, attribute=exabgp.attributes(
        origin="igp", as_path=(65001, 65002), med=5, local_pref=200, communities=["64512:100"],
        originator_id="10.99.0.11", cluster_list=["10.99.0.1"])))
    assert isinstance(ev, UpdateEvent) and ev.peer == "10.99.0.1" and ev.peer_as == 64512
    assert [(a.prefix, a.next_hop) for a in ev.announces] == [("10.244.119.0/26", "10.99.0.11"),
                                                              ("10.244.1.0/26", "10.99.0.11")]
    assert ev.announces[0].attrs == PathAttrs(origin="igp", as_path=(65001, 65002), med=5, local_pref=200,
                                              communities=("64512:100",), originator_id="10.99.0.11",
                                              cluster_list=("10.99.0.1",))


@pytest.mark.parametrize("as_path", [
    "[ 65001 65002 ]",                                                  # some 5.x outputs
    [65001, 65002],                                                     # a plain list
    {"0": {"element": "as-sequence", "value": [65001, 65002]}},         # what 5.0.15 prints
], ids=["string", "list", "segments"])
@pytest.mark.parametrize("compact", [False, True], ids=["nlri-object", "nlri-string"])
def test_as_path_shapes_v6_announce_and_withdraw(as_path: object, compact: bool) -> None:
    nb = exabgp.Neighbor(local="10.99.0.12", peer="10.99.0.1", compact=compact)
    ev = parse_line(nb.update({"fd00::2": ["fd00:244::/64"]}, withdraw=["10.244.2.0/26", "10.244.3.0/26"],
                              attribute={"as-path": as_path}))
    assert isinstance(ev, UpdateEvent)
    assert ev.announces[0].attrs.as_path == (65001, 65002) and ev.announces[0].next_hop == "fd00::2"
    assert ev.announces[0].prefix == "fd00:244::/64"
    assert ev.withdraws == ("10.244.2.0/26", "10.244.3.0/26")


def test_end_of_rib_has_no_update_key() -> None:
    ev = parse_line(NB.eor("ipv4", "unicast"))
    assert ev == EorEvent("10.99.0.1", "ipv4", "unicast")


def test_state_acks_and_text() -> None:
    assert parse_line(NB.down("notification received")) == StateEvent(
        "10.99.0.1", "10.99.0.12", "down", "notification received", 64512, 64512)
    assert parse_line(exabgp.ack(True) + "\n") == AckEvent(True)
    assert parse_line(exabgp.ack(False).encode()) == AckEvent(False)
    assert parse_line("neighbor 10.0.0.1 up") == TextEvent("neighbor 10.0.0.1 up")


@pytest.mark.parametrize("bad", [
    "{", "[]", '{"type": "state"}', NB.state("weird"), NB.line("update", direction="receive"),
    NB.line("update", direction="receive", message={"update": "x"}),
    NB.line("update", direction="receive", message={"update": {"announce": {"ipv4 unicast": 3}}}),
    '{"type": "update", "neighbor": {"address": {"peer": "not-an-ip"}}}', NB.line("bogus", direction="receive"), "",
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
    parse_line(NB.line("update", direction="receive", message={"update": body}))
    parse_line(NB.line("update", direction="receive",
                       message={"update": {"attribute": body, "announce": {"ipv4 unicast": body}}}))

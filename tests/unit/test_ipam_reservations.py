"""l3net.ipam.reservations and Block.allocate's skip: reserved ordinals of a block, malformed reservations absent."""

from __future__ import annotations

import ipaddress
import json

import pytest

from l3net.datastore.base import KeyValue
from l3net.ipam.block import Block
from l3net.ipam.reservations import Reservations, reservations_from_kvs
from l3net.keys import KeyLayout

KEYS = KeyLayout("/p/")

pytestmark = pytest.mark.unit


def kv(key: str, doc: object) -> KeyValue:
    return KeyValue(key=key, value=json.dumps(doc).encode(), mod_revision=1, create_revision=1, version=1, lease=0)


def res(name: str, cidrs: list[str]) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": name},
            "spec": {"reservedCIDRs": cidrs}}


def test_ordinals_of_a_block_cover_only_the_overlap() -> None:
    r = Reservations(tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/30", "10.0.0.5/32", "10.0.0.8/29",
                                                             "10.0.1.0/24", "fd00::/120")))
    block = ipaddress.ip_network("10.0.0.0/28")
    assert r.ordinals(block) == frozenset({0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15})
    assert not r.covers(block)
    assert r.covers(ipaddress.ip_network("10.0.1.16/28"))
    assert r.ordinals(ipaddress.ip_network("10.0.2.0/28")) == frozenset()
    assert Reservations().ordinals(block) == frozenset()


def test_allocate_skips_reserved_ordinals_and_reports_none_when_only_reserved_are_left() -> None:
    block = Block.new("10.0.0.0/30", "host:n1")
    assert block.allocate("h1", {}, skip={0, 1}) == "10.0.0.2"
    assert block.allocate("h2", {}, skip={0, 1}) == "10.0.0.3"
    assert block.allocate("h3", {}, skip={0, 1}) is None
    assert block.unallocated == [0, 1]  # nothing taken by the refused allocation
    assert block.allocate("h4", {}) == "10.0.0.0"


def test_malformed_reservations_are_absent_logged_and_the_rest_count(caplog: pytest.LogCaptureFixture) -> None:
    key = KEYS.resource
    got = reservations_from_kvs(KEYS, [
        kv(key("ipreservations", "a"), res("a", ["10.0.0.0/30", "10.0.0.9"])),
        kv(key("ipreservations", "b"), res("b", ["10.0.0.1/30"])),  # host bits: refused by validation
        KeyValue(key=key("ipreservations", "c"), value=b"{nope", mod_revision=1, create_revision=1, version=1,
                 lease=0),
        kv(key("ipreservations", "d"), {**res("d", ["10.9.0.0/16"]), "kind": "IPPool"}),
        kv(key("ipreservations", "e"), res("other-name", ["10.8.0.0/16"])),  # names another resource than its key
    ])
    assert got.networks == (ipaddress.ip_network("10.0.0.0/30"), ipaddress.ip_network("10.0.0.9/32"))
    logged = {r.getMessage().split(" error=")[0]: r.getMessage() for r in caplog.records}
    assert sorted(logged) == [f"ignoring malformed IPReservation key={key('ipreservations', n)}" for n in "bcde"]
    # each with the model's reason, naming the field
    assert "spec.reservedCIDRs" in logged[f"ignoring malformed IPReservation key={key('ipreservations', 'b')}"]

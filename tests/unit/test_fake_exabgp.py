"""The ExaBGP fake's contract: tests.fakes.exabgp held to l3net's parser and to ExaBGP's own encoder.

Part one: every builder's line, read by the product's parser (:func:`bgp.events.parse_line`), is exactly the
event it is meant to be, and the lines l3net ignores are ignored quietly (not skipped as unexpected).

Part two: ExaBGP 5.0.15 itself, in process (no daemon, no socket). The message a peer sends is given as BGP
wire bytes, decoded by ExaBGP's message parser and printed by its JSON encoder
(``exabgp.reactor.api.response.json``, the code that writes to l3net's API process). The fake's line for the
same message must be the same JSON: the same keys in the same order and the same values, the envelope's
per-process values (time, host, pid, ppid, counter) compared by type only. The repository keeps no captured
ExaBGP output; this comparison stands in for it, so the fake cannot drift from ExaBGP without failing here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from exabgp.bgp.message import Notification, Open, Update
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.asn import ASN
from exabgp.bgp.message.open.capability import Negotiated
from exabgp.environment import getenv
from exabgp.logger import log
from exabgp.protocol.ip import IP
from exabgp.reactor.api.response import Response
from exabgp.version import json as exabgp_json_version
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.events import (
    ORIGINS,
    AckEvent,
    Announce,
    EorEvent,
    GracefulRestartCap,
    OpenEvent,
    PathAttrs,
    StateEvent,
    UpdateEvent,
    parse_attrs,
    parse_line,
)
from tests.fakes import exabgp

pytestmark = pytest.mark.unit

ME, PEER, TOR = "10.0.0.2", "10.0.0.1", "10.0.0.254"
A, B, V6 = "10.244.1.0/26", "10.244.1.64/26", "fd00:244::/64"
BIG_AS = 4_200_000_001          # needs four octets: the OPEN says AS_TRANS


def ibgp() -> exabgp.Neighbor:
    return exabgp.Neighbor(local=ME, peer=PEER, local_as=64512, peer_as=64512)


def ebgp() -> exabgp.Neighbor:
    return exabgp.Neighbor(local=ME, peer=TOR, local_as=64512, peer_as=BIG_AS)


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The parser logs no warning (a warning is how it reports a skipped line)."""
    caplog.set_level(logging.DEBUG, logger="bgp.events")
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- part one: the parser reads each builder as the intended event -----------------------------------
@pytest.mark.parametrize("make", [ibgp, ebgp], ids=["ibgp", "ebgp-4-octet-as"])
def test_state_lines(make: Any, quiet: None) -> None:
    nb = make()
    facts = {"peer": nb.peer, "local": ME, "peer_as": nb.peer_as, "local_as": 64512}
    assert parse_line(nb.connected()) == StateEvent(state="connected", **facts)
    assert parse_line(nb.up()) == StateEvent(state="up", **facts)
    assert parse_line(nb.down("closing connection")) == StateEvent(state="down", reason="closing connection",
                                                                   **facts)
    assert parse_line(nb.down()) == StateEvent(state="down", reason="", **facts)
    assert json.loads(nb.down())["neighbor"]["reason"] == "", "ExaBGP prints an empty reason, not none"


@pytest.mark.parametrize("restart_state", [False, True], ids=["R0", "R1"])
@pytest.mark.parametrize("forwarding", [(), ("ipv4/unicast",), ("ipv6/unicast",), ("ipv4/unicast", "ipv6/unicast")])
def test_open_graceful_restart_flags(restart_state: bool, forwarding: tuple[str, ...], quiet: None) -> None:
    caps = {**exabgp.multiprotocol("ipv4/unicast", "ipv6/unicast"),
            **exabgp.graceful_restart(45, restart_state=restart_state, families=("ipv4/unicast", "ipv6/unicast"),
                                      forwarding=forwarding)}
    assert parse_line(ibgp().open(caps, hold_time=9)) == OpenEvent(PEER, PEER, 9, GracefulRestartCap(
        45, restart_state, frozenset({"ipv4 unicast", "ipv6 unicast"}),
        frozenset(f.replace("/", " ") for f in forwarding)))


def test_open_defaults_without_graceful_restart_and_our_own(quiet: None) -> None:
    assert parse_line(ibgp().open()) == OpenEvent(PEER, PEER, 90, GracefulRestartCap(
        120, False, frozenset({"ipv4 unicast"}), frozenset()))
    plain = {**exabgp.multiprotocol("ipv4/unicast"), **exabgp.route_refresh(), **exabgp.asn4(BIG_AS)}
    assert parse_line(ebgp().open(plain, router_id="192.0.2.1")) == OpenEvent(TOR, "192.0.2.1", 90, None)
    assert json.loads(ebgp().open(plain))["neighbor"]["open"]["asn"] == exabgp.AS_TRANS
    assert parse_line(ibgp().open(direction="send")) is None, "our own OPEN is not the peer's"


def test_announce_defaults_withdraw_and_end_of_rib(quiet: None) -> None:
    nb = ibgp()
    facts = {"peer": PEER, "local": ME, "peer_as": 64512, "local_as": 64512}
    ibgp_attrs = PathAttrs(origin="igp", local_pref=100)
    assert parse_line(nb.announce(A, B)) == UpdateEvent(
        announces=(Announce(A, PEER, ibgp_attrs), Announce(B, PEER, ibgp_attrs)), **facts)
    assert parse_line(nb.announce(V6, next_hop="fd00::1")) == UpdateEvent(
        announces=(Announce(V6, "fd00::1", ibgp_attrs),), **facts)
    assert parse_line(nb.withdraw(A, V6)) == UpdateEvent(withdraws=(A, V6), **facts)
    assert parse_line(nb.eor()) == EorEvent(PEER, "ipv4", "unicast")
    assert parse_line(nb.eor("ipv6")) == EorEvent(PEER, "ipv6", "unicast")
    tor = ebgp()
    assert parse_line(tor.announce(A, next_hop="10.0.0.9")) == UpdateEvent(
        TOR, ME, (Announce(A, "10.0.0.9", PathAttrs(as_path=(BIG_AS,))),), (), BIG_AS, 64512)


def test_lines_l3net_ignores_are_ignored_quietly(quiet: None) -> None:
    nb = ibgp()
    assert parse_line(nb.notification(6, 2, b'Shutdown Communication: "bye"')) is None
    assert parse_line(nb.keepalive()) is None
    assert parse_line(exabgp.shutdown()) is None
    assert parse_line(exabgp.ack(True)) == AckEvent(True)
    assert parse_line(exabgp.ack(False)) == AckEvent(False)


def test_envelope_and_counter() -> None:
    nb = ibgp()
    first, second = json.loads(nb.up()), json.loads(nb.announce(A))
    assert list(first) == ["exabgp", "time", "host", "pid", "ppid", "counter", "type", "neighbor"]
    assert first["exabgp"] == exabgp.API_VERSION == exabgp_json_version
    assert (first["counter"], second["counter"]) == (1, 2), "one counter per neighbor, as ExaBGP counts"
    assert list(first["neighbor"]) == ["address", "asn", "router-id", "state"]
    assert list(second["neighbor"]) == ["address", "asn", "router-id", "direction", "message"]
    assert "counter" not in json.loads(exabgp.shutdown())


_ip4 = st.ip_addresses(v=4).map(str)
_u32 = st.integers(0, 2**32 - 1)
_u16 = st.integers(0, 2**16 - 1)
PATH_ATTRS = st.builds(
    PathAttrs, origin=st.sampled_from(ORIGINS), as_path=st.lists(st.integers(1, 2**32 - 1), max_size=5).map(tuple),
    med=st.none() | _u32, local_pref=st.none() | _u32,
    communities=st.lists(st.tuples(_u16, _u16).map(lambda t: f"{t[0]}:{t[1]}"), max_size=3).map(tuple),
    large_communities=st.lists(st.tuples(_u32, _u32, _u32).map(lambda t: ":".join(map(str, t))),
                               max_size=3).map(tuple),
    originator_id=st.none() | _ip4, cluster_list=st.lists(_ip4, max_size=3).map(tuple))


@settings(max_examples=200, deadline=None)
@given(PATH_ATTRS)
def test_attributes_round_trip_through_the_parser(attrs: PathAttrs) -> None:
    printed = exabgp.attributes(**dataclasses.asdict(attrs))
    assert parse_attrs(printed) == attrs
    ev = parse_line(ibgp().update({PEER: [A]}, attribute=printed))
    assert isinstance(ev, UpdateEvent) and ev.announces == (Announce(A, PEER, attrs),)


_prefix = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(8, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(16, 128))).map(
    lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)))
_next_hop = st.sampled_from([PEER, "10.0.0.9", "fd00::1"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_next_hop, st.lists(_prefix, min_size=1, max_size=4), max_size=3),
       st.lists(_prefix, max_size=4), st.booleans())
def test_update_round_trip_through_the_parser(announce: dict[str, list[str]], withdraw: list[str],
                                              compact: bool) -> None:
    nb = dataclasses.replace(ibgp(), compact=compact)
    ev = parse_line(nb.update(announce, withdraw, exabgp.attributes(med=7)))
    assert isinstance(ev, UpdateEvent)
    # ExaBGP groups by family, then next hop: the order within a family and a next hop is kept
    assert sorted((a.prefix, a.next_hop) for a in ev.announces) == sorted(
        (p, nh) for nh, ps in announce.items() for p in ps)
    assert all(a.attrs == PathAttrs(med=7) for a in ev.announces)
    assert sorted(ev.withdraws) == sorted(withdraw)
    assert [w for w in ev.withdraws if ":" not in w] == [w for w in withdraw if ":" not in w]


# -- part two: the same messages printed by ExaBGP 5.0.15's own encoder ------------------------------
class _ExaNeighbor(dict[str, Any]):
    """What ExaBGP's encoder and Negotiated read of a configured neighbor (exabgp.bgp.neighbor.Neighbor)."""

    def __init__(self, nb: exabgp.Neighbor) -> None:
        super().__init__({"local-address": IP.create(nb.local), "peer-address": IP.create(nb.peer),
                          "local-as": ASN(nb.local_as), "peer-as": ASN(nb.peer_as),
                          "router-id": IP.create(nb.router_id or nb.local), "capability": {"aigp": False}})
        self.uid = f"{nb.local}-{nb.peer}"


@pytest.fixture(scope="module", autouse=True)
def _exabgp_logging() -> None:
    log.init(getenv())   # ExaBGP's parsers log through it


def _encoder(compact: bool = False) -> Any:
    enc = Response.JSON(exabgp_json_version)
    enc.compact = compact
    return enc


VOLATILE = ("time", "host", "pid", "ppid", "counter")


def _same_json(fake: str, real: str) -> None:
    """Equal JSON, key order included; the per-process envelope values by type only."""
    def shape(line: str) -> str:
        obj = json.loads(line)
        for key in VOLATILE:
            if key in obj:
                obj[key] = type(obj[key]).__name__
        return json.dumps(obj)
    assert shape(fake) == shape(real), f"\nfake:    {fake}\nexabgp:  {real}"


# BGP wire encoding, just enough for the messages below (RFC 4271, 4760, 4724, 6793, 1997, 4456, 8092)
def _cap(code: int, value: bytes = b"") -> bytes:
    return bytes([code, len(value)]) + value


def _mp(afi: int, safi: int = 1) -> bytes:
    return _cap(1, struct.pack("!HBB", afi, 0, safi))


def _gr(time: int, restart_state: bool, *families: tuple[int, bool]) -> bytes:
    head = struct.pack("!H", (0x8000 if restart_state else 0) | time)
    return _cap(64, head + b"".join(struct.pack("!HBB", afi, 1, 0x80 if fwd else 0) for afi, fwd in families))


def _open(asn: int, hold_time: int, router_id: str, *caps: bytes) -> Open:
    params = b"".join(bytes([2, len(c)]) + c for c in caps)
    two_octet = asn if asn < 65536 else exabgp.AS_TRANS
    wire = (struct.pack("!BHH", 4, two_octet, hold_time) + ipaddress.IPv4Address(router_id).packed
            + bytes([len(params)]) + params)
    return Open.unpack_message(wire)


def _prefix_wire(prefix: str) -> bytes:
    net = ipaddress.ip_network(prefix)
    return bytes([net.prefixlen]) + net.network_address.packed[:(net.prefixlen + 7) // 8]


def _attr(code: int, value: bytes, flags: int = 0x40) -> bytes:
    return bytes([flags, code, len(value)]) + value


def _as_path(*asns: int) -> bytes:
    return _attr(2, (bytes([2, len(asns)]) + struct.pack(f"!{len(asns)}I", *asns)) if asns else b"")


def _mp_reach(next_hop: str, *prefixes: str) -> bytes:
    nh = ipaddress.ip_address(next_hop).packed
    return _attr(14, struct.pack("!HBB", 2, 1, len(nh)) + nh + b"\x00" + b"".join(map(_prefix_wire, prefixes)), 0x80)


def _mp_unreach(*prefixes: str) -> bytes:
    return _attr(15, struct.pack("!HB", 2, 1) + b"".join(map(_prefix_wire, prefixes)), 0x80)


class _Session:
    """A neighbor of the fake and the same neighbor in ExaBGP, past its OPENs (for UPDATE decoding)."""

    CAPS = (_mp(1), _mp(2), _cap(2), _cap(65, struct.pack("!I", 64512)))

    def __init__(self, nb: exabgp.Neighbor, compact: bool = False) -> None:
        self.nb = nb
        self.exa = _ExaNeighbor(nb)
        self.enc = _encoder(compact)
        peer_caps = (_mp(1), _mp(2), _cap(65, struct.pack("!I", nb.peer_as)))
        self.negotiated = Negotiated(self.exa)
        self.negotiated.sent(_open(nb.local_as, 90, nb.router_id or nb.local, *self.CAPS))
        self.negotiated.received(_open(nb.peer_as, 90, nb.peer, *peer_caps))

    def update(self, *, withdrawn: tuple[str, ...] = (), attrs: bytes = b"", nlri: tuple[str, ...] = ()) -> str:
        wd = b"".join(map(_prefix_wire, withdrawn))
        wire = struct.pack("!H", len(wd)) + wd + struct.pack("!H", len(attrs)) + attrs
        wire += b"".join(map(_prefix_wire, nlri))
        return str(self.enc.update(self.exa, "receive", Update.unpack_message(wire, Direction.IN, self.negotiated),
                                   None, b"", b""))


@pytest.mark.parametrize("make", [ibgp, ebgp], ids=["ibgp", "ebgp-4-octet-as"])
def test_state_lines_as_exabgp_prints_them(make: Any) -> None:
    nb = make()
    enc, exa = _encoder(), _ExaNeighbor(nb)
    _same_json(nb.connected(), enc.connected(exa))
    _same_json(nb.up(), enc.up(exa))
    _same_json(nb.down("closing connection"), enc.down(exa, "closing connection"))
    _same_json(nb.down(), enc.down(exa))


OPEN_CASES = {
    # the peer restarted (R) and kept forwarding ipv4 unicast (F): tests.unit.speaker_feed's GR_CAP, in full
    "graceful-restart-R-F": (
        lambda nb: nb.open({**exabgp.multiprotocol("ipv4/unicast"), **exabgp.route_refresh(),
                            **exabgp.graceful_restart(30, restart_state=True, forwarding=["ipv4/unicast"]),
                            **exabgp.asn4(64512)}, hold_time=6),
        lambda: _open(64512, 6, PEER, _mp(1), _cap(2), _gr(30, True, (1, True)), _cap(65, struct.pack("!I", 64512)))),
    "default": (
        lambda nb: nb.open(),
        lambda: _open(64512, 90, PEER, _mp(1), _cap(2), _gr(120, False, (1, False)),
                      _cap(65, struct.pack("!I", 64512)))),
    "two-families-F-on-v6-only": (
        lambda nb: nb.open({**exabgp.multiprotocol("ipv4/unicast", "ipv6/unicast"),
                            **exabgp.graceful_restart(60, families=["ipv4/unicast", "ipv6/unicast"],
                                                      forwarding=["ipv6/unicast"])}),
        lambda: _open(64512, 90, PEER, _mp(1), _mp(2), _gr(60, False, (1, False), (2, True)))),
}


@pytest.mark.parametrize("case", OPEN_CASES)
def test_open_as_exabgp_prints_it(case: str) -> None:
    fake, wire = OPEN_CASES[case]
    nb = ibgp()
    _same_json(fake(nb), _encoder().open(_ExaNeighbor(nb), "receive", wire(), None, b"", b""))


def test_open_of_a_four_octet_as_as_exabgp_prints_it() -> None:
    nb = ebgp()
    real = _encoder().open(_ExaNeighbor(nb), "receive", _open(BIG_AS, 90, TOR, _mp(1), _mp(2),
                                                              _cap(65, struct.pack("!I", BIG_AS))), None, b"", b"")
    _same_json(nb.open({**exabgp.multiprotocol("ipv4/unicast", "ipv6/unicast"), **exabgp.asn4(BIG_AS)}), real)


@pytest.mark.parametrize("compact", [False, True], ids=["nlri-object", "nlri-string"])
def test_updates_as_exabgp_prints_them(compact: bool) -> None:
    nb = dataclasses.replace(ibgp(), compact=compact)
    s = _Session(nb, compact)
    # an iBGP peer's plain route: ORIGIN, an empty AS_PATH (not printed), NEXT_HOP, LOCAL_PREF
    plain = _attr(1, b"\x00") + _as_path() + _attr(3, ipaddress.IPv4Address(PEER).packed) + _attr(
        5, struct.pack("!I", 100))
    _same_json(nb.announce(A, B), s.update(attrs=plain, nlri=(A, B)))
    # a reflected route with every attribute l3net reads, and a withdraw in the same UPDATE
    full = (_attr(1, b"\x01") + _as_path(65001, 65002) + _attr(3, ipaddress.IPv4Address("10.99.0.11").packed)
            + _attr(4, struct.pack("!I", 5), 0x80) + _attr(5, struct.pack("!I", 200))
            + _attr(8, struct.pack("!HHHH", 64512, 100, 65535, 65281), 0xC0)
            + _attr(9, ipaddress.IPv4Address("10.99.0.11").packed, 0x80)
            + _attr(10, ipaddress.IPv4Address("10.99.0.1").packed + ipaddress.IPv4Address("10.99.0.3").packed, 0x80)
            + _attr(32, struct.pack("!III", 64512, 1, 2), 0xC0))
    fake_attrs = exabgp.attributes(origin="egp", as_path=(65001, 65002), med=5, local_pref=200,
                                   communities=["64512:100", "65535:65281"], originator_id="10.99.0.11",
                                   cluster_list=["10.99.0.1", "10.99.0.3"], large_communities=["64512:1:2"])
    _same_json(nb.update({"10.99.0.11": [A, B]}, withdraw=["10.244.2.0/26"], attribute=fake_attrs),
               s.update(withdrawn=("10.244.2.0/26",), attrs=full, nlri=(A, B)))
    _same_json(nb.withdraw(A, B), s.update(withdrawn=(A, B)))
    # IPv6 through MP_REACH_NLRI / MP_UNREACH_NLRI
    v6 = _attr(1, b"\x02") + _as_path() + _mp_reach("fd00::2", V6) + _mp_unreach("fd00:245::/64")
    _same_json(nb.update({"fd00::2": [V6]}, withdraw=["fd00:245::/64"], attribute=exabgp.attributes("incomplete")),
               s.update(attrs=v6))


def test_an_ebgp_peers_plain_route_as_exabgp_prints_it() -> None:
    nb = ebgp()
    s = _Session(nb)
    wire = _attr(1, b"\x00") + _as_path(BIG_AS) + _attr(3, ipaddress.IPv4Address(TOR).packed)
    _same_json(nb.announce(A), s.update(attrs=wire, nlri=(A,)))


def test_end_of_rib_as_exabgp_prints_it() -> None:
    nb = ibgp()
    s = _Session(nb)
    _same_json(nb.eor(), s.update())                                 # the empty UPDATE is ipv4 unicast EOR
    _same_json(nb.eor("ipv6", "unicast"), s.update(attrs=_mp_unreach()))


def test_notification_keepalive_and_shutdown_as_exabgp_prints_them() -> None:
    nb = ibgp()
    enc, exa = _encoder(), _ExaNeighbor(nb)
    _same_json(nb.notification(4, 0), enc.notification(exa, "receive", Notification(4, 0), None, b"", b""))
    cease = Notification(6, 2, b"\x03bye")    # RFC 8203 shutdown communication: ExaBGP reports its text
    _same_json(nb.notification(6, 2, b'Shutdown Communication: "bye"'),
               enc.notification(exa, "receive", cease, None, b"", b""))
    _same_json(nb.keepalive(), enc.keepalive(exa, "receive", None, b"", b""))
    _same_json(exabgp.shutdown(), enc.shutdown())

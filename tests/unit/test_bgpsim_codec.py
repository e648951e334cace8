"""bench.bgpsim's BGP-4 codec and route checks (pure): wire bytes, stream splitting, every failure reason."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from bench.bgpsim import (
    CAP_AS4,
    CAP_MP,
    CAP_ROUTE_REFRESH,
    CLUSTER_LIST,
    KEEPALIVE,
    LOCAL_PREF,
    MARKER,
    MP_REACH_NLRI,
    MP_UNREACH_NLRI,
    NOTIFICATION,
    ORIGINATOR_ID,
    UPDATE,
    BGPError,
    Plan,
    Update,
    client_ip,
    client_prefixes,
    decode_notification,
    decode_open,
    decode_prefixes,
    decode_update,
    encode_keepalive,
    encode_notification,
    encode_open,
    encode_prefixes,
    encode_update,
    split_messages,
)

pytestmark = pytest.mark.unit


def _net(p: str) -> tuple[int, int]:
    addr, plen = p.split("/")
    return int.from_bytes(socket.inet_aton(addr), "big"), int(plen)


def test_keepalive_and_notification_bytes() -> None:
    assert encode_keepalive() == MARKER + b"\x00\x13\x04"
    msgs = split_messages(bytearray(encode_notification(6, 2, b"x")))
    assert msgs == [(NOTIFICATION, b"\x06\x02x")]
    assert decode_notification(msgs[0][1]) == (6, 2, b"x")


def test_open_round_trip_with_capabilities() -> None:
    raw = encode_open(64512, 90, "10.1.0.7")
    assert raw[:16] == MARKER and struct.unpack("!H", raw[16:18])[0] == len(raw)
    [(kind, body)] = split_messages(bytearray(raw))
    msg = decode_open(body)
    assert (kind, msg.version, msg.asn, msg.hold, msg.router_id) == (1, 4, 64512, 90, "10.1.0.7")
    assert msg.capabilities[CAP_MP] == [b"\x00\x01\x00\x01"]
    assert msg.capabilities[CAP_AS4] == [struct.pack("!I", 64512)]
    assert msg.capabilities[CAP_ROUTE_REFRESH] == [b""]


def test_open_with_a_4_byte_as_carries_as_trans() -> None:
    raw = encode_open(4200000001, 30, "1.2.3.4", route_refresh=False)
    body = split_messages(bytearray(raw))[0][1]
    assert struct.unpack_from("!H", body, 1)[0] == 23456
    msg = decode_open(body)
    assert msg.asn == 4200000001 and CAP_ROUTE_REFRESH not in msg.capabilities


def test_prefixes_round_trip_all_lengths() -> None:
    nets = ["0.0.0.0/0", "10.0.0.0/8", "10.128.0.0/9", "10.128.0.64/26", "192.0.2.1/32", "172.16.0.0/12"]
    assert decode_prefixes(encode_prefixes(nets)) == [_net(p) for p in nets]
    assert encode_prefixes(["10.128.0.64/26"]) == bytes([26, 10, 128, 0, 64])


def test_prefixes_refuse_truncation_and_bad_length() -> None:
    with pytest.raises(BGPError):
        decode_prefixes(bytes([26, 10, 128, 0]))
    with pytest.raises(BGPError):
        decode_prefixes(bytes([33, 1, 2, 3, 4, 5]))


def test_update_round_trip_carries_ibgp_attributes() -> None:
    prefixes = client_prefixes(3, 64)
    raw = encode_update(prefixes, client_ip(3), withdrawn=["10.200.0.0/16"])
    assert len(raw) < 4096
    [(kind, body)] = split_messages(bytearray(raw))
    upd = decode_update(body)
    assert kind == UPDATE
    assert upd.nlri == [_net(p) for p in prefixes]
    assert upd.withdrawn == [_net("10.200.0.0/16")]
    assert upd.next_hop == _net(client_ip(3) + "/32")[0]
    assert upd.attrs[1] == b"\x00" and upd.attrs[2] == b"" and upd.attrs[LOCAL_PREF] == struct.pack("!I", 100)


def test_update_too_big_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds 4096"):
        encode_update([f"10.{i // 256}.{i % 256}.0/24" for i in range(1100)], "10.1.0.1")


def test_mp_reach_and_unreach_fold_into_nlri_and_withdrawn() -> None:
    nh = socket.inet_aton("10.1.0.2")
    reach = b"\x00\x01\x01" + bytes([4]) + nh + b"\x00" + encode_prefixes(["10.128.0.0/26"])
    unreach = b"\x00\x01\x01" + encode_prefixes(["10.128.1.0/26"])
    attrs = bytes([0x80, MP_REACH_NLRI, len(reach)]) + reach + bytes([0x80, MP_UNREACH_NLRI, len(unreach)]) + unreach
    upd = decode_update(struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs)
    assert upd.nlri == [_net("10.128.0.0/26")] and upd.withdrawn == [_net("10.128.1.0/26")]
    assert upd.next_hop == int.from_bytes(nh, "big")


def test_extended_length_attribute_is_read() -> None:
    clusters = b"".join(socket.inet_aton(f"224.0.0.{i}") for i in range(70))   # 280 bytes
    attrs = struct.pack("!BBH", 0x90, CLUSTER_LIST, len(clusters)) + clusters
    upd = decode_update(struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs)
    assert upd.attrs[CLUSTER_LIST] == clusters


def test_update_with_overrunning_lengths_is_an_error() -> None:
    with pytest.raises(BGPError):
        decode_update(struct.pack("!H", 50) + b"\x00\x00")
    with pytest.raises(BGPError):
        decode_update(struct.pack("!H", 0) + struct.pack("!H", 10) + b"\x40\x01\x01\x00")


def test_split_messages_handles_many_per_read_and_split_messages() -> None:
    stream = encode_keepalive() + encode_update(client_prefixes(1, 8), client_ip(1)) + encode_keepalive()
    buf = bytearray()
    got = []
    for i in range(0, len(stream), 7):   # the stream arrives in 7-byte pieces
        buf += stream[i:i + 7]
        got += split_messages(buf)
    assert [k for k, _ in got] == [KEEPALIVE, UPDATE, KEEPALIVE] and not buf
    buf = bytearray(stream)
    assert [k for k, _ in split_messages(buf)] == [KEEPALIVE, UPDATE, KEEPALIVE] and not buf


def test_split_messages_refuses_bad_marker_and_length() -> None:
    with pytest.raises(BGPError, match="marker"):
        split_messages(bytearray(b"\x00" * 19))
    with pytest.raises(BGPError, match="length"):
        split_messages(bytearray(MARKER + b"\x00\x05\x04"))


def _reflected(src: int, per: int, *, cluster: str = "224.0.0.1", originator: str | None = None,
               prefixes: list[str] | None = None, local_pref: bool = True) -> Update:
    body = split_messages(bytearray(encode_update(prefixes or client_prefixes(src, per), client_ip(src))))[0][1]
    upd = decode_update(body)
    upd.attrs[ORIGINATOR_ID] = socket.inet_aton(originator or client_ip(src))
    upd.attrs[CLUSTER_LIST] = socket.inet_aton(cluster)
    if not local_pref:
        del upd.attrs[LOCAL_PREF]
    return upd


def test_plan_accepts_a_correct_reflection_and_names_every_fault() -> None:
    plan = Plan(5, 8, "224.0.0.1")
    assert plan.expect == 32
    assert plan.check(0, _reflected(2, 8)) is None
    assert plan.check(2, _reflected(2, 8)) == "own prefixes reflected back"
    assert "ORIGINATOR_ID" in (plan.check(0, _reflected(2, 8, originator="10.1.0.9")) or "")
    assert "cluster ID" in (plan.check(0, _reflected(2, 8, cluster="1.1.1.1")) or "")
    assert plan.check(0, _reflected(2, 8, local_pref=False)) == "LOCAL_PREF missing"
    # a prefix of client 3 announced with client 2's next hop
    wrong = _reflected(2, 8, prefixes=client_prefixes(2, 8)[:7] + client_prefixes(3, 8)[:1])
    assert "not from next hop's client" in (plan.check(0, wrong) or "")
    no_cluster = _reflected(2, 8)
    del no_cluster.attrs[CLUSTER_LIST]
    assert plan.check(0, no_cluster) == "CLUSTER_LIST missing"
    stranger = decode_update(split_messages(bytearray(encode_update(["10.128.0.0/26"], "10.9.9.9")))[0][1])
    assert "is no client" in (plan.check(0, stranger) or "")
    assert plan.check(0, Update()) is None   # End-of-RIB / withdraw-only: nothing to check here


def test_extra_blocks_belong_to_their_client_only() -> None:
    from bench.bgpsim import EXTRA_PER_CLIENT, extra_index, extra_prefix

    plan = Plan(1000, 4, "224.0.0.1")
    seen = set()
    for i in (0, 1, 999):
        for k in (0, 1, EXTRA_PER_CLIENT - 1):
            p = extra_prefix(i, k)
            seen.add(p)
            addr = int(ipaddress.IPv4Network(p).network_address)
            assert extra_index(i, addr) == k and extra_index((i + 1) % 1000, addr) is None
            assert p not in client_prefixes(i, 4)
            assert plan.check(3, _reflected(i, 4, prefixes=[p])) is None, "the owner's next hop: accepted"
            assert "not from next hop's client" in (plan.check(3, _reflected((i + 1) % 1000, 4, prefixes=[p])) or "")
    assert len(seen) == 9 and all(ipaddress.IPv4Network(p).subnet_of(ipaddress.IPv4Network("10.192.0.0/10"))
                                  for p in seen)
    with pytest.raises(ValueError):
        extra_prefix(0, EXTRA_PER_CLIENT)


def _reflected_body(src: int, per: int, *, cluster: str = "224.0.0.1", prefixes: list[str] | None = None) -> bytes:
    """The UPDATE body a reflector sends for client ``src``: the client's own plus ORIGINATOR_ID, CLUSTER_LIST."""
    body = split_messages(bytearray(encode_update(prefixes or client_prefixes(src, per), client_ip(src))))[0][1]
    extra = (bytes([0x80, ORIGINATOR_ID, 4]) + socket.inet_aton(client_ip(src))
             + bytes([0x80, CLUSTER_LIST, 4]) + socket.inet_aton(cluster))
    wlen = struct.unpack_from("!H", body)[0]
    alen = struct.unpack_from("!H", body, 2 + wlen)[0]
    attrs_end = 4 + wlen + alen
    return body[:2 + wlen] + struct.pack("!H", alen + len(extra)) + body[4 + wlen:attrs_end] + extra + body[attrs_end:]


def test_verdict_cache_decides_each_distinct_body_once_and_keeps_every_check() -> None:
    from bench.bgpsim import VerdictCache

    plan = Plan(5, 8, "224.0.0.1")
    cache = VerdictCache(plan)
    good = _reflected_body(2, 8)
    v = cache.verdict(good)
    assert cache.verdict(bytes(good)) is v and cache.decoded == 1   # equal bytes: looked up, not decoded again
    assert v.src == 2 and len(v.nlri) == 8 and v.problem is None
    # the same verdicts as Plan.check, receiver by receiver
    upd = decode_update(good)
    for me in range(5):
        assert v.reason_for(me) == plan.check(me, upd)
    assert v.reason_for(2) == "own prefixes reflected back"
    wrong = cache.verdict(_reflected_body(2, 8, cluster="1.1.1.1"))
    assert "cluster ID" in (wrong.reason_for(0) or "")
    # a malformed body raises for every receiver and is never cached
    with pytest.raises(BGPError):
        cache.verdict(b"\x00")
    with pytest.raises(BGPError):
        cache.verdict(b"\x00")
    assert len(cache) == 2 and cache.decoded == 2


def test_verdict_cache_is_bounded() -> None:
    from bench.bgpsim import VerdictCache

    cache = VerdictCache(Plan(5, 8, "224.0.0.1"), limit=2)
    for src in range(5):
        cache.verdict(_reflected_body(src, 8))
        assert len(cache) <= 2
    assert cache.decoded == 5


def test_holdings_count_each_prefix_once_per_session() -> None:
    from bench.bgpsim import Holdings

    have = Holdings()
    a, b = frozenset({1, 2, 3}), frozenset({3, 4})
    have.add(7, a)
    have.add(7, a)                  # the same table again (a refresh): nothing new
    have.add(7, frozenset({1, 2}))  # a subset: nothing new
    assert len(have) == 3
    have.add(7, b)                  # one new prefix of the same client
    have.add(8, frozenset({9}))
    assert len(have) == 5
    have.withdraw([3, 9, 100])
    assert len(have) == 3
    have.clear()
    assert len(have) == 0


def test_a_session_is_done_once_it_holds_every_other_clients_routes() -> None:
    import io

    from bench.bgpsim import Simulator, Status

    out = io.StringIO()
    sim = Simulator(peer="10.1.255.254", asn=64512, hold=90, plan=Plan(3, 2, "224.0.0.1"), first=0, count=1,
                    status=Status(out))
    s = sim.sessions[0]
    s.established = True
    s._handle(UPDATE, _reflected_body(1, 2))
    assert "done" not in out.getvalue()
    s._handle(UPDATE, _reflected_body(1, 2))   # the same routes again do not count twice
    assert "done" not in out.getvalue()
    s._handle(UPDATE, _reflected_body(2, 2))
    assert "done 10.1.0.1 routes=4 withdrawn=0" in out.getvalue()
    s._handle(UPDATE, _reflected_body(0, 2))   # its own routes back: a failure line, not a route
    assert "fail 10.1.0.1 own_prefixes_reflected_back" in out.getvalue() and len(s.have) == 4

"""The NFQUEUE delayer's pure parts: netlink encoding and decoding, and when each packet gets which verdict."""

from __future__ import annotations

import random
import struct

import pytest

from l3net.lab import delayer as d

pytestmark = pytest.mark.unit


class FakeSocket:
    """Records what the delayer sends; the kernel's side of the netlink socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


def packet_message(queue: int, packet_id: int) -> bytes:
    """What the kernel sends for one queued packet (metadata only): nlmsghdr, nfgenmsg, NFQA_PACKET_HDR."""
    attr = d._attr(d.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 4))
    body = struct.pack("=BB", 2, 0) + struct.pack("!H", queue) + attr
    return struct.pack("=IHHII", 16 + len(body), (d.NFNL_SUBSYS_QUEUE << 8) | d.NFQNL_MSG_PACKET, 0, 0, 0) + body


def verdicts(sock: FakeSocket) -> list[tuple[int, int]]:
    """(verdict, packet id) of every verdict message sent."""
    out = []
    for msg in sock.sent:
        length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", msg)
        assert length == len(msg) and mtype == (d.NFNL_SUBSYS_QUEUE << 8) | d.NFQNL_MSG_VERDICT
        assert flags & d.NLM_F_REQUEST
        alen, atype = struct.unpack_from("=HH", msg, 20)
        assert (alen, atype) == (12, d.NFQA_VERDICT_HDR)
        out.append(struct.unpack_from("!II", msg, 24))
    return out


def test_parse_reads_packet_ids_and_errors_from_one_buffer() -> None:
    err = struct.pack("=IHHII", 36, d.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    ack = struct.pack("=IHHII", 36, d.NLMSG_ERROR, 0, 2, 0) + struct.pack("=i", 0) + b"\0" * 16
    data = packet_message(7, 41) + err + packet_message(7, 42) + ack
    assert d.parse(data) == [("packet", 41), ("error", 1), ("packet", 42), ("error", 0)]
    assert d.parse(data[:10]) == []  # a torn buffer yields nothing rather than garbage


def test_bind_messages_ask_for_an_ack_and_metadata_only() -> None:
    bind, params = d.bind_messages(9)
    for msg in (bind, params):
        length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", msg)
        assert length == len(msg) and length % 4 == 0
        assert mtype == (d.NFNL_SUBSYS_QUEUE << 8) | d.NFQNL_MSG_CONFIG and flags == d.NLM_F_REQUEST | d.NLM_F_ACK
        assert struct.unpack_from("!H", msg, 18)[0] == 9  # res_id: the queue number, big-endian
    assert struct.unpack_from("!BBH", bind, 24) == (d.NFQNL_CFG_CMD_BIND, 0, 2)
    assert struct.unpack_from("!IB", params, 24) == (0, d.NFQNL_COPY_META)


def test_packets_are_held_for_the_delay_then_accepted_in_release_order() -> None:
    sock = FakeSocket()
    dl = d.Delayer(3, delay_ms=100, jitter_ms=0, loss_pct=0, sock=sock)  # type: ignore[arg-type]
    dl.hold(1, now=10.0)
    dl.hold(2, now=10.05)
    dl.release(10.099)
    assert sock.sent == []
    dl.release(10.1)
    assert verdicts(sock) == [(d.NF_ACCEPT, 1)]
    dl.release(10.2)
    assert verdicts(sock) == [(d.NF_ACCEPT, 1), (d.NF_ACCEPT, 2)]


def test_jitter_stays_within_its_bounds_and_loss_drops_at_once() -> None:
    sock = FakeSocket()
    dl = d.Delayer(3, delay_ms=50, jitter_ms=10, loss_pct=0, rng=random.Random(1), sock=sock)  # type: ignore[arg-type]
    for i in range(200):
        dl.hold(i, now=0.0)
    waits = [t for t, _, _ in dl.held]
    assert min(waits) >= 0.04 and max(waits) <= 0.06 and max(waits) - min(waits) > 0.01
    lossy = d.Delayer(3, delay_ms=50, jitter_ms=0, loss_pct=100, sock=sock)  # type: ignore[arg-type]
    sock.sent.clear()
    lossy.hold(7, now=0.0)
    lossy.release(0.0)
    assert verdicts(sock) == [(d.NF_DROP, 7)]


def test_stopping_accepts_everything_still_held() -> None:
    sock = FakeSocket()
    dl = d.Delayer(3, delay_ms=1000, jitter_ms=0, loss_pct=0, sock=sock)  # type: ignore[arg-type]
    dl.hold(5, now=0.0)
    dl.release(0.0, everything=True)
    assert verdicts(sock) == [(d.NF_ACCEPT, 5)] and dl.held == []

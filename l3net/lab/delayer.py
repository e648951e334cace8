"""l3net.lab.delayer: netem's delay, jitter and loss for kernels built without the netem qdisc.

``python -m l3net.lab.delayer --queue N --delay MS [--jitter MS] [--loss PCT]`` runs inside a lab
node's network namespace as the listener of NFQUEUE queue ``N`` (the lab points an iptables
``NFQUEUE --queue-bypass`` rule for one interface at it, :func:`l3net.lab.faults.netem`). It holds
each packet for ``delay`` plus a uniform ``±jitter`` milliseconds (so, like netem, jitter may
reorder), then gives the kernel its verdict: accept, or drop with probability ``loss``.

The nfnetlink_queue protocol is spoken directly over a netlink socket (no C library): bind the
queue, ask for metadata only (the packet stays in the kernel), read packet ids, send verdicts.
Runs on one thread; exits on SIGTERM after accepting what it holds. Prints ``ready`` once bound.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import logging
import random
import select
import signal
import socket
import struct
import sys
import time

_log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1
QUEUE_MAXLEN = 10_000
SO_RCVBUFFORCE = 33


def _attr(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * (-length % 4)


def _message(mtype: int, queue: int, attrs: list[bytes], flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, seq, 0) + body


def verdict_message(queue: int, packet_id: int, verdict: int) -> bytes:
    return _message(NFQNL_MSG_VERDICT, queue, [_attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))])


def bind_messages(queue: int) -> list[bytes]:
    return [
        _message(NFQNL_MSG_CONFIG, queue, [_attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0,
                                                                            socket.AF_INET))],
                 NLM_F_REQUEST | NLM_F_ACK, 1),
        _message(NFQNL_MSG_CONFIG, queue, [_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
                                           _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))],
                 NLM_F_REQUEST | NLM_F_ACK, 2),
    ]


def parse(data: bytes) -> list[tuple[str, int]]:
    """Netlink messages in ``data`` as ``("packet", id)`` or ``("error", errno)`` (errno 0 is an ack)."""
    out: list[tuple[str, int]] = []
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16 or off + length > len(data):
            break
        payload = data[off + 16:off + length]
        if mtype == NLMSG_ERROR:
            out.append(("error", -struct.unpack_from("=i", payload)[0]))
        elif mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            aoff = 4  # nfgenmsg
            while aoff + 4 <= len(payload):
                alen, atype = struct.unpack_from("=HH", payload, aoff)
                if alen < 4:
                    break
                if atype & 0x3FFF == NFQA_PACKET_HDR:
                    out.append(("packet", struct.unpack_from("!I", payload, aoff + 4)[0]))
                    break
                aoff += alen + (-alen % 4)
        off += length + (-length % 4)
    return out


class Delayer:
    """Holds queued packets for delay ± jitter, then accepts or (with ``loss``) drops them. One thread."""

    def __init__(self, queue: int, delay_ms: float, jitter_ms: float, loss_pct: float,
                 rng: random.Random | None = None, sock: socket.socket | None = None) -> None:
        self.queue, self.delay, self.jitter, self.loss = queue, delay_ms / 1000, jitter_ms / 1000, loss_pct / 100
        self.rng = rng or random.Random()
        self.held: list[tuple[float, int, int]] = []  # (release time, packet id, verdict)
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            sock.bind((0, 0))
        self.sock = sock
        self.stopping = False

    def bind(self) -> None:
        for msg in bind_messages(self.queue):
            self.sock.send(msg)
            for kind, code in parse(self.sock.recv(65536)):
                if kind == "error" and code:
                    raise OSError(code, f"nfqueue {self.queue}: config refused: {errno.errorcode.get(code, code)}")

    def hold(self, packet_id: int, now: float) -> None:
        verdict = NF_DROP if self.loss and self.rng.random() < self.loss else NF_ACCEPT
        wait = 0.0 if verdict == NF_DROP else max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
        heapq.heappush(self.held, (now + wait, packet_id, verdict))

    def release(self, now: float, everything: bool = False) -> None:
        while self.held and (everything or self.held[0][0] <= now):
            _, packet_id, verdict = heapq.heappop(self.held)
            self.sock.send(verdict_message(self.queue, packet_id, NF_ACCEPT if everything else verdict))

    def run(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            self.release(now)
            timeout = max(0.0, self.held[0][0] - now) if self.held else 0.5
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications; the packets time out there
                    _log.warning("nfqueue receive buffer overrun queue=%d", self.queue)
                    continue
                raise
            now = time.monotonic()
            for kind, value in parse(data):
                if kind == "packet":
                    self.hold(value, now)
        self.release(time.monotonic(), everything=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="l3net-lab-delayer", description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay", type=float, required=True, help="ms")
    p.add_argument("--jitter", type=float, default=0.0, help="ms")
    p.add_argument("--loss", type=float, default=0.0, help="percent")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    delayer = Delayer(args.queue, args.delay, args.jitter, args.loss)

    def stop(_sig: int, _frame: object) -> None:
        delayer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delayer.bind()
    print("ready", flush=True)
    _log.info("delaying queue=%d delay_ms=%s jitter_ms=%s loss_pct=%s", args.queue, args.delay, args.jitter,
              args.loss)
    delayer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

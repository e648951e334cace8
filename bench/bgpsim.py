"""bench.bgpsim: simulated iBGP route-reflector clients, many sessions in one asyncio process.

A small BGP-4 speaker written for the reflector benchmark (RFC 4271 messages, RFC 4760
multiprotocol and RFC 2918 route-refresh capabilities, RFC 6793 4-byte AS capability):

- the codec (``encode_*``/``decode_*``, :func:`split_messages`) is pure and unit-tested;
- :class:`Session` is one client: it connects from its own source address to the reflector,
  sends OPEN, answers KEEPALIVEs, and (once triggered) sends ONE UPDATE with all its prefixes in
  classic NLRI (ORIGIN IGP, empty AS_PATH, NEXT_HOP = its address, LOCAL_PREF 100);
- every received UPDATE is checked, not just counted: each NLRI must belong to the client whose
  address is the NEXT_HOP, ORIGINATOR_ID must be that client, CLUSTER_LIST must hold the cluster ID,
  LOCAL_PREF must be present, a client must never get its own prefixes back, and nothing is
  withdrawn (nobody withdraws in this benchmark). Anything else is a ``fail`` line, never ignored.

Status goes to ``--status`` as lines ``KIND IP [details] T`` (T = ``time.monotonic()``, one clock
for the whole host): ``up``, ``down`` (with the reason), ``done`` (the first moment a session holds
every prefix of every other client: ``routes=N withdrawn=W``) and ``fail`` (with the reason; at most
a few per session, then a count). SIGUSR1 triggers the announcements; SIGUSR2 makes the process's
first session announce one more ``/26`` (:func:`extra_prefix`: ``sent IP K T``), and each session
that receives one writes ``extra IP K T``; SIGTERM ends the process.

Client ``i`` has address :func:`client_ip` and router ID = that address, and owns the ``/26``
prefixes :func:`client_prefixes` (consecutive blocks of 10.128.0.0/9), so a receiver can tell the
originator of any prefix from the prefix alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

MARKER = b"\xff" * 16
HEADER_LEN = 19
MAX_MESSAGE = 4096
OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE_REFRESH = 1, 2, 3, 4, 5
AS_TRANS = 23456
BGP_PORT = 179

# path attribute type codes
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF = 1, 2, 3, 4, 5
ORIGINATOR_ID, CLUSTER_LIST, MP_REACH_NLRI, MP_UNREACH_NLRI = 9, 10, 14, 15
# capability codes
CAP_MP, CAP_ROUTE_REFRESH, CAP_AS4 = 1, 2, 65

PREFIX_BASE = (10 << 24) | (128 << 16)   # 10.128.0.0
# "one new block" changes (SIGUSR2): client i's k-th extra /26 is in 10.192.0.0/10, EXTRA_PER_CLIENT each
EXTRA_BASE = (10 << 24) | (192 << 16)
EXTRA_PER_CLIENT = 64
PREFIX_LEN = 26
MAX_FAIL_LINES = 3
# Connection pacing. BIRD listens with a backlog of 8: a thousand clients connecting at the same
# instant overflow it, the kernel answers with SYN cookies and then drops the ACKs it has no room
# for, so those clients believe they are connected while the reflector never saw them, and wait
# out TCP retransmission (minutes) before their OPEN gets through. Real nodes do not start in the
# same millisecond; so each simulator process has CONNECT_SLOTS connections in flight at a time,
# and a connection that has not brought the reflector's OPEN within OPEN_TIMEOUT_S is dropped and
# tried again. Only the time to bring sessions up depends on this, never what is measured after.
CONNECT_SLOTS = 2
OPEN_TIMEOUT_S = 3.0
SCRATCH_BYTES = 64 * 1024   # one read; a full-table burst simply takes more reads


class BGPError(Exception):
    """A malformed message: ``code``/``subcode`` are the NOTIFICATION to send (RFC 4271 §6)."""

    def __init__(self, code: int, subcode: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode


# -- the address plan ------------------------------------------------------------------
def client_ip(i: int) -> str:
    """Address (and router ID) of client ``i``: 10.1.0.1, 10.1.0.2, … 250 per /24."""
    return f"10.1.{i // 250}.{i % 250 + 1}"


def client_prefix_base(i: int, count: int) -> int:
    return PREFIX_BASE + i * count * 64


def extra_prefix(i: int, k: int) -> str:
    """Client ``i``'s ``k``-th extra /26 (announced one at a time on SIGUSR2), distinct from every plan prefix."""
    if not 0 <= k < EXTRA_PER_CLIENT:
        raise ValueError(f"extra prefix index {k} out of 0..{EXTRA_PER_CLIENT - 1}")
    return f"{ipaddress.IPv4Address(EXTRA_BASE + (i * EXTRA_PER_CLIENT + k) * 64)}/{PREFIX_LEN}"


def extra_index(src: int, addr: int) -> int | None:
    """``k`` when ``addr`` is client ``src``'s k-th extra prefix, else None."""
    k = (addr - EXTRA_BASE) // 64 - src * EXTRA_PER_CLIENT
    return k if addr >= EXTRA_BASE and 0 <= k < EXTRA_PER_CLIENT and addr % 64 == 0 else None


def client_prefixes(i: int, count: int) -> list[str]:
    """``count`` /26 prefixes of client ``i`` in 10.128.0.0/9 (distinct across clients)."""
    base = client_prefix_base(i, count)
    return [f"{ipaddress.IPv4Address(base + k * 64)}/{PREFIX_LEN}" for k in range(count)]


# -- codec (pure) ---------------------------------------------------------------------
def message(kind: int, body: bytes = b"") -> bytes:
    length = HEADER_LEN + len(body)
    if length > MAX_MESSAGE:
        raise ValueError(f"BGP message of {length} bytes exceeds {MAX_MESSAGE}")
    return MARKER + struct.pack("!HB", length, kind) + body


def _capability(code: int, value: bytes = b"") -> bytes:
    return bytes([2, 2 + len(value), code, len(value)]) + value   # one optional parameter per capability


def encode_open(asn: int, hold: int, router_id: str, *, route_refresh: bool = True) -> bytes:
    """OPEN with the IPv4-unicast multiprotocol, 4-byte-AS and (optionally) route-refresh capabilities."""
    params = _capability(CAP_MP, struct.pack("!HBB", 1, 0, 1)) + _capability(CAP_AS4, struct.pack("!I", asn))
    if route_refresh:
        params += _capability(CAP_ROUTE_REFRESH)
    my_as = asn if asn <= 0xFFFF else AS_TRANS
    body = struct.pack("!BHH4sB", 4, my_as, hold, socket.inet_aton(router_id), len(params)) + params
    return message(OPEN, body)


def encode_keepalive() -> bytes:
    return message(KEEPALIVE)


def encode_notification(code: int, subcode: int, data: bytes = b"") -> bytes:
    return message(NOTIFICATION, bytes([code, subcode]) + data)


def encode_prefixes(prefixes: Iterable[str]) -> bytes:
    out = bytearray()
    for p in prefixes:
        net = ipaddress.IPv4Network(p)
        out.append(net.prefixlen)
        out += net.network_address.packed[:(net.prefixlen + 7) // 8]
    return bytes(out)


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return struct.pack("!BBH", flags | 0x10, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def encode_update(nlri: Sequence[str], next_hop: str, *, local_pref: int = 100,
                  withdrawn: Sequence[str] = ()) -> bytes:
    """One UPDATE: ``withdrawn`` and ``nlri`` (IPv4, classic fields) with iBGP attributes
    ORIGIN IGP, empty AS_PATH, NEXT_HOP, LOCAL_PREF. Raises ValueError above 4096 bytes."""
    wd = encode_prefixes(withdrawn)
    attrs = b""
    if nlri:
        attrs = b"".join([_attr(0x40, ORIGIN, b"\x00"), _attr(0x40, AS_PATH, b""),
                          _attr(0x40, NEXT_HOP, socket.inet_aton(next_hop)),
                          _attr(0x40, LOCAL_PREF, struct.pack("!I", local_pref))])
    body = struct.pack("!H", len(wd)) + wd + struct.pack("!H", len(attrs)) + attrs + encode_prefixes(nlri)
    return message(UPDATE, body)


def split_messages(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete message off the front of ``buf`` (a TCP stream: several per read, or a part)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_LEN:
        if buf[pos:pos + 16] != MARKER:
            raise BGPError(1, 1, "connection not synchronized (bad marker)")
        length, kind = struct.unpack_from("!HB", buf, pos + 16)
        if length < HEADER_LEN or length > MAX_MESSAGE:
            raise BGPError(1, 2, f"bad message length {length}")
        if end - pos < length:
            break
        out.append((kind, bytes(buf[pos + HEADER_LEN:pos + length])))
        pos += length
    del buf[:pos]
    return out


@dataclass(frozen=True)
class OpenMessage:
    version: int
    asn: int                      # the 4-byte AS when the capability is there, else the 2-byte field
    hold: int
    router_id: str
    capabilities: dict[int, list[bytes]]


def decode_open(body: bytes) -> OpenMessage:
    if len(body) < 10:
        raise BGPError(2, 0, "OPEN too short")
    version, my_as, hold, rid, plen = struct.unpack_from("!BHH4sB", body)
    params = body[10:10 + plen]
    if len(params) != plen:
        raise BGPError(2, 0, "OPEN optional parameters truncated")
    caps: dict[int, list[bytes]] = {}
    i = 0
    while i < len(params):
        if i + 2 > len(params):
            raise BGPError(2, 0, "OPEN parameter header truncated")
        ptype, pl = params[i], params[i + 1]
        value = params[i + 2:i + 2 + pl]
        if len(value) != pl:
            raise BGPError(2, 0, "OPEN parameter truncated")
        i += 2 + pl
        if ptype != 2:
            continue
        j = 0
        while j < len(value):
            if j + 2 > len(value) or j + 2 + value[j + 1] > len(value):
                raise BGPError(2, 0, "capability truncated")
            caps.setdefault(value[j], []).append(bytes(value[j + 2:j + 2 + value[j + 1]]))
            j += 2 + value[j + 1]
    asn = my_as
    if CAP_AS4 in caps and len(caps[CAP_AS4][0]) == 4:
        asn = struct.unpack("!I", caps[CAP_AS4][0])[0]
    return OpenMessage(version, asn, hold, socket.inet_ntoa(rid), caps)


def decode_prefixes(data: bytes) -> list[tuple[int, int]]:
    """IPv4 NLRI field -> ``[(address as int, prefix length), ...]``."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        plen = data[i]
        nbytes = (plen + 7) >> 3
        if plen > 32 or i + 1 + nbytes > n:
            raise BGPError(3, 10, f"invalid NLRI at byte {i}")
        addr = int.from_bytes(data[i + 1:i + 1 + nbytes], "big") << (32 - 8 * nbytes)
        out.append((addr, plen))
        i += 1 + nbytes
    return out


@dataclass
class Update:
    """A decoded UPDATE; IPv4-unicast MP_REACH/MP_UNREACH prefixes are folded into ``nlri``/``withdrawn``."""

    withdrawn: list[tuple[int, int]] = field(default_factory=list)
    nlri: list[tuple[int, int]] = field(default_factory=list)
    attrs: dict[int, bytes] = field(default_factory=dict)
    next_hop: int | None = None


def decode_update(body: bytes) -> Update:
    if len(body) < 4:
        raise BGPError(3, 1, "UPDATE too short")
    wlen = struct.unpack_from("!H", body)[0]
    if 2 + wlen + 2 > len(body):
        raise BGPError(3, 1, "withdrawn routes length overruns the message")
    upd = Update(withdrawn=decode_prefixes(body[2:2 + wlen]))
    pos = 2 + wlen
    alen = struct.unpack_from("!H", body, pos)[0]
    pos += 2
    if pos + alen > len(body):
        raise BGPError(3, 1, "path attribute length overruns the message")
    end = pos + alen
    while pos < end:
        if pos + 3 > end:
            raise BGPError(3, 1, "attribute header truncated")
        flags, code = body[pos], body[pos + 1]
        if flags & 0x10:
            if pos + 4 > end:
                raise BGPError(3, 1, "attribute header truncated")
            length = struct.unpack_from("!H", body, pos + 2)[0]
            pos += 4
        else:
            length = body[pos + 2]
            pos += 3
        if pos + length > end:
            raise BGPError(3, 5, f"attribute {code} overruns the attributes")
        upd.attrs[code] = body[pos:pos + length]
        pos += length
    upd.nlri = decode_prefixes(body[end:])
    nh = upd.attrs.get(NEXT_HOP)
    if nh is not None:
        if len(nh) != 4:
            raise BGPError(3, 8, "NEXT_HOP is not 4 bytes")
        upd.next_hop = int.from_bytes(nh, "big")
    reach = upd.attrs.get(MP_REACH_NLRI)
    if reach is not None and reach[:3] == b"\x00\x01\x01":
        nhl = reach[3]
        upd.next_hop = int.from_bytes(reach[4:8], "big") if nhl >= 4 else upd.next_hop
        upd.nlri += decode_prefixes(reach[5 + nhl:])
    unreach = upd.attrs.get(MP_UNREACH_NLRI)
    if unreach is not None and unreach[:3] == b"\x00\x01\x01":
        upd.withdrawn += decode_prefixes(unreach[3:])
    return upd


def decode_notification(body: bytes) -> tuple[int, int, bytes]:
    if len(body) < 2:
        raise BGPError(1, 2, "NOTIFICATION too short")
    return body[0], body[1], body[2:]


# -- the simulated clients (I/O) -----------------------------------------------------------
class Plan:
    """Who owns which prefixes, so a receiver can check every route; pure."""

    def __init__(self, clients: int, per_client: int, cluster_id: str | None) -> None:
        self.clients = clients
        self.per_client = per_client
        self.cluster_id = socket.inet_aton(cluster_id) if cluster_id else None
        self.owner_of_hop = {int(ipaddress.IPv4Address(client_ip(i))): i for i in range(clients)}
        self.expect = (clients - 1) * per_client

    def check(self, me: int, upd: Update) -> str | None:
        """Why ``upd`` (received by client ``me``) is wrong, or None. Every NLRI is checked."""
        return Verdict.of(upd, self).reason_for(me)

    def origin_problem(self, upd: Update) -> tuple[int | None, str | None]:
        """``(originating client, why the UPDATE is wrong for any receiver or None)``; the one
        receiver-dependent rule (no client gets its own prefixes back) is :meth:`Verdict.reason_for`."""
        if not upd.nlri:
            return None, None
        if upd.next_hop is None:
            return None, "announcement without NEXT_HOP"
        src = self.owner_of_hop.get(upd.next_hop)
        if src is None:
            return None, f"next hop {ipaddress.IPv4Address(upd.next_hop)} is no client"
        return src, self._attribute_problem(src, upd)

    def _attribute_problem(self, src: int, upd: Update) -> str | None:
        if upd.attrs.get(ORIGINATOR_ID) != ipaddress.IPv4Address(upd.next_hop).packed:
            return f"ORIGINATOR_ID {upd.attrs.get(ORIGINATOR_ID)!r} is not the originating client"
        clusters = upd.attrs.get(CLUSTER_LIST)
        if not clusters or len(clusters) % 4:
            return "CLUSTER_LIST missing"
        if self.cluster_id is not None and self.cluster_id not in _ids(clusters):
            return "CLUSTER_LIST lacks the reflector's cluster ID"
        if LOCAL_PREF not in upd.attrs:
            return "LOCAL_PREF missing"
        lo = client_prefix_base(src, self.per_client)
        hi = lo + self.per_client * 64
        for addr, plen in upd.nlri:
            if plen != PREFIX_LEN or not (lo <= addr < hi or extra_index(src, addr) is not None):
                return f"prefix {ipaddress.IPv4Address(addr)}/{plen} is not from next hop's client"
        return None


def _ids(data: bytes) -> set[bytes]:
    return {data[k:k + 4] for k in range(0, len(data), 4)}


@dataclass(frozen=True)
class Verdict:
    """What one received UPDATE body means, decided once per distinct body in a process.

    A reflector sends the same bytes to every client for one originating client's routes (same
    NLRI, NEXT_HOP, ORIGINATOR_ID, CLUSTER_LIST), so the up to 100 sessions of a process receive
    each body up to 99 times; decoding and checking it once and looking the verdict up by its
    bytes afterwards leaves every check in place (equal bytes, equal meaning) while the profile's
    largest user-space cost (decode + check, ~6 us per UPDATE) is paid once per body, not per
    receiver. Only "own prefixes reflected back" depends on the receiver: :meth:`reason_for`.
    """

    nlri: frozenset[int]                 # ``addr << 6 | plen`` per announced prefix
    withdrawn: tuple[int, ...]
    extras: tuple[tuple[int, int], ...]  # (originating client, extra index) per extra /26 announced
    src: int | None                      # the originating client, when the next hop names one
    problem: str | None                  # wrong for every receiver

    @classmethod
    def of(cls, upd: Update, plan: Plan) -> Verdict:
        src, problem = plan.origin_problem(upd)
        extras: list[tuple[int, int]] = []
        if problem is None and src is not None:
            for addr, _ in upd.nlri:
                k = extra_index(src, addr) if addr >= EXTRA_BASE else None
                if k is not None:
                    extras.append((src, k))
        return cls(nlri=frozenset(addr << 6 | plen for addr, plen in upd.nlri),
                   withdrawn=tuple(addr << 6 | plen for addr, plen in upd.withdrawn),
                   extras=tuple(extras), src=src, problem=problem)

    def reason_for(self, me: int) -> str | None:
        """Why this UPDATE is wrong when client ``me`` receives it, or None."""
        if self.nlri and self.src == me:
            return "own prefixes reflected back"
        return self.problem


class Holdings:
    """The prefixes one session holds, kept per originating client: each entry is a verdict's own frozenset
    (shared by every session that received those bytes), so taking a whole client's table is one dict
    lookup and usually no set work. A set of every prefix per session cost a hash insert per prefix into
    a table of thousands (set_lookkey/set_add_entry were ~15 % of the simulators' CPU at 1,000 x 4)."""

    def __init__(self) -> None:
        self._by_src: dict[int, frozenset[int]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, src: int, prefixes: frozenset[int]) -> None:
        held = self._by_src.get(src)
        if held is None:
            self._by_src[src] = prefixes
            self.count += len(prefixes)
        elif held is not prefixes and not prefixes <= held:
            merged = held | prefixes
            self._by_src[src] = merged
            self.count += len(merged) - len(held)

    def withdraw(self, prefixes: Iterable[int]) -> None:
        gone = set(prefixes)
        for src, held in list(self._by_src.items()):
            if held & gone:
                self._by_src[src] = held - gone
                self.count -= len(held & gone)

    def clear(self) -> None:
        self._by_src.clear()
        self.count = 0


class VerdictCache:
    """Body bytes -> :class:`Verdict`, bounded (cleared when full: a benchmark's bodies are few and
    repeat, so a refill costs one decode per distinct body). A malformed body is never cached: its
    BGPError is raised again for every session that receives it."""

    def __init__(self, plan: Plan, limit: int = 200_000) -> None:
        self.plan = plan
        self.limit = limit
        self.decoded = 0
        self._verdicts: dict[bytes, Verdict] = {}

    def __len__(self) -> int:
        return len(self._verdicts)

    def verdict(self, body: bytes) -> Verdict:
        v = self._verdicts.get(body)
        if v is None:
            v = Verdict.of(decode_update(body), self.plan)
            self.decoded += 1
            if len(self._verdicts) >= self.limit:
                self._verdicts.clear()
            self._verdicts[body] = v
        return v


class Status:
    """Appends ``KIND IP details T`` lines to one file (this process's own)."""

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh

    def write(self, *parts: str) -> None:
        self._fh.write(" ".join([*parts, f"{time.monotonic():.6f}"]) + "\n")
        self._fh.flush()


class Session(asyncio.BufferedProtocol):
    """One simulated client: its BGP session to the reflector and the routes it holds.

    A protocol error from the reflector, a NOTIFICATION or a lost connection after
    Established is a ``down`` line; the session reconnects (and, if triggered, re-announces).

    A buffered protocol: the transport reads into the process's one scratch buffer. A plain
    ``Protocol`` gets a fresh bytes object per read, which asyncio allocates at 256 KiB and shrinks:
    glibc serves that with mmap, mremap and munmap plus page faults on every read, and a perf profile
    at 1,000 clients put about half the simulators' CPU there, in the kernel.
    """

    def __init__(self, sim: Simulator, index: int) -> None:
        self.sim = sim
        self.index = index
        self.ip = client_ip(index)
        self.prefixes = client_prefixes(index, sim.plan.per_client)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] | None = None
        self.opened: asyncio.Future[None] | None = None   # the reflector's OPEN arrived (or the connection ended)
        self.established = False
        self.announced = False
        self.done = False
        self.have = Holdings()
        self.withdrawn = 0
        self.failures = 0
        self._buf = bytearray()
        self._hold = sim.hold
        self._last_rx = 0.0
        self._keepalive: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.closed, self.opened = loop.create_future(), loop.create_future()
        self._buf.clear()
        self.established = self.announced = False
        self.have.clear()
        self._last_rx = time.monotonic()
        transport.write(encode_open(self.sim.asn, self.sim.hold, self.ip))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.sim.scratch

    def buffer_updated(self, nbytes: int) -> None:
        # the scratch buffer is shared by the process's sessions: take the bytes before returning
        self.data_received(self.sim.scratch[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self._buf += data
        self._last_rx = time.monotonic()
        try:
            for kind, body in split_messages(self._buf):
                self._handle(kind, body)
        except BGPError as exc:
            self._close(f"protocol error: {exc}", notify=(exc.code, exc.subcode))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.established:
            self.sim.status.write("down", self.ip, f"connection lost: {exc or 'closed by peer'}")
        self.established = False
        if self._keepalive is not None:
            self._keepalive.cancel()
        for fut in (self.closed, self.opened):
            if fut is not None and not fut.done():
                fut.set_result(None)

    # BGP
    def _handle(self, kind: int, body: bytes) -> None:
        if kind == UPDATE:
            if not self.established:
                raise BGPError(5, 0, "UPDATE before Established")
            self._on_update(self.sim.verdicts.verdict(body))
        elif kind == KEEPALIVE:
            if not self.established:
                self.established = True
                self.sim.status.write("up", self.ip)
                self._schedule_keepalive()
                if self.sim.triggered:
                    self.announce()
        elif kind == OPEN:
            msg = decode_open(body)
            if msg.version != 4:
                raise BGPError(2, 1, f"version {msg.version}")
            if msg.asn != self.sim.asn:
                raise BGPError(2, 2, f"peer AS {msg.asn} is not our AS {self.sim.asn} (iBGP only)")
            self._hold = min(self.sim.hold, msg.hold)
            if self.opened is not None and not self.opened.done():
                self.opened.set_result(None)
            assert self.transport is not None
            self.transport.write(encode_keepalive())
        elif kind == NOTIFICATION:
            code, sub, _ = decode_notification(body)
            self._close(f"NOTIFICATION {code}/{sub} received")
        elif kind == ROUTE_REFRESH:
            if self.announced:
                self._send_routes()
        else:
            raise BGPError(1, 3, f"bad message type {kind}")

    def _on_update(self, v: Verdict) -> None:
        have = self.have
        if v.withdrawn:
            have.withdraw(v.withdrawn)
            self.withdrawn += len(v.withdrawn)
            self.fail(f"{len(v.withdrawn)} prefixes withdrawn (nobody withdraws here)")
        reason = v.reason_for(self.index)
        if reason is not None:
            self.fail(reason)
            return
        if v.src is not None:   # None: nothing announced (End-of-RIB, withdraw-only)
            have.add(v.src, v.nlri)
        for _, k in v.extras:   # an extra block (the verdict proved whose): one line per arrival
            self.sim.status.write("extra", self.ip, str(k))
        if not self.done and len(have) >= self.sim.plan.expect:
            self.done = True
            self.sim.status.write("done", self.ip, f"routes={len(have)}", f"withdrawn={self.withdrawn}")

    def fail(self, reason: str) -> None:
        self.failures += 1
        if self.failures <= MAX_FAIL_LINES:
            self.sim.status.write("fail", self.ip, reason.replace(" ", "_"))

    def announce(self) -> None:
        if self.established and not self.announced:
            self.announced = True
            self._send_routes()

    def _send_routes(self) -> None:
        assert self.transport is not None
        step = (MAX_MESSAGE - 100) // 5   # a /26 is 5 bytes of NLRI
        for k in range(0, len(self.prefixes), step):
            self.transport.write(encode_update(self.prefixes[k:k + step], self.ip))

    def _schedule_keepalive(self) -> None:
        if self._hold:
            self._keepalive = asyncio.get_running_loop().call_later(self._hold / 3, self._tick)

    def _tick(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if time.monotonic() - self._last_rx > self._hold:
            self._close("hold timer expired", notify=(4, 0))
            return
        self.transport.write(encode_keepalive())
        self._schedule_keepalive()

    def _close(self, reason: str, notify: tuple[int, int] | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if notify is not None:
            self.transport.write(encode_notification(*notify))
        self.sim.status.write("down", self.ip, reason.replace(" ", "_"))
        self.established = False
        self.transport.close()


class Simulator:
    """Runs sessions ``first .. first+count-1`` of a ``clients``-client plan against one reflector."""

    def __init__(self, *, peer: str, asn: int, hold: int, plan: Plan, first: int, count: int,
                 status: Status, retry: float = 0.5) -> None:
        self.peer = peer
        self.asn = asn
        self.hold = hold
        self.plan = plan
        self.status = status
        self.retry = retry
        self.triggered = False
        self.extra_sent = 0
        self.verdicts = VerdictCache(plan)
        self.scratch = memoryview(bytearray(SCRATCH_BYTES))   # every session's reads land here (Session)
        self.sessions = [Session(self, i) for i in range(first, first + count)]
        self._slots = asyncio.Semaphore(CONNECT_SLOTS)

    def announce_extra(self) -> None:
        """The first session of this process announces its next extra /26 (one UPDATE): ``sent - K T``."""
        s = self.sessions[0]
        if not s.established or s.transport is None or self.extra_sent >= EXTRA_PER_CLIENT:
            self.status.write("fail", s.ip, "extra_announcement_impossible")
            return
        k = self.extra_sent
        self.extra_sent += 1
        self.status.write("sent", s.ip, str(k))
        s.transport.write(encode_update([extra_prefix(s.index, k)], s.ip))

    def trigger(self) -> None:
        self.triggered = True
        for s in self.sessions:
            s.announce()
        self.status.write("announced", "-")

    async def _keep_connected(self, s: Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            connected = False
            async with self._slots:   # see CONNECT_SLOTS
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: s, self.peer, BGP_PORT, local_addr=(s.ip, 0)), OPEN_TIMEOUT_S)
                    connected = True
                    assert s.opened is not None
                    await asyncio.wait_for(asyncio.shield(s.opened), OPEN_TIMEOUT_S)
                except (OSError, TimeoutError):
                    if connected and s.transport is not None:
                        s.transport.abort()   # the reflector never saw it (a dropped ACK): start over
            if not connected:
                await asyncio.sleep(self.retry)   # the reflector is not listening yet
                continue
            assert s.closed is not None
            await s.closed
            await asyncio.sleep(self.retry)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._keep_connected(s)) for s in self.sessions]
        await stop.wait()
        for t in tasks:
            t.cancel()
        for s in self.sessions:
            if s.transport is not None:
                s.transport.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bgpsim", description=__doc__.splitlines()[0])
    p.add_argument("--peer", required=True, help="the reflector's address")
    p.add_argument("--asn", type=int, default=64512)
    p.add_argument("--hold", type=int, default=90)
    p.add_argument("--clients", type=int, required=True, help="clients in the whole plan")
    p.add_argument("--first", type=int, required=True, help="first client this process runs")
    p.add_argument("--count", type=int, required=True, help="how many clients this process runs")
    p.add_argument("--prefixes", type=int, required=True, help="prefixes per client")
    p.add_argument("--cluster-id", default=None, help="required in every received CLUSTER_LIST")
    p.add_argument("--status", required=True)
    args = p.parse_args(argv)
    plan = Plan(args.clients, args.prefixes, args.cluster_id)

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        with open(args.status, "a") as fh:
            sim = Simulator(peer=args.peer, asn=args.asn, hold=args.hold, plan=plan, first=args.first,
                            count=args.count, status=Status(fh))
            loop.add_signal_handler(signal.SIGUSR1, sim.trigger)
            loop.add_signal_handler(signal.SIGUSR2, sim.announce_extra)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            sim.status.write("started", "-")
            await sim.run(stop)

    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""felix.drivers.routes: the only writer of l3net's routes in the main routing table.

A route is ours if and only if it carries ``ROUTE_PROTO``; any other route is
never modified or deleted, and a desired route whose slot (destination and
metric) is held by a foreign route is not written (a conflict, logged and
counted). The driver keeps a cache of our routes as the kernel has them: it
is filled by :meth:`RouteDriver.resync` (at start, which is how routes left by
a previous agent are *adopted* instead of flushed, and periodically, which
heals routes changed behind our back) and kept current by every write.

Writes go to the kernel in batches: :class:`PyrouteNetlink` pipelines a whole
batch of RTM_NEWROUTE/RTM_DELROUTE messages on one raw rtnetlink socket
(one ``send`` per ~64 KiB, no per-route round trip) and maps every error the
kernel returns back to its route by sequence number. That is what makes
10,000 learned prefixes cost about what ``ip -batch`` costs.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from felix.desired import RouteSpec
from l3net import metrics
from l3net import netns as netns_mod
from l3net.constants import MAIN_TABLE, ROUTE_PROTO, WORKLOAD_ROUTE_METRIC

_log = logging.getLogger(__name__)

SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_BLACKHOLE = 6

REPLACE = "replace"
DELETE = "delete"


class KernelRoute(NamedTuple):
    """One route of the main table in the form the driver compares (immutable, hashable).

    ``gateways`` is sorted (ECMP next hops); ``oif`` is the output interface index
    (None when the kernel chooses it from the gateway). A named tuple rather than a
    frozen dataclass: the driver builds tens of thousands per apply and per dump,
    and a tuple is several times cheaper to make.
    """

    dst: str
    proto: int
    metric: int
    type: int = RTN_UNICAST
    scope: int = SCOPE_UNIVERSE
    oif: int | None = None
    gateways: tuple[str, ...] = ()
    table: int = MAIN_TABLE

    @property
    def slot(self) -> tuple[str, int]:
        """What the kernel matches on replace: destination and metric (same table)."""
        return (self.dst, self.metric)


class RouteNetlink(Protocol):
    """The narrow netlink seam the driver writes through (real: :class:`PyrouteNetlink`)."""

    def dump_routes(self) -> list[KernelRoute]:
        """Every route of the main table (all protocols)."""
        ...

    def link_index(self, ifname: str) -> int | None: ...

    def write_batch(self, ops: Sequence[tuple[str, KernelRoute]]) -> list[OSError | None]:
        """Apply ``(REPLACE|DELETE, route)`` pairs in order; one entry per op: None or its error.

        Each op is atomic in the kernel: a failed op changed nothing, the others
        are applied regardless. An outcome that could not be learned is an error.
        """
        ...


class RouteWriteError(OSError):
    """Some route writes of one apply failed; the rest were applied.

    ``failures`` holds ``(op, route, error)`` per failed write. The errno is the
    first failure's, so callers that only know ``OSError`` keep working.
    """

    def __init__(self, failures: list[tuple[str, KernelRoute, OSError]]) -> None:
        first = failures[0][2]
        shown = "; ".join(f"{op} {r.dst} metric {r.metric}: {e.strerror or e}" for op, r, e in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(first.errno or errno.EIO, f"{len(failures)} route writes failed: {shown}{more}")
        self.failures = failures


@dataclass
class RouteApplyResult:
    writes: int = 0
    missing_links: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # "<dst>: <reason>" of malformed desired routes, skipped


class RouteDriver:
    """Owns every route with ``ROUTE_PROTO`` in the main table; diff, then apply the difference.

    Runs on the agent's kernel I/O thread (not thread-safe). Idempotent: a second
    :meth:`apply` with the same desired routes and an unchanged kernel writes nothing.
    Changes go out in batches of ``batch_size`` (replaces before deletes, so a route
    moving between metrics is never missing). A failed write does not stop the
    other writes of the apply; at the end a :class:`RouteWriteError` (an ``OSError``)
    naming every failed route propagates (the loop retries with bounded backoff) and
    the cache is marked stale so the next apply re-reads the kernel and re-diffs.
    """

    def __init__(self, nl: RouteNetlink, *, proto: int = ROUTE_PROTO, metric: int = WORKLOAD_ROUTE_METRIC,
                 batch_size: int = 1000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        self.nl = nl
        self.proto = proto
        self.metric = metric
        self.batch_size = batch_size
        self._ours: dict[tuple[str, int], KernelRoute] = {}
        self._foreign: set[tuple[str, int]] = set()
        self._stale_cache = True

    # -- kernel view --------------------------------------------------------
    def resync(self) -> None:
        """Re-read the kernel table: adopt our routes as they are, note foreign slots."""
        with metrics.ROUTE_RESYNC_TIME.time():
            routes = self.nl.dump_routes()
        self._ours = {r.slot: r for r in routes if r.proto == self.proto and r.table == MAIN_TABLE}
        self._foreign = {r.slot for r in routes if r.proto != self.proto and r.table == MAIN_TABLE}
        self._stale_cache = False
        metrics.ROUTE_RESYNCS.inc()
        self._export_counts()
        _log.debug("route table re-read ours=%d foreign_slots=%d", len(self._ours), len(self._foreign))

    def invalidate(self, reason: str) -> None:
        _log.info("route cache invalidated reason=%s", reason)
        self._stale_cache = True

    @property
    def programmed(self) -> dict[tuple[str, int], KernelRoute]:
        return dict(self._ours)

    # -- apply --------------------------------------------------------------
    def _wanted(self, spec: RouteSpec) -> KernelRoute | None:
        """The route ``spec`` asks for, in the kernel's canonical text (ValueError when it is malformed)."""
        dst = canonical_dst(spec.dst)
        if spec.kind == "workload":
            idx = spec.ifindex if spec.ifindex is not None else self.nl.link_index(spec.ifname or "")
            if idx is None:
                return None
            return KernelRoute(dst=dst, proto=self.proto, metric=self.metric, scope=SCOPE_LINK, oif=idx)
        if spec.kind == "blackhole":
            return KernelRoute(dst=dst, proto=self.proto, metric=self.metric, type=RTN_BLACKHOLE)
        if not spec.next_hops:
            raise ValueError("a learned route needs at least one next hop")
        return KernelRoute(dst=dst, proto=self.proto, metric=self.metric,
                           gateways=tuple(sorted({canonical_ip(h) for h in spec.next_hops})))

    @staticmethod
    def _same(have: KernelRoute, want: KernelRoute) -> bool:
        if (have.type, have.scope, have.gateways) != (want.type, want.scope, want.gateways):
            return False
        return want.oif is None or have.oif == want.oif

    @staticmethod
    def _is_learned(route: KernelRoute) -> bool:
        return route.type == RTN_UNICAST and bool(route.gateways)

    def _diff(self, desired: Iterable[RouteSpec], keep_stale_learned: bool, sweep: bool,
              result: RouteApplyResult) -> list[tuple[str, KernelRoute]]:
        """The writes that turn our cached routes into ``desired`` (pure, no I/O besides link lookups)."""
        replaces: list[KernelRoute] = []
        wanted_slots: set[tuple[str, int]] = set()
        by_dst: dict[str, list[KernelRoute]] | None = None  # built on first need: O(n) once, not per route
        for spec in desired:
            try:
                want = self._wanted(spec)
            except ValueError as exc:
                # Bad data is absence: the route is skipped, named, and everything else goes on.
                result.invalid.append(f"{spec.dst}: {exc}")
                continue
            if want is None:
                result.missing_links.append(spec.ifname or "")
                continue
            have = self._ours.get(want.slot)
            if have is not None and self._same(have, want):
                wanted_slots.add(want.slot)
                continue
            # Our route for this destination at another metric (e.g. the CNI plugin's own /32,
            # written before the agent saw the workload) is adopted as is rather than churned.
            if by_dst is None:
                by_dst = {}
                for r in self._ours.values():
                    by_dst.setdefault(r.dst, []).append(r)
            twin = next((r for r in by_dst.get(want.dst, ()) if self._same(r, want)), None)
            if twin is not None:
                wanted_slots.add(twin.slot)
                continue
            wanted_slots.add(want.slot)
            if have is None and want.slot in self._foreign:
                result.conflicts.append(want.dst)
                continue
            replaces.append(want)
        replaces.sort(key=lambda r: (r.dst, r.metric))
        ops: list[tuple[str, KernelRoute]] = [(REPLACE, r) for r in replaces]
        if sweep:
            for slot in sorted(self._ours.keys() - wanted_slots):
                have = self._ours[slot]
                if keep_stale_learned and self._is_learned(have):
                    continue
                ops.append((DELETE, have))
        result.conflicts.sort()
        result.missing_links.sort()
        result.invalid.sort()
        return ops

    def apply(self, desired: Iterable[RouteSpec], *, keep_stale_learned: bool = False,
              sweep: bool = True) -> RouteApplyResult:
        """Make our routes equal ``desired``.

        ``keep_stale_learned``: during the startup grace, BGP has not converged yet, so
        learned routes we no longer see are kept rather than removed. ``sweep=False``
        adds and changes but deletes nothing.
        """
        if self._stale_cache:
            self.resync()
        result = RouteApplyResult()
        ops = self._diff(desired, keep_stale_learned, sweep, result)
        if result.conflicts:
            _log.warning("routes not written: a foreign route holds the slot dsts=%s", result.conflicts)
        if result.invalid:
            _log.warning("malformed desired routes skipped routes=%s", result.invalid)
        metrics.ROUTE_CONFLICTS.set(len(result.conflicts))
        failures: list[tuple[str, KernelRoute, OSError]] = []
        try:
            for start in range(0, len(ops), self.batch_size):
                batch = ops[start:start + self.batch_size]
                metrics.ROUTE_BATCH_SIZE.observe(len(batch))
                errors = self.nl.write_batch(batch)
                if len(errors) != len(batch):
                    raise RuntimeError(f"netlink returned {len(errors)} outcomes for {len(batch)} route writes")
                self._record(batch, errors, failures, result)
        except BaseException:
            self.invalidate("route write failed")
            raise
        finally:
            self._export_counts()
        if ops:
            _log.info("routes applied writes=%d failed=%d missing_links=%d batches=%d", result.writes,
                      len(failures), len(result.missing_links), -(-len(ops) // self.batch_size))
        if failures:
            self.invalidate("route write failed")
            raise RouteWriteError(failures)
        return result

    def _record(self, batch: Sequence[tuple[str, KernelRoute]], errors: Sequence[OSError | None],
                failures: list[tuple[str, KernelRoute, OSError]], result: RouteApplyResult) -> None:
        """Bring the cache up to date with what the kernel accepted."""
        done = {REPLACE: 0, DELETE: 0}
        for (op, route), err in zip(batch, errors, strict=True):
            if err is not None and op == DELETE and err.errno == errno.ESRCH:
                # Already gone (e.g. the kernel dropped it with its interface): the goal is met.
                # The delete matched on our protocol, so no foreign route can have been hit.
                _log.debug("route already absent dst=%s metric=%d", route.dst, route.metric)
                self._ours.pop(route.slot, None)
                continue
            if err is not None:
                failures.append((op, route, err))
                _log.warning("route write failed op=%s dst=%s metric=%d error=%s", op, route.dst, route.metric, err)
                continue
            if op == REPLACE:
                self._ours[route.slot] = route
            else:
                self._ours.pop(route.slot, None)
            done[op] += 1
        for op, n in done.items():
            if n:
                metrics.ROUTE_WRITES.labels(op=op).inc(n)
                result.writes += n

    def _export_counts(self) -> None:
        counts = {"workload": 0, "blackhole": 0, "learned": 0}
        for r in self._ours.values():
            if r.type == RTN_BLACKHOLE:
                counts["blackhole"] += 1
            elif r.gateways:
                counts["learned"] += 1
            else:
                counts["workload"] += 1
        for kind, n in counts.items():
            metrics.ROUTES_PROGRAMMED.labels(kind=kind).set(n)


# -- rtnetlink wire format (pure) ------------------------------------------------
# Layouts from <linux/netlink.h> and <linux/rtnetlink.h>; native byte order.
_NLMSGHDR = struct.Struct("=IHHII")        # len, type, flags, seq, port id
_RTMSG = struct.Struct("=BBBBBBBBI")       # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")             # len, type
_RTNEXTHOP = struct.Struct("=HBBi")        # len, flags, hops (weight - 1), ifindex
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100     # on an error: the echoed request was cut to its header
NLM_F_ACK_TLVS = 0x200   # on an error: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RT_TABLE_COMPAT = 252
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_RCVBUFFORCE = 33
SIOCGSKNS = 0x894C       # ioctl: a file descriptor of the socket's own network namespace

_FLAGS = {REPLACE: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, DELETE: NLM_F_REQUEST}


def _rta(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _addr(text: str) -> tuple[int, bytes]:
    """(family, packed address); ValueError names the bad text."""
    try:
        if ":" in text:
            return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)
        return socket.AF_INET, socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"not an IP address: {text!r}") from None


@functools.lru_cache(maxsize=1 << 16)
def canonical_ip(text: str) -> str:
    """An address in the form the kernel dumps it (``fd00:0::2`` → ``fd00::2``); ValueError if it is none."""
    family, packed = _addr(text)
    return socket.inet_ntop(family, packed)


@functools.lru_cache(maxsize=1 << 16)
def _dst_parts(dst: str) -> tuple[int, bytes, int]:
    """(family, packed network address, prefix length); ValueError for a bad address, length or host bits."""
    addr, sep, plen = dst.partition("/")
    family, packed = _addr(addr)
    bits = 8 * len(packed)
    if sep and not plen.isdigit():
        raise ValueError(f"bad prefix length in {dst!r}")
    length = int(plen) if sep else bits
    if length > bits:
        raise ValueError(f"prefix length out of range in {dst!r}")
    if int.from_bytes(packed, "big") & ((1 << (bits - length)) - 1):
        raise ValueError(f"host bits set in {dst!r}")
    return family, packed, length


@functools.lru_cache(maxsize=1 << 16)
def canonical_dst(dst: str) -> str:
    """A prefix in the form the kernel dumps it; ValueError for a bad address, length or host bits.

    Host bits are an error rather than masked away: ``10.65.0.5/26`` most likely means a
    mistake upstream, and the kernel itself refuses it for IPv4.
    """
    family, packed, length = _dst_parts(dst)
    return f"{socket.inet_ntop(family, packed)}/{length}"


@functools.lru_cache(maxsize=4096)
def _attrs_after_dst(op: str, family: int, metric: int, table: int, oif: int | None,
                     gateways: tuple[str, ...]) -> bytes:
    """Every attribute but RTA_DST: shared by all routes with the same next hops (cached)."""
    attrs = [_rta(RTA_PRIORITY, _U32.pack(metric)), _rta(RTA_TABLE, _U32.pack(table))]
    if op == DELETE:
        return b"".join(attrs)
    if oif is not None:
        attrs.append(_rta(RTA_OIF, _U32.pack(oif)))
    gws = [_addr(g) for g in gateways]
    if any(f != family for f, _ in gws):
        raise ValueError(f"next hops {gateways} do not match the route's address family")
    if len(gws) == 1:
        attrs.append(_rta(RTA_GATEWAY, gws[0][1]))
    elif gws:
        hops = []
        for _, gw in gws:
            gw_attr = _rta(RTA_GATEWAY, gw)
            hops.append(_RTNEXTHOP.pack(_RTNEXTHOP.size + len(gw_attr), 0, 0, oif or 0) + gw_attr)
        attrs.append(_rta(RTA_MULTIPATH, b"".join(hops)))
    return b"".join(attrs)


_KIND = {REPLACE: RTM_NEWROUTE, DELETE: RTM_DELROUTE}


def encode_route(op: str, route: KernelRoute, seq: int, *, ack: bool = False) -> bytes:
    """One RTM_NEWROUTE (``REPLACE``: create or replace the slot) or RTM_DELROUTE message.

    A delete names destination, metric, table, protocol, type and scope only, so the
    kernel can match nothing but our own route in that slot. Raises ValueError on a
    route that cannot be encoded (bad address, family mix, unknown op).
    """
    kind = _KIND.get(op)
    if kind is None:
        raise ValueError(f"unknown route operation {op!r}")
    family, dst, dst_len = _dst_parts(route.dst)
    body = b"".join((
        _RTMSG.pack(family, dst_len, 0, 0, route.table if route.table < 256 else RT_TABLE_COMPAT, route.proto,
                    route.scope, route.type, 0),
        _RTATTR.pack(_RTATTR.size + len(dst), RTA_DST), dst,  # 4 or 16 bytes: never padded
        _attrs_after_dst(op, family, route.metric, route.table, route.oif, route.gateways)))
    flags = _FLAGS[op] | (NLM_F_ACK if ack else 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def parse_errors(data: bytes) -> list[tuple[int, int, str]]:
    """``(seq, errno, kernel message)`` for every NLMSG_ERROR in a received buffer (errno 0 = ack)."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + _ERRNO.size + _NLMSGHDR.size:
            (err,) = _ERRNO.unpack_from(data, offset + _NLMSGHDR.size)
            text = ""
            if flags & NLM_F_ACK_TLVS:
                echoed = _NLMSGHDR.unpack_from(data, offset + _NLMSGHDR.size + _ERRNO.size)[0]
                pos = offset + _NLMSGHDR.size + _ERRNO.size + (_NLMSGHDR.size if flags & NLM_F_CAPPED else echoed)
                end = offset + length
                while pos + _RTATTR.size <= end:
                    alen, atype = _RTATTR.unpack_from(data, pos)
                    if alen < _RTATTR.size:
                        break
                    if atype == NLMSGERR_ATTR_MSG:
                        text = data[pos + _RTATTR.size:pos + alen].split(b"\0", 1)[0].decode(errors="replace")
                    pos += (alen + 3) & ~3
            out.append((seq, -err, text))
        offset += (length + 3) & ~3
    return out


def _ntop(family: int, raw: bytes) -> str | None:
    try:
        return socket.inet_ntop(family, raw)
    except ValueError:
        return None


def _decode_route(data: bytes, offset: int, end: int) -> KernelRoute | None:
    """One RTM_NEWROUTE body (after the nlmsghdr) as a KernelRoute; None for what we never compare."""
    family, dst_len, _, _, table, proto, scope, rtype, _ = _RTMSG.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    size = 4 if family == socket.AF_INET else 16
    dst_raw = b"\0" * size
    metric, oif = 0, None
    gateways: list[str] = []
    pos = offset + _RTMSG.size
    while pos + _RTATTR.size <= end:
        alen, atype = _RTATTR.unpack_from(data, pos)
        if alen < _RTATTR.size or pos + alen > end:
            break
        val = pos + _RTATTR.size
        if atype == RTA_DST:
            dst_raw = data[val:val + size]
        elif atype == RTA_PRIORITY:
            metric = _U32.unpack_from(data, val)[0]
        elif atype == RTA_TABLE:
            table = _U32.unpack_from(data, val)[0]
        elif atype == RTA_OIF:
            oif = _U32.unpack_from(data, val)[0]
        elif atype == RTA_GATEWAY:
            gw = _ntop(family, data[val:val + size])
            if gw:
                gateways.append(gw)
        elif atype == RTA_MULTIPATH:
            hop, hops_end = val, pos + alen
            while hop + _RTNEXTHOP.size <= hops_end:
                hlen = _RTNEXTHOP.unpack_from(data, hop)[0]
                if hlen < _RTNEXTHOP.size:
                    break
                sub, sub_end = hop + _RTNEXTHOP.size, min(hop + hlen, hops_end)
                while sub + _RTATTR.size <= sub_end:
                    slen, stype = _RTATTR.unpack_from(data, sub)
                    if slen < _RTATTR.size:
                        break
                    if stype == RTA_GATEWAY:
                        gw = _ntop(family, data[sub + _RTATTR.size:sub + _RTATTR.size + size])
                        if gw:
                            gateways.append(gw)
                    sub += (slen + 3) & ~3
                hop += (hlen + 3) & ~3
        pos += (alen + 3) & ~3
    if len(dst_raw) != size:
        return None
    text = _ntop(family, dst_raw)
    if text is None:
        return None
    return KernelRoute(dst=f"{text}/{dst_len}", proto=proto, metric=metric, type=rtype, scope=scope, oif=oif,
                       gateways=tuple(sorted(gateways)), table=table)


def parse_route_dump(data: bytes, seq: int) -> tuple[list[KernelRoute], bool, bool]:
    """Routes in one received dump buffer, whether NLMSG_DONE was seen, whether the dump was interrupted.

    Only answers to request ``seq`` count (a late answer to an abandoned request is
    skipped). Raises OSError for an NLMSG_ERROR answer.
    """
    routes: list[KernelRoute] = []
    done = interrupted = False
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        if msg_seq != seq:
            offset += (length + 3) & ~3
            continue
        if flags & NLM_F_DUMP_INTR:
            interrupted = True
        if kind == RTM_NEWROUTE and length >= _NLMSGHDR.size + _RTMSG.size:
            r = _decode_route(data, offset + _NLMSGHDR.size, offset + length)
            if r is not None:
                routes.append(r)
        elif kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            (err,) = _ERRNO.unpack_from(data, offset + _NLMSGHDR.size)
            if err:
                raise OSError(-err, f"route dump refused: {os.strerror(-err)}")
        offset += (length + 3) & ~3
    return routes, done, interrupted


# -- the real netlink ---------------------------------------------------------
class NetnsGuardError(RuntimeError):
    """A netlink socket does not sit in the namespace it was opened for; nothing was written."""


def socket_netns(sock: socket.socket | int) -> tuple[int, int]:
    """(device, inode) of the network namespace a socket really lives in (SIOCGSKNS, Linux 4.9+)."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    ns_fd = fcntl.ioctl(fd, SIOCGSKNS)
    try:
        st = os.fstat(ns_fd)
    finally:
        os.close(ns_fd)
    return (st.st_dev, st.st_ino)


def _open_route_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        # Errors echo only the request header, and carry the kernel's reason text.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        # Room for one error per message of a whole send (each error is its own skb); a lost
        # error would be noticed (ENOBUFS) but costs a re-read of the table.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_route_socket_in(ns_path: str) -> socket.socket:
    """A rtnetlink socket created inside ``ns_path`` by a short-lived thread (setns is per thread)."""
    box: dict[str, Any] = {}

    def make() -> None:
        try:
            with netns_mod.in_netns(ns_path):
                box["sock"] = _open_route_socket()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=make, name="l3net-route-socket", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class PyrouteNetlink:
    """:class:`RouteNetlink` for one network namespace (this thread's, or a named one).

    Route dumps and writes go through a raw rtnetlink socket of its own (writes
    pipelined, see :meth:`write_batch`); link lookups go through pyroute2's
    ``IPRoute``. Before any read or write of routes it checks with SIOCGSKNS that
    both sockets really live in the target namespace (pyroute2 opens a namespaced
    socket through a forked child, and a child that died could leave a socket in
    the root namespace): if not, it raises :class:`NetnsGuardError` and writes nothing. A named namespace must exist; it
    is never created. Not thread-safe: use it from one thread (the agent's kernel
    I/O thread). Dump errors propagate as ``OSError``.
    """

    MAX_SEND = 64 * 1024   # bytes per send(); the kernel refuses a datagram above the socket's sndbuf
    ACK_TIMEOUT = 10.0     # seconds to wait for the outcome of one send (the kernel answers within the send)
    DUMP_TRIES = 3         # a dump the kernel marks interrupted (table changed meanwhile) is redone

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute

        self.netns = netns
        ns_path = netns_mod.netns_path(netns) if netns else "/proc/thread-self/ns/net"
        try:
            st = os.stat(ns_path)
        except FileNotFoundError:
            raise NetnsGuardError(f"netns: {netns!r} does not exist ({ns_path}); refusing to create it") from None
        self._target = (st.st_dev, st.st_ino)
        # flags=0: pyroute2 would otherwise create a missing namespace (O_CREAT).
        self.ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
        self._wsock: socket.socket | None = None
        try:
            self._wsock = _open_route_socket_in(ns_path) if netns else _open_route_socket()
            self.verify_netns()
        except BaseException:
            self.close()
            raise
        self._seq = 0
        self._links: dict[str, int] = {}

    def close(self) -> None:
        if self._wsock is not None:
            self._wsock.close()
            self._wsock = None
        self.ipr.close()

    def verify_netns(self) -> None:
        """Raise :class:`NetnsGuardError` unless every socket sits in the target namespace."""
        where = self.netns or "this thread's namespace"
        socks = {"pyroute2": self.ipr.asyncore.socket.fileno(), "writer": self._wsock}
        for name, sock in socks.items():
            if sock is None:
                raise NetnsGuardError(f"netns {where}: the {name} socket is closed; refusing to write")
            try:
                actual = socket_netns(sock)
            except OSError as exc:
                raise NetnsGuardError(f"netns {where}: cannot tell which namespace the {name} netlink socket "
                                      f"lives in ({exc}); refusing to touch routes") from exc
            if actual != self._target:
                raise NetnsGuardError(f"netns {where}: the {name} netlink socket lives in namespace inode "
                                      f"{actual[1]}, not {self._target[1]}; refusing to touch routes")

    def dump_routes(self) -> list[KernelRoute]:
        """Every route of the main table, both families, read and decoded on the raw socket.

        Decoding with ``struct`` rather than pyroute2's message classes keeps a 10k-route
        re-read (adoption at start, periodic healing) well under a second.
        """
        self.verify_netns()
        out: list[KernelRoute] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            out.extend(r for r in self._dump(family) if r.table == MAIN_TABLE)
        return out

    def _dump(self, family: int) -> list[KernelRoute]:
        sock = self._wsock
        assert sock is not None  # verify_netns refused a closed socket
        for _ in range(self.DUMP_TRIES):
            self._seq = self._seq % 0x7FFFFFFF + 1
            body = _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0)
            sock.sendall(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP,
                                        self._seq, 0) + body)
            routes: list[KernelRoute] = []
            interrupted = False
            sock.settimeout(self.ACK_TIMEOUT)
            try:
                while True:
                    got, done, intr = parse_route_dump(sock.recv(1 << 20), self._seq)
                    routes.extend(got)
                    interrupted |= intr
                    if done:
                        break
            except BaseException:
                self._drain(sock)
                raise
            finally:
                sock.settimeout(None)
            if not interrupted:
                return routes
            _log.info("route dump interrupted by a concurrent change; reading again family=%d", family)
        raise OSError(errno.EAGAIN, f"route dump interrupted {self.DUMP_TRIES} times in a row")

    def refresh_links(self) -> dict[str, int]:
        self._links = {link.get_attr("IFLA_IFNAME"): link["index"] for link in self.ipr.get_links()}
        return dict(self._links)

    def link_index(self, ifname: str) -> int | None:
        idx = self._links.get(ifname)
        if idx is None:
            idx = self.refresh_links().get(ifname)
        return idx

    def replace(self, route: KernelRoute) -> None:
        self._one(REPLACE, route)

    def delete(self, route: KernelRoute) -> None:
        self._one(DELETE, route)

    def _one(self, op: str, route: KernelRoute) -> None:
        err = self.write_batch([(op, route)])[0]
        if err is not None:
            raise err

    def write_batch(self, ops: Sequence[tuple[str, KernelRoute]]) -> list[OSError | None]:
        """Send every op without waiting, then read the outcomes.

        Only the last message of each send asks for an ack; the kernel handles a send's
        messages in order before ``send`` returns and answers a failure with an error
        carrying that message's sequence number, so "no error before the final ack"
        means success. If outcomes are lost (receive buffer overflow, timeout) the ops
        concerned are reported as failed, which makes the driver re-read the table.
        """
        self.verify_netns()
        sock = self._wsock
        assert sock is not None  # verify_netns refused a closed socket
        outcome: list[OSError | None] = [None] * len(ops)
        pending: list[tuple[int, bytes]] = []  # (index into ops, encoded message)
        for i, (op, route) in enumerate(ops):
            self._seq = self._seq % 0x7FFFFFFF + 1
            try:
                pending.append((i, encode_route(op, route, self._seq)))
            except ValueError as exc:
                outcome[i] = OSError(errno.EINVAL, f"cannot encode route: {exc}")
        start = 0
        while start < len(pending):
            end, size = start, 0
            while end < len(pending) and (end == start or size + len(pending[end][1]) <= self.MAX_SEND):
                size += len(pending[end][1])
                end += 1
            self._send_chunk(sock, pending[start:end], outcome)
            start = end
        return outcome

    def _send_chunk(self, sock: socket.socket, chunk: list[tuple[int, bytes]], outcome: list[OSError | None]) -> None:
        last = chunk[-1][1]
        # Ask for an ack on the last message only: patch its flags field (offset 6).
        last = last[:6] + struct.pack("=H", struct.unpack_from("=H", last, 6)[0] | NLM_F_ACK) + last[8:]
        by_seq = {_NLMSGHDR.unpack_from(msg, 0)[3]: i for i, msg in chunk}
        last_seq = _NLMSGHDR.unpack_from(last, 0)[3]
        try:
            sock.sendall(b"".join(msg for _, msg in chunk[:-1]) + last)
        except OSError as exc:
            # A refused send delivered nothing to the kernel: every op of the chunk failed.
            for idx in by_seq.values():
                outcome[idx] = OSError(exc.errno or errno.EIO, f"netlink send failed: {exc}")
            return
        deadline = time.monotonic() + self.ACK_TIMEOUT
        try:
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(1 << 20)
                finished = False
                for seq, err, text in parse_errors(data):
                    idx = by_seq.pop(seq, None)
                    if idx is None:
                        continue  # a late answer to an earlier send that was given up on
                    if err:
                        reason = os.strerror(err) + (f" ({text})" if text else "")
                        outcome[idx] = OSError(err, reason)
                    if seq == last_seq:
                        finished = True
                if finished:
                    return
        except (TimeoutError, OSError) as exc:
            code = getattr(exc, "errno", None) or errno.ETIMEDOUT
            _log.warning("route write outcomes lost error=%s unknown=%d", exc, len(by_seq))
            for idx in by_seq.values():
                if outcome[idx] is None:
                    outcome[idx] = OSError(code, f"outcome unknown: {exc}")
            self._drain(sock)
        finally:
            sock.settimeout(None)

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        """Drop whatever is still queued, so the next send starts clean."""
        sock.settimeout(0)
        try:
            while sock.recv(1 << 20):
                pass
        except (BlockingIOError, OSError):
            pass

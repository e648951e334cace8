"""l3net.rtnl: rtnetlink routes on the wire, and the raw socket that carries them.

Pure encode/decode of RTM_NEWROUTE/RTM_DELROUTE/RTM_GETROUTE messages and their
NLMSG_ERROR answers (layouts from <linux/netlink.h> and <linux/rtnetlink.h>), the
canonical text of addresses and prefixes, and :class:`PyrouteNetlink`, the real
:class:`felix.drivers.routes.RouteNetlink`: a raw rtnetlink socket that pipelines a
whole batch of writes (one ``send`` per ~64 KiB, no per-route round trip), maps
every error back to its route by sequence number, and refuses to touch anything
unless its sockets sit in the target namespace (SIOCGSKNS). No diffing or
caching here: that is :mod:`felix.drivers.routes`. It sits in the core because both writers of a
workload's host route use it: the CNI plugin at ADD and felix's route driver afterwards
(:mod:`l3net.workload_kernel` says what they write).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from l3net import netns as netns_mod

if TYPE_CHECKING:
    from pyroute2 import IPRoute
from l3net.constants import MAIN_TABLE

_log = logging.getLogger(__name__)

SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_BLACKHOLE = 6

REPLACE = "replace"
CREATE = "create"  # create-exclusive: the kernel answers EEXIST when any route holds the slot
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



# -- rtnetlink wire format (pure) ------------------------------------------------
# Layouts from <linux/netlink.h> and <linux/rtnetlink.h>; native byte order.
NLMSGHDR = struct.Struct("=IHHII")        # len, type, flags, seq, port id
_RTMSG = struct.Struct("=BBBBBBBBI")       # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")             # len, type
_RTNEXTHOP = struct.Struct("=HBBi")        # len, flags, hops (weight - 1), ifindex
U32 = struct.Struct("=I")
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
NLM_F_EXCL = 0x200
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
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33
SIOCGSKNS = 0x894C       # ioctl: a file descriptor of the socket's own network namespace

_FLAGS = {REPLACE: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, CREATE: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
          DELETE: NLM_F_REQUEST}


def rtattr(kind: int, payload: bytes) -> bytes:
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def parse_address(text: str) -> tuple[int, bytes]:
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
    family, packed = parse_address(text)
    return socket.inet_ntop(family, packed)


@functools.lru_cache(maxsize=1 << 16)
def _dst_parts(dst: str) -> tuple[int, bytes, int]:
    """(family, packed network address, prefix length); ValueError for a bad address, length or host bits."""
    addr, sep, plen = dst.partition("/")
    family, packed = parse_address(addr)
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
    attrs = [rtattr(RTA_PRIORITY, U32.pack(metric)), rtattr(RTA_TABLE, U32.pack(table))]
    if op == DELETE:
        return b"".join(attrs)
    if oif is not None:
        attrs.append(rtattr(RTA_OIF, U32.pack(oif)))
    gws = [parse_address(g) for g in gateways]
    if any(f != family for f, _ in gws):
        raise ValueError(f"next hops {gateways} do not match the route's address family")
    if len(gws) == 1:
        attrs.append(rtattr(RTA_GATEWAY, gws[0][1]))
    elif gws:
        hops = []
        for _, gw in gws:
            gw_attr = rtattr(RTA_GATEWAY, gw)
            hops.append(_RTNEXTHOP.pack(_RTNEXTHOP.size + len(gw_attr), 0, 0, oif or 0) + gw_attr)
        attrs.append(rtattr(RTA_MULTIPATH, b"".join(hops)))
    return b"".join(attrs)


_KIND = {REPLACE: RTM_NEWROUTE, CREATE: RTM_NEWROUTE, DELETE: RTM_DELROUTE}


def encode_route(op: str, route: KernelRoute, seq: int, *, ack: bool = False) -> bytes:
    """One RTM_NEWROUTE (``REPLACE``: create or replace the slot; ``CREATE``: only if the slot is free) or
    RTM_DELROUTE message.

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
        RTATTR.pack(RTATTR.size + len(dst), RTA_DST), dst,  # 4 or 16 bytes: never padded
        _attrs_after_dst(op, family, route.metric, route.table, route.oif, route.gateways)))
    flags = _FLAGS[op] | (NLM_F_ACK if ack else 0)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """``(offset, length, type, flags, seq)`` of each netlink message in a received buffer, in order."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            return
        yield offset, length, kind, flags, seq
        offset += (length + 3) & ~3


def parse_errors(data: bytes) -> list[tuple[int, int, str]]:
    """``(seq, errno, kernel message)`` for every NLMSG_ERROR in a received buffer (errno 0 = ack)."""
    out = []
    for offset, length, kind, flags, seq in messages(data):
        if kind == NLMSG_ERROR and length >= NLMSGHDR.size + _ERRNO.size + NLMSGHDR.size:
            (err,) = _ERRNO.unpack_from(data, offset + NLMSGHDR.size)
            text = ""
            if flags & NLM_F_ACK_TLVS:
                echoed = NLMSGHDR.unpack_from(data, offset + NLMSGHDR.size + _ERRNO.size)[0]
                pos = offset + NLMSGHDR.size + _ERRNO.size + (NLMSGHDR.size if flags & NLM_F_CAPPED else echoed)
                end = offset + length
                while pos + RTATTR.size <= end:
                    alen, atype = RTATTR.unpack_from(data, pos)
                    if alen < RTATTR.size:
                        break
                    if atype == NLMSGERR_ATTR_MSG:
                        text = data[pos + RTATTR.size:pos + alen].split(b"\0", 1)[0].decode(errors="replace")
                    pos += (alen + 3) & ~3
            out.append((seq, -err, text))
    return out


def _ntop(family: int, raw: bytes) -> str | None:
    try:
        return socket.inet_ntop(family, raw)
    except ValueError:
        return None


def rtattrs(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, attribute end) of each rtattr in ``data[pos:end]``, up to the first malformed one."""
    while pos + RTATTR.size <= end:
        alen, atype = RTATTR.unpack_from(data, pos)
        if alen < RTATTR.size or pos + alen > end:
            return
        yield atype, pos + RTATTR.size, pos + alen
        pos += (alen + 3) & ~3


def _multipath_gateways(data: bytes, hop: int, hops_end: int, family: int, size: int) -> list[str]:
    """The RTA_GATEWAY of each rtnexthop in an RTA_MULTIPATH value ``data[hop:hops_end]``."""
    gateways: list[str] = []
    while hop + _RTNEXTHOP.size <= hops_end:
        hlen = _RTNEXTHOP.unpack_from(data, hop)[0]
        if hlen < _RTNEXTHOP.size:
            break
        sub, sub_end = hop + _RTNEXTHOP.size, min(hop + hlen, hops_end)
        while sub + RTATTR.size <= sub_end:
            slen, stype = RTATTR.unpack_from(data, sub)
            if slen < RTATTR.size:
                break
            if stype == RTA_GATEWAY:
                gw = _ntop(family, data[sub + RTATTR.size:sub + RTATTR.size + size])
                if gw:
                    gateways.append(gw)
            sub += (slen + 3) & ~3
        hop += (hlen + 3) & ~3
    return gateways


def _decode_route(data: bytes, offset: int, end: int) -> KernelRoute | None:
    """One RTM_NEWROUTE body (after the nlmsghdr) as a KernelRoute; None for what we never compare."""
    family, dst_len, _, _, table, proto, scope, rtype, _ = _RTMSG.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    size = 4 if family == socket.AF_INET else 16
    dst_raw = b"\0" * size
    metric, oif = 0, None
    gateways: list[str] = []
    for atype, val, attr_end in rtattrs(data, offset + _RTMSG.size, end):
        if atype == RTA_DST:
            dst_raw = data[val:val + size]
        elif atype == RTA_PRIORITY:
            metric = U32.unpack_from(data, val)[0]
        elif atype == RTA_TABLE:
            table = U32.unpack_from(data, val)[0]
        elif atype == RTA_OIF:
            oif = U32.unpack_from(data, val)[0]
        elif atype == RTA_GATEWAY:
            gw = _ntop(family, data[val:val + size])
            if gw:
                gateways.append(gw)
        elif atype == RTA_MULTIPATH:
            gateways += _multipath_gateways(data, val, attr_end, family, size)
    if len(dst_raw) != size:
        return None
    text = _ntop(family, dst_raw)
    if text is None:
        return None
    return KernelRoute(dst=f"{text}/{dst_len}", proto=proto, metric=metric, type=rtype, scope=scope, oif=oif,
                       gateways=tuple(sorted(gateways)), table=table)


class DstSelector:
    """The routes a dump keeps: those to exactly these prefixes, and the default routes when asked.

    Tested on the raw message before it is decoded (prefix length from the header, the
    packed address searched for in the message's bytes; a false hit is dropped after
    decoding), so asking about a few prefixes on a node of thousands of routes costs a
    byte search per route instead of a decode per route.
    """

    def __init__(self, prefixes: Iterable[str], *, defaults: bool = False) -> None:
        self.prefixes = frozenset(canonical_dst(p) for p in prefixes)
        self.defaults = defaults
        wanted: dict[tuple[int, int], list[bytes]] = {}
        for prefix in self.prefixes:
            family, packed, length = _dst_parts(prefix)
            wanted.setdefault((family, length), []).append(packed)
        self._packed = {key: tuple(v) for key, v in wanted.items()}
        self.families = tuple(sorted({f for f, _ in self._packed} | ({socket.AF_INET} if defaults else set())))

    def keeps_raw(self, data: bytes, offset: int, end: int) -> bool:
        """Whether the RTM_NEWROUTE body ``data[offset:end]`` may be a kept route (cheap; may say yes wrongly)."""
        dst_len = data[offset + 1]
        if dst_len == 0:
            return self.defaults
        start = offset + _RTMSG.size
        return any(data.find(packed, start, end) >= 0 for packed in self._packed.get((data[offset], dst_len), ()))

    def keeps(self, route: KernelRoute) -> bool:
        return route.dst in self.prefixes or (self.defaults and route.dst in ("0.0.0.0/0", "::/0"))


def parse_route_dump(data: bytes, seq: int,
                     select: DstSelector | None = None) -> tuple[list[KernelRoute], bool, bool]:
    """Routes in one received dump buffer, whether NLMSG_DONE was seen, whether the dump was interrupted.

    Only answers to request ``seq`` count (a late answer to an abandoned request is
    skipped); with ``select``, only the routes it keeps are decoded and returned.
    Raises OSError for an NLMSG_ERROR answer.
    """
    routes: list[KernelRoute] = []
    done = interrupted = False
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, msg_seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            break
        if msg_seq != seq:
            offset += (length + 3) & ~3
            continue
        if flags & NLM_F_DUMP_INTR:
            interrupted = True
        if kind == RTM_NEWROUTE and length >= NLMSGHDR.size + _RTMSG.size:
            body = offset + NLMSGHDR.size
            if select is None or select.keeps_raw(data, body, offset + length):
                r = _decode_route(data, body, offset + length)
                if r is not None and (select is None or select.keeps(r)):
                    routes.append(r)
        elif kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            (err,) = _ERRNO.unpack_from(data, offset + NLMSGHDR.size)
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


def open_route_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        # Errors echo only the request header, and carry the kernel's reason text.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        # Strict checking (Linux 4.20+) makes the kernel filter dumps by table and interface, so
        # the routes of one new interface are read without the whole table; older kernels say
        # ENOPROTOOPT and the filter is applied here instead.
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
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
                box["sock"] = open_route_socket()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=make, name="l3net-route-socket", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class PyrouteNetlink:
    """``felix.drivers.routes.RouteNetlink`` for one network namespace (this thread's, or a named one).

    Route dumps and writes go through a raw rtnetlink socket of its own (writes
    pipelined, see :meth:`write_batch`); link lookups go through pyroute2's
    ``IPRoute``, opened on the first lookup. Before any read or write of routes it checks with SIOCGSKNS
    that every socket it opened really lives in the target namespace (pyroute2 opens a namespaced
    socket through a forked child, and a child that died could leave a socket in
    the root namespace): if not, it raises :class:`NetnsGuardError` and writes
    nothing. A named namespace must exist; it is never created. Not thread-safe:
    use it from one thread (the agent's kernel I/O thread). Dump errors propagate
    as ``OSError``.
    """

    MAX_SEND = 64 * 1024   # bytes per send(); the kernel refuses a datagram above the socket's sndbuf
    ACK_TIMEOUT = 10.0     # seconds to wait for the outcome of one send (the kernel answers within the send)
    DUMP_TRIES = 3         # a dump the kernel marks interrupted (table changed meanwhile) is redone

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        ns_path = netns_mod.netns_path(netns) if netns else "/proc/thread-self/ns/net"
        try:
            st = os.stat(ns_path)
        except FileNotFoundError:
            raise NetnsGuardError(f"netns: {netns!r} does not exist ({ns_path}); refusing to create it") from None
        self._target = (st.st_dev, st.st_ino)
        self._ipr: IPRoute | None = None   # opened on first use (link lookups): route work never needs it
        self._wsock: socket.socket | None = None
        try:
            self._wsock = _open_route_socket_in(ns_path) if netns else open_route_socket()
            self.verify_netns()
            self._strict = bool(self._wsock.getsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK))
        except BaseException:
            self.close()
            raise
        self._seq = 0
        self._links: dict[str, int] = {}

    def __enter__(self) -> PyrouteNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def ipr(self) -> IPRoute:
        """pyroute2's socket for link lookups, opened on first use (in the target namespace, checked)."""
        if self._ipr is None:
            from pyroute2 import IPRoute

            # flags=0: pyroute2 would otherwise create a missing namespace (O_CREAT).
            self._ipr = IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()
            self.verify_netns()
        return self._ipr

    def close(self) -> None:
        if self._wsock is not None:
            self._wsock.close()
            self._wsock = None
        if self._ipr is not None:
            self._ipr.close()

    def verify_netns(self) -> None:
        """Raise :class:`NetnsGuardError` unless every socket sits in the target namespace."""
        where = self.netns or "this thread's namespace"
        socks: dict[str, Any] = {"writer": self._wsock}
        if self._ipr is not None:
            socks["pyroute2"] = self._ipr.asyncore.socket.fileno()
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

    def dump_routes(self, oif: int | None = None) -> list[KernelRoute]:
        """Every route of the main table, both families, read and decoded on the raw socket.

        With ``oif``, only the routes whose output interface is that index (filtered by
        the kernel under strict checking; an interface that does not exist has none).
        Decoding with ``struct`` rather than pyroute2's message classes keeps a 10k-route
        re-read (adoption at start, periodic healing) well under a second.
        """
        self.verify_netns()
        out: list[KernelRoute] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                got = self._dump(family, oif)
            except OSError as exc:
                if oif is not None and exc.errno == errno.ENODEV:
                    return []  # strict dump filter naming a vanished interface
                raise
            out.extend(r for r in got if r.table == MAIN_TABLE and (oif is None or r.oif == oif))
        return out

    def dump_routes_to(self, select: DstSelector) -> list[KernelRoute]:
        """The main table's routes that ``select`` keeps (any protocol, type or interface), in its families only."""
        self.verify_netns()
        out: list[KernelRoute] = []
        for family in select.families:
            out.extend(r for r in self._dump(family, select=select) if r.table == MAIN_TABLE)
        return out

    def _dump(self, family: int, oif: int | None = None, select: DstSelector | None = None) -> list[KernelRoute]:
        sock = self._wsock
        assert sock is not None  # verify_netns refused a closed socket
        for _ in range(self.DUMP_TRIES):
            self._seq = self._seq % 0x7FFFFFFF + 1
            body = _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0)
            if oif is not None and self._strict:
                body += rtattr(RTA_OIF, U32.pack(oif))
            sock.sendall(NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP,
                                        self._seq, 0) + body)
            routes: list[KernelRoute] = []
            interrupted = False
            sock.settimeout(self.ACK_TIMEOUT)
            try:
                while True:
                    got, done, intr = parse_route_dump(sock.recv(1 << 20), self._seq, select)
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
        by_seq = {NLMSGHDR.unpack_from(msg, 0)[3]: i for i, msg in chunk}
        last_seq = NLMSGHDR.unpack_from(last, 0)[3]
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

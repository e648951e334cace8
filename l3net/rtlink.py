"""l3net.rtlink: rtnetlink links, addresses and single route requests on the wire, for wiring one workload.

The CNI plugin makes about fifteen kernel requests per pod (look up and delete a stale veth, create the
pair with its peer in the pod's namespace, set the MAC and bring it up, look up the pod's end, give it its
address and routes). Through pyroute2 each cost ~0.5 ms of Python, under the agent's GIL (the agent serves
CNI requests in-process), while the agent's loop wanted it for the same pod's block; here each is a
``struct`` pack, one ``send`` and one ``recv``. Layouts from <linux/rtnetlink.h>, <linux/if_link.h> and
<linux/veth.h>; native byte order. One request at a time, each answered (ack or error) before the next.

:class:`LinkSocket` is a raw rtnetlink socket in the network namespace of the thread that opens it (use
``l3net.netns.in_netns`` to open one in a pod's). A failed request raises ``OSError`` with the kernel's
errno and its extended-ack text when it gives one.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

from l3net import rtnl
from l3net.rtnl import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    U32,
    KernelRoute,
    encode_route,
    messages,
    parse_address,
    parse_errors,
    rtattr,
    rtattrs,
)

__all__ = ["Link", "LinkSocket"]

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1
NLA_F_NESTED = 0x8000

_IFINFOMSG = struct.Struct("=BxHiII")   # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")    # family, prefix length, flags, scope, index


class Link(NamedTuple):
    """One network interface as the kernel reports it."""

    index: int
    name: str
    mac: str | None
    mtu: int | None
    up: bool


def _mac_bytes(mac: str) -> bytes:
    try:
        raw = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def decode_link(body: bytes) -> Link:
    """A RTM_NEWLINK message body (after the netlink header) as a :class:`Link`."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body, 0)
    name, mac, mtu = "", None, None
    for kind, start, end in rtattrs(body, _IFINFOMSG.size, len(body)):
        value = body[start:end]
        if kind == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode(errors="replace")
        elif kind == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in value)
        elif kind == IFLA_MTU and len(value) >= 4:
            (mtu,) = U32.unpack_from(value, 0)
    return Link(index=index, name=name, mac=mac, mtu=mtu, up=bool(flags & IFF_UP))


def veth_request(name: str, mac: str, mtu: int, peer: str, peer_netns_fd: int) -> bytes:
    """The RTM_NEWLINK body that creates veth ``name`` (MAC, MTU) with its peer ``peer`` (same MTU) created
    straight in the namespace of ``peer_netns_fd``."""
    peer_msg = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join((
        rtattr(IFLA_IFNAME, _name(peer)), rtattr(IFLA_MTU, U32.pack(mtu)),
        rtattr(IFLA_NET_NS_FD, U32.pack(peer_netns_fd))))
    info = rtattr(IFLA_INFO_KIND, b"veth") + rtattr(IFLA_INFO_DATA | NLA_F_NESTED, rtattr(VETH_INFO_PEER, peer_msg))
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join((
        rtattr(IFLA_IFNAME, _name(name)), rtattr(IFLA_ADDRESS, _mac_bytes(mac)), rtattr(IFLA_MTU, U32.pack(mtu)),
        rtattr(IFLA_LINKINFO | NLA_F_NESTED, info)))


def set_link_request(index: int, *, mac: str | None = None, up: bool | None = None) -> bytes:
    """The RTM_NEWLINK body that changes interface ``index``: its MAC and/or its up flag."""
    flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
    attrs = rtattr(IFLA_ADDRESS, _mac_bytes(mac)) if mac is not None else b""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change) + attrs


def address_request(index: int, address: str, prefixlen: int) -> bytes:
    """The RTM_NEWADDR body that gives interface ``index`` the address ``address/prefixlen``."""
    family, packed = parse_address(address)
    return _IFADDRMSG.pack(family, prefixlen, 0, 0, index) + rtattr(IFA_LOCAL, packed) + rtattr(IFA_ADDRESS, packed)


class LinkSocket:
    """A raw rtnetlink socket of the namespace of the thread that opens it; requests one at a time."""

    TIMEOUT = 10.0   # seconds for one answer (the kernel answers within the send)

    def __init__(self) -> None:
        self._sock: socket.socket | None = rtnl.open_route_socket()
        self._seq = 0

    def __enter__(self) -> LinkSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message (with an ack asked for) and return the answers before the ack, as (type, body)."""
        if self._sock is None:
            raise OSError(errno.EBADF, "netlink socket closed")
        self._seq = self._seq % 0x7FFFFFFF + 1
        seq = self._seq
        self._sock.sendall(NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK,
                                          seq, 0) + body)
        answers: list[tuple[int, bytes]] = []
        self._sock.settimeout(self.TIMEOUT)
        try:
            while True:
                data = self._sock.recv(1 << 16)
                for got_seq, err, text in parse_errors(data):
                    if got_seq == seq:
                        if err:
                            raise OSError(err, os.strerror(err) + (f" ({text})" if text else ""))
                        return answers
                answers.extend(_messages(data, seq))
        finally:
            self._sock.settimeout(None)

    def link(self, *, name: str | None = None, index: int = 0) -> Link | None:
        """The interface called ``name`` (or with ``index``); None when there is none."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + (rtattr(IFLA_IFNAME, _name(name)) if name else b"")
        try:
            answers = self.request(RTM_GETLINK, 0, body)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return next((decode_link(b) for kind, b in answers if kind == RTM_NEWLINK), None)

    def add_veth(self, name: str, mac: str, mtu: int, peer: str, peer_netns_path: str) -> None:
        """Create veth ``name`` here and its peer ``peer`` in the namespace at ``peer_netns_path``."""
        fd = os.open(peer_netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, veth_request(name, mac, mtu, peer, fd))
        finally:
            os.close(fd)

    def set_link(self, index: int, *, mac: str | None = None, up: bool | None = None) -> None:
        self.request(RTM_NEWLINK, 0, set_link_request(index, mac=mac, up=up))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, address_request(index, address, prefixlen))

    def write_route(self, op: str, route: KernelRoute) -> None:
        """One route write (``l3net.rtnl`` ops and codec), answered before it returns."""
        msg = encode_route(op, route, 0)
        length, kind, flags, _seq, _pid = NLMSGHDR.unpack_from(msg, 0)
        self.request(kind, flags & ~NLM_F_REQUEST, msg[NLMSGHDR.size:length])


def _messages(data: bytes, seq: int) -> list[tuple[int, bytes]]:
    """The (type, body) of each message of ``seq`` in a received buffer, but errors and acks."""
    return [(kind, data[offset + NLMSGHDR.size:offset + length])
            for offset, length, kind, _flags, got in messages(data) if got == seq and kind != NLMSG_ERROR]

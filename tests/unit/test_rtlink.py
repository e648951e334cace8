"""l3net.rtlink's pure encoders and decoder: the bytes each request puts on the wire, read back field by field."""

from __future__ import annotations

import socket
import struct

import pytest

from l3net.rtlink import (
    _IFADDRMSG,
    _IFINFOMSG,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    NLA_F_NESTED,
    VETH_INFO_PEER,
    Link,
    _messages,
    address_request,
    decode_link,
    set_link_request,
    veth_request,
)
from l3net.rtnl import NLMSGHDR, RTATTR, rtattr

pytestmark = pytest.mark.unit


def attrs(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, pos)
        out[kind] = data[pos + RTATTR.size:pos + length]
        pos += (length + 3) & ~3
    return out


def test_a_veth_request_names_both_ends_with_mac_mtu_and_the_peers_namespace() -> None:
    body = veth_request("cali0123456789a", "ee:ee:ee:ee:ee:ee", 1450, "eth0", 7)
    family, _type, index, flags, change = _IFINFOMSG.unpack_from(body, 0)
    assert (family, index, flags, change) == (socket.AF_UNSPEC, 0, 0, 0)
    top = attrs(body[_IFINFOMSG.size:])
    assert top[IFLA_IFNAME] == b"cali0123456789a\0" and top[IFLA_ADDRESS] == b"\xee" * 6
    assert struct.unpack("=I", top[IFLA_MTU]) == (1450,)
    info = attrs(top[IFLA_LINKINFO | NLA_F_NESTED])
    assert info[IFLA_INFO_KIND] == b"veth"
    peer = attrs(info[IFLA_INFO_DATA | NLA_F_NESTED])[VETH_INFO_PEER]
    peer_attrs = attrs(peer[_IFINFOMSG.size:])
    assert peer_attrs[IFLA_IFNAME] == b"eth0\0" and struct.unpack("=I", peer_attrs[IFLA_MTU]) == (1450,)
    assert struct.unpack("=I", peer_attrs[IFLA_NET_NS_FD]) == (7,)
    with pytest.raises(ValueError, match="not a MAC address"):
        veth_request("x", "ee:ee", 1500, "y", 7)


def test_setting_a_link_changes_only_what_is_asked() -> None:
    _f, _t, index, flags, change = _IFINFOMSG.unpack_from(set_link_request(9, up=True), 0)
    assert (index, flags, change) == (9, IFF_UP, IFF_UP)
    body = set_link_request(9, mac="02:00:00:00:00:01")
    assert _IFINFOMSG.unpack_from(body, 0)[3:] == (0, 0)   # the up flag untouched
    assert attrs(body[_IFINFOMSG.size:])[IFLA_ADDRESS] == b"\x02\0\0\0\0\x01"
    assert _IFINFOMSG.unpack_from(set_link_request(9, up=False), 0)[3:] == (0, IFF_UP)


def test_an_address_request_carries_local_and_address_for_both_families() -> None:
    body = address_request(4, "10.65.0.7", 32)
    assert _IFADDRMSG.unpack_from(body, 0) == (socket.AF_INET, 32, 0, 0, 4)
    got = attrs(body[_IFADDRMSG.size:])
    assert got[IFA_LOCAL] == got[IFA_ADDRESS] == socket.inet_aton("10.65.0.7")
    assert _IFADDRMSG.unpack_from(address_request(4, "fd00::7", 128), 0)[:2] == (socket.AF_INET6, 128)


def test_a_link_message_decodes_to_index_name_mac_mtu_and_up() -> None:
    body = _IFINFOMSG.pack(0, 1, 12, IFF_UP | 0x40, 0) + rtattr(IFLA_IFNAME, b"eth0\0") + \
        rtattr(IFLA_ADDRESS, b"\x02\xaa\0\0\0\x01") + rtattr(IFLA_MTU, struct.pack("=I", 9000)) + rtattr(99, b"xyz")
    assert decode_link(body) == Link(index=12, name="eth0", mac="02:aa:00:00:00:01", mtu=9000, up=True)
    assert decode_link(_IFINFOMSG.pack(0, 1, 3, 0, 0)) == Link(index=3, name="", mac=None, mtu=None, up=False)


def test_only_the_requests_own_answers_are_kept() -> None:
    def msg(kind: int, seq: int, body: bytes) -> bytes:
        return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, 0, seq, 0) + body + b"\0" * (-len(body) % 4)

    data = msg(16, 5, b"mine") + msg(16, 4, b"late") + msg(2, 5, b"\0" * 20)
    assert _messages(data, 5) == [(16, b"mine")]

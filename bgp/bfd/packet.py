"""bgp.bfd.packet: the BFD Control packet (RFC 5880 §4.1), encoded and decoded. Pure, no I/O.

Only the mandatory section is supported: l3net runs BFD without authentication, so a
packet with the A bit set is refused (RFC 5880 §6.8.6: with no authentication in use,
a packet carrying an authentication section is discarded). Intervals are carried in
microseconds on the wire and kept in microseconds here, so that a packet survives a
decode/encode round trip byte for byte.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
HEADER_LEN = 24
_FMT = struct.Struct("!BBBBIIIII")
_U32_MAX = 0xFFFFFFFF

# Flag bits in the second byte, after the two state bits.
FLAG_POLL = 0x20
FLAG_FINAL = 0x10
FLAG_CPI = 0x08  # Control Plane Independent
FLAG_AUTH = 0x04
FLAG_DEMAND = 0x02
FLAG_MULTIPOINT = 0x01


class State(enum.IntEnum):
    """bfd.SessionState values, as carried in the Sta field."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(enum.IntEnum):
    """Diagnostic codes (RFC 5880 §4.1): why the local system last left Up."""

    NONE = 0
    DETECTION_TIME_EXPIRED = 1
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMIN_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


class PacketError(ValueError):
    """A datagram that is not a BFD Control packet this speaker accepts; the message names the field."""


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """One BFD Control packet, mandatory section only. Intervals in microseconds."""

    state: State
    my_discr: int
    your_discr: int
    detect_mult: int
    desired_min_tx_us: int
    required_min_rx_us: int
    required_min_echo_rx_us: int = 0
    diag: Diag = Diag.NONE
    poll: bool = False
    final: bool = False
    cpi: bool = False
    demand: bool = False


def encode(p: ControlPacket) -> bytes:
    """The 24 wire bytes of ``p``; ValueError naming the field if a value does not fit it."""
    if p.poll and p.final:
        raise ValueError("poll and final: a packet must not carry both bits (RFC 5880 §6.5)")
    if not 1 <= p.detect_mult <= 255:
        raise ValueError(f"detect_mult: {p.detect_mult} is outside 1..255")
    for name in ("my_discr", "your_discr", "desired_min_tx_us", "required_min_rx_us", "required_min_echo_rx_us"):
        value = getattr(p, name)
        if not 0 <= value <= _U32_MAX:
            raise ValueError(f"{name}: {value} does not fit 32 bits")
    if p.my_discr == 0:
        raise ValueError("my_discr: must be nonzero (RFC 5880 §6.8.1)")
    flags = ((FLAG_POLL if p.poll else 0) | (FLAG_FINAL if p.final else 0) | (FLAG_CPI if p.cpi else 0)
             | (FLAG_DEMAND if p.demand else 0))
    return _FMT.pack((VERSION << 5) | int(p.diag), (int(p.state) << 6) | flags, p.detect_mult, HEADER_LEN,
                     p.my_discr, p.your_discr, p.desired_min_tx_us, p.required_min_rx_us,
                     p.required_min_echo_rx_us)


def decode(data: bytes) -> ControlPacket:
    """Parse and check one datagram (the per-packet checks of RFC 5880 §6.8.6 that need no session).

    Raises PacketError naming the field for anything the RFC says to discard.
    """
    if len(data) < HEADER_LEN:
        raise PacketError(f"length: datagram of {len(data)} bytes is shorter than {HEADER_LEN}")
    b0, b1, mult, length, my_d, your_d, tx, rx, echo = _FMT.unpack_from(data)
    version = b0 >> 5
    if version != VERSION:
        raise PacketError(f"version: {version} is not {VERSION}")
    if b1 & FLAG_AUTH:
        raise PacketError("auth: authentication section present, and this speaker uses none")
    if length < HEADER_LEN:
        raise PacketError(f"length: field says {length}, less than the minimum {HEADER_LEN}")
    if length > len(data):
        raise PacketError(f"length: field says {length}, datagram holds {len(data)} bytes")
    if mult == 0:
        raise PacketError("detect_mult: zero")
    if b1 & FLAG_MULTIPOINT:
        raise PacketError("multipoint: M bit set")
    if my_d == 0:
        raise PacketError("my_discr: zero")
    poll, final = bool(b1 & FLAG_POLL), bool(b1 & FLAG_FINAL)
    diag_code = b0 & 0x1F
    try:
        diag = Diag(diag_code)
    except ValueError:
        # Reserved codes carry no meaning for us; they must not make the packet invalid.
        diag = Diag.NONE
    return ControlPacket(state=State(b1 >> 6), my_discr=my_d, your_discr=your_d, detect_mult=mult,
                         desired_min_tx_us=tx, required_min_rx_us=rx, required_min_echo_rx_us=echo,
                         diag=diag, poll=poll, final=final, cpi=bool(b1 & FLAG_CPI), demand=bool(b1 & FLAG_DEMAND))

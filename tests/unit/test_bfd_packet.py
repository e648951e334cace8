"""bgp.bfd.packet: golden bytes for the BFD Control packet, and every discard rule of RFC 5880 §6.8.6."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgp.bfd.packet import ControlPacket, Diag, PacketError, State, decode, encode

pytestmark = pytest.mark.unit

# Written out field by field from RFC 5880 §4.1, not produced by the encoder.
UP_GOLDEN = bytes.fromhex(
    "20"         # version 1, diag 0
    "c0"         # state Up (3 << 6), no flags
    "03" "18"    # detect mult 3, length 24
    "00000001"   # my discriminator
    "00000002"   # your discriminator
    "000493e0"   # desired min tx 300000 us
    "000493e0"   # required min rx 300000 us
    "00000000")  # required min echo rx 0
DOWN_POLL_GOLDEN = bytes.fromhex("21" "60" "05" "18" "deadbeef" "00000000" "000f4240" "0007a120" "00000000")


def test_golden_up_packet() -> None:
    p = ControlPacket(State.UP, my_discr=1, your_discr=2, detect_mult=3, desired_min_tx_us=300_000,
                      required_min_rx_us=300_000)
    assert encode(p) == UP_GOLDEN
    assert decode(UP_GOLDEN) == p


def test_golden_down_with_diag_and_poll() -> None:
    p = ControlPacket(State.DOWN, my_discr=0xDEADBEEF, your_discr=0, detect_mult=5, desired_min_tx_us=1_000_000,
                      required_min_rx_us=500_000, diag=Diag.DETECTION_TIME_EXPIRED, poll=True)
    assert encode(p) == DOWN_POLL_GOLDEN
    assert decode(DOWN_POLL_GOLDEN) == p


def test_final_bit_and_trailing_bytes() -> None:
    p = ControlPacket(State.INIT, 7, 9, 3, 1_000_000, 1_000_000, final=True)
    wire = encode(p)
    assert wire[1] == (2 << 6) | 0x10
    assert decode(wire + b"\x00\x00") == p, "bytes after Length are ignored"


def _patch(data: bytes, index: int, value: int) -> bytes:
    b = bytearray(data)
    b[index] = value
    return bytes(b)


@pytest.mark.parametrize(("data", "field"), [
    (UP_GOLDEN[:23], "length"),
    (_patch(UP_GOLDEN, 0, 0x40), "version"),
    (_patch(UP_GOLDEN, 1, 0xC4), "auth"),
    (_patch(UP_GOLDEN, 1, 0xC1), "multipoint"),
    (_patch(UP_GOLDEN, 2, 0), "detect_mult"),
    (_patch(UP_GOLDEN, 3, 23), "length"),
    (_patch(UP_GOLDEN, 3, 48), "length"),
    (UP_GOLDEN[:4] + b"\x00\x00\x00\x00" + UP_GOLDEN[8:], "my_discr"),
])
def test_discarded_packets_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(PacketError, match=f"^{field}:"):
        decode(data)


def test_reserved_diag_does_not_invalidate() -> None:
    assert decode(_patch(UP_GOLDEN, 0, 0x20 | 0x1F)).diag == Diag.NONE


@pytest.mark.parametrize(("kw", "field"), [
    ({"detect_mult": 0}, "detect_mult"),
    ({"detect_mult": 256}, "detect_mult"),
    ({"my_discr": 0}, "my_discr"),
    ({"your_discr": 1 << 32}, "your_discr"),
    ({"desired_min_tx_us": -1}, "desired_min_tx_us"),
    ({"poll": True, "final": True}, "poll and final"),
])
def test_encode_refuses_values_that_do_not_fit(kw: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"state": State.UP, "my_discr": 1, "your_discr": 2, "detect_mult": 3,
                               "desired_min_tx_us": 1, "required_min_rx_us": 1}
    base.update(kw)
    with pytest.raises(ValueError, match=f"^{field}"):
        encode(ControlPacket(**base))  # type: ignore[arg-type]


u32 = st.integers(0, 0xFFFFFFFF)


@given(state=st.sampled_from(State), my=st.integers(1, 0xFFFFFFFF), your=u32, mult=st.integers(1, 255), tx=u32,
       rx=u32, echo=u32, diag=st.sampled_from(Diag), flag=st.sampled_from(["", "poll", "final"]),
       cpi=st.booleans(), demand=st.booleans())
def test_round_trip(state: State, my: int, your: int, mult: int, tx: int, rx: int, echo: int, diag: Diag,
                    flag: str, cpi: bool, demand: bool) -> None:
    p = ControlPacket(state, my, your, mult, tx, rx, echo, diag, poll=flag == "poll", final=flag == "final",
                      cpi=cpi, demand=demand)
    wire = encode(p)
    assert len(wire) == 24
    assert decode(wire) == p


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_packet_error(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        decode(data)

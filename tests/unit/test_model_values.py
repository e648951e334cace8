"""l3net.model.values: the one parser of each BGP value, on good, wrong and hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3net.model.values import (
    hold_time,
    keepalive_reason,
    parse_asn,
    parse_asn_text,
    parse_community,
    parse_duration,
    parse_peer_ip,
    restart_time,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("0s", 0), ("90s", 90), ("1.5m", 90), ("1m30s", 90), ("1h2m", 3720), ("300ms", 0.3),
    (".5s", 0.5), ("5.s", 5), ("1h1m1s1ms1us1ns", 3661.001001001), ("3µs", 3e-6), ("3μs", 3e-6),
    ("1.0000000009s", 1.0), ("2562047h", 2562047 * 3600), ("1m1m", 120),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


def test_one_and_a_half_minutes_is_exactly_ninety_seconds() -> None:
    assert parse_duration("1.5m") == 90.0 and hold_time("1.5m") == 90


@pytest.mark.parametrize("bad", [
    "", "3", "90", "s", ".s", "3x", "3S", "-3s", "+3s", "3 s", " 3s", "3s\n", "1e3s", "\u0663s", "3s;",
    "9" * 5000 + "s", "2562048h", "1.5.5s", "inf", "nan", "0x1s", 90, 1.5, True, None, [], {"s": 3},
])
def test_bad_durations_raise_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[0-9.]{0,25}(ns|us|ms|s|m|h)(([0-9.]{0,25})(ns|us|ms|s|m|h))?",
                                            fullmatch=True))
def test_any_text_is_a_duration_or_a_value_error(text: str) -> None:
    try:
        secs = parse_duration(text)
    except ValueError as exc:
        assert len(str(exc)) < 200, "the reason quotes at most a short piece of the input"
        return
    assert 0 <= secs <= (2**63 - 1) / 1e9


@pytest.mark.parametrize(("value", "seconds"), [("0", 0), ("3s", 3), ("3.9s", 3), ("65535s", 65535),
                                                ("18h12m15s", 65535)])
def test_hold_time_in_range(value: str, seconds: int) -> None:
    assert hold_time(value) == seconds


@pytest.mark.parametrize("value", ["0.5s", "2.999s", "65535.5s", "18h12m16s", "19h"])
def test_hold_time_out_of_range(value: str) -> None:
    with pytest.raises(ValueError, match=r"BGP's (minimum|maximum)"):
        hold_time(value)


def test_restart_time_and_keepalive() -> None:
    assert restart_time("1s") == 1 and restart_time("1h8m15s") == 4095
    for bad in ("0s", "0.5s", "4096s", "2h"):
        with pytest.raises(ValueError, match="restart time"):
            restart_time(bad)
    assert keepalive_reason("3s", "9s") == "" and keepalive_reason("5s", "0") == ""
    assert "shorter than holdTime" in keepalive_reason("9s", "9s")
    assert keepalive_reason("bad", "9s") == "", "an unparseable value is its own field's error"


@pytest.mark.parametrize(("value", "asn"), [
    (1, 1), (4294967295, 4294967295), ("1.10", 65546), ("0.1", 1), ("65535.65535", 4294967295),
])
def test_as_numbers(value: Any, asn: int) -> None:
    assert parse_asn(value) == asn


@pytest.mark.parametrize("bad", [0, -1, 4294967296, "64512", "0.0", "65536.1", "1.65536", "1.", ".1", "1.1.1",
                                 "\u0661.\u0661\u0660", " 1.10", 64512.0, True, None, [], "9" * 5000])
def test_bad_as_numbers(bad: Any) -> None:
    with pytest.raises(ValueError, match="AS"):
        parse_asn(bad)


def test_as_numbers_from_flags() -> None:
    assert parse_asn_text("64512") == 64512 and parse_asn_text("1.10") == 65546
    for bad in ("0", "4294967296", "9" * 5000, "\u0661\u0662", "-5", "x"):
        with pytest.raises(ValueError, match="AS number"):
            parse_asn_text(bad)


@pytest.mark.parametrize(("value", "parsed"), [
    ("10.0.0.1", ("10.0.0.1", None)), ("10.0.0.1:180", ("10.0.0.1", 180)), ("[fd00::1]:180", ("fd00::1", 180)),
    ("fd00::1", ("fd00::1", None)), ("[fd00::1]", ("fd00::1", None)), ("FD00:0::1", ("fd00::1", None)),
])
def test_peer_ips(value: str, parsed: tuple[str, int | None]) -> None:
    assert parse_peer_ip(value) == parsed


@pytest.mark.parametrize("bad", [
    "", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:", "10.0.0.1:\u0663", "10.0.0.1:+80", "10.0.0.1:0080x",
    "[10.0.0.1]:80", "[fd00::1", "[fd00::1]x", "[fd00::1]:", "fd00::1%eth0", "fd00::1%eth0\nneighbor",
    "10.0.0.300", "010.0.0.1", "host:80", "10.0.0.1 ", "10.0.0.1:" + "9" * 5000, 5, None, [],
])
def test_bad_peer_ips(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_peer_ip(bad)


def test_communities() -> None:
    assert parse_community("65535:65535") == "65535:65535" and parse_community("4294967295:1:2") == "4294967295:1:2"
    for bad in ("65536:1", "1:2:4294967296", "1", "1:2:3:4", "\u0661:\u0662", " 1:2", 12, None):
        with pytest.raises(ValueError):
            parse_community(bad)

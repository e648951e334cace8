"""l3net.model.values: the one parser of each BGP value written as text, and its range rules.

Go durations (``"90s"``, ``"1.5m"``, ``"1h2m"``, ``"300ms"``), AS numbers (``64512`` or AS-dot
``"1.10"``) and BGP peer addresses (``ip``, ``ip:port``, ``[ipv6]:port``). Every reader calls these:
the document checks (:mod:`l3net.model.validate`), the typed BGP specs the agent's BGP view reads
(:mod:`l3net.model.bgp_specs`) and the agent's flags (:mod:`felix.config`). Two grammars
for one field let ``holdTime: "1.5m"`` pass ``l3netctl`` and be refused by the agent (issue 14);
with one parser they cannot disagree.

Each parser takes any JSON value, returns the typed value and raises ValueError with a reason
(quoting at most 60 characters of the input) for everything else. Digits are ASCII only: Python's
``int``/``float``/``\\d`` accept other scripts' digits, Go and Calico do not.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from l3net.model.validate.checker import short, typename

_log = logging.getLogger(__name__)

__all__ = ["MAX_ASN", "MAX_HOLD_TIME", "MAX_RESTART_TIME", "MIN_HOLD_TIME", "hold_time", "is_community",
           "keepalive_reason", "parse_asn", "parse_asn_text", "parse_community", "parse_duration", "parse_peer_ip",
           "restart_time"]

MAX_ASN = 4294967295
MIN_HOLD_TIME = 3          # RFC 4271 §4.2: 0 or at least three seconds
MAX_HOLD_TIME = 65535      # a 16-bit field
MAX_RESTART_TIME = 4095    # the graceful-restart capability's restart time is 12 bits (RFC 4724 §3)

# Go's time.ParseDuration, without the sign (no BGP or BFD time is negative): one or more
# <number><unit>, the number with an optional fraction.
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}
_MAX_NS = 2**63 - 1        # Go's Duration is int64 nanoseconds: longer overflows there
_DURATION_EXAMPLES = '(e.g. "3s", "90s", "1.5m", "1m30s", "500ms")'
_ASDOT = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})")
_COMMUNITY = re.compile(r"([0-9]{1,10}):([0-9]{1,10})(?::([0-9]{1,10}))?")


def parse_duration(value: Any) -> float:
    """A Go duration string (``"3s"``, ``"1.5m"``, ``"1h2m"``, ``"250ms"``, ``"0"``) -> seconds.

    Summed in integer nanoseconds as Go does (a fraction below 1 ns is dropped), so ``"1.5m"`` is
    exactly 90.0. Numbers, booleans, signs, spaces and values beyond Go's range are refused.
    """
    if not isinstance(value, str):
        raise ValueError(f'must be a duration string like "3s", not {typename(value)} {short(value)}')
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    pos, total = 0, 0
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if not m or not (m.group(1) or m.group(2)):
            raise ValueError(f"{short(value)} is not a duration {_DURATION_EXAMPLES}")
        whole, frac, unit = m.group(1) or "0", (m.group(2) or "")[:18], _UNIT_NS[m.group(3)]
        if len(whole) > 19:   # int() of thousands of digits is slow and far beyond the range anyway
            raise ValueError(f"{short(value)} is out of range (at most {_MAX_NS // 10**9 // 3600}h)")
        total += int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
        if total > _MAX_NS:
            raise ValueError(f"{short(value)} is out of range (at most {_MAX_NS // 10**9 // 3600}h)")
        pos = m.end()
    return total / 1e9


def hold_time(value: Any) -> int:
    """A BGP hold time -> whole seconds (a fraction is dropped, as the OPEN message carries seconds)."""
    secs = parse_duration(value)
    if 0 < secs < MIN_HOLD_TIME:
        raise ValueError(f"{short(value)} is below BGP's minimum of {MIN_HOLD_TIME}s (or 0 to disable)")
    if secs > MAX_HOLD_TIME:
        raise ValueError(f"{short(value)} is above BGP's maximum of {MAX_HOLD_TIME}s (a 16-bit field)")
    return int(secs)


def keepalive_reason(keepalive: Any, hold: Any) -> str:
    """Why ``keepalive`` cannot go with ``hold`` ("" when fine, or when either does not parse):
    a keepalive must be shorter than a non-zero hold time."""
    try:
        keep_s, hold_s = parse_duration(keepalive), parse_duration(hold)
    except ValueError:
        return ""
    if hold_s and keep_s >= hold_s:
        return f"{short(keepalive)} must be shorter than holdTime {short(hold)}"
    return ""


def restart_time(value: Any) -> int:
    """A graceful-restart time -> whole seconds, 1..4095."""
    secs = parse_duration(value)
    if not 1 <= secs <= MAX_RESTART_TIME:
        raise ValueError(f"{short(value)} is outside the restart time's range of 1..{MAX_RESTART_TIME}s (RFC 4724)")
    return int(secs)


def parse_asn(value: Any) -> int:
    """An AS number: an integer 1..4294967295, or AS-dot ``"high.low"`` (each part 0..65535, not 0.0)."""
    if isinstance(value, str):
        m = _ASDOT.fullmatch(value)
        if not m:
            raise ValueError(f'AS number must be an integer 1..{MAX_ASN} (or AS-dot "high.low"), '
                             f"not the string {short(value)}")
        high, low = int(m.group(1)), int(m.group(2))
        if high > 65535 or low > 65535 or (high == 0 and low == 0):
            raise ValueError(f"AS-dot number {value!r} is out of range (each part 0..65535, not 0.0)")
        return high * 65536 + low
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"AS number must be an integer 1..{MAX_ASN}, not {typename(value)}")
    if not 1 <= value <= MAX_ASN:
        raise ValueError(f"AS number must be 1..{MAX_ASN}: {short(value)} is out of range")
    return value


def parse_asn_text(text: str) -> int:
    """An AS number written on a command line or in an environment variable: ``64512`` or ``1.10``."""
    if text.isascii() and text.isdigit():
        if len(text) > 10:
            raise ValueError(f"AS number must be 1..{MAX_ASN}: {short(text)} is out of range")
        return parse_asn(int(text))
    return parse_asn(text)


def parse_community(value: Any) -> str:
    """A BGP community: ``aa:nn`` with 16-bit parts or large ``aa:nn:mm`` with 32-bit parts; returned as written."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {typename(value)}")
    m = _COMMUNITY.fullmatch(value)
    if m:
        parts = [int(g) for g in m.groups() if g is not None]
        limit = 65535 if len(parts) == 2 else MAX_ASN
        if all(p <= limit for p in parts):
            return value
    raise ValueError(f'{short(value)} is not a BGP community ("aa:nn" with 16-bit parts or large '
                     '"aa:nn:mm" with 32-bit parts)')


def is_community(value: Any) -> bool:
    """Whether ``value`` parses as a BGP community (a prefixAdvertisements entry is a community or a name)."""
    try:
        parse_community(value)
    except ValueError:
        return False
    return True


def parse_peer_ip(value: Any) -> tuple[str, int | None]:
    """``10.0.0.1`` / ``10.0.0.1:180`` / ``[2001:db8::1]:180`` / ``2001:db8::1`` -> (ip, port or None).

    The address comes back re-serialised; an IPv6 scope ID is refused (Python keeps it verbatim,
    newlines included, and prints it back into whatever l3net writes).
    """
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address string, not {typename(value)}")
    if "%" in value:
        raise ValueError(f"{short(value)}: IPv6 scope IDs (%zone) are not allowed")
    port: int | None = None
    host = value
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{short(value)} is not ip, ip:port or [ipv6]:port")
        if rest:
            port = _peer_port(rest[1:], value)
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{short(value)} is not an IP address (expected ip, ip:port or [ipv6]:port)") from None
        if addr.version != 6:
            raise ValueError(f"{short(value)}: brackets are only for IPv6 addresses")
        return str(addr), port
    if value.count(":") == 1:
        host, _, p = value.partition(":")
        port = _peer_port(p, value)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{short(value)} is not an IP address (expected ip, ip:port or [ipv6]:port)") from None
    return str(addr), port


def _peer_port(text: str, whole: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"{short(whole)} has an invalid port {short(text)} (must be 1..65535)")
    return int(text)

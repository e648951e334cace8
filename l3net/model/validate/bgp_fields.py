"""l3net.model.validate.bgp_fields: the values BGP resources are made of.

Owns AS numbers (integers 1..4294967295, or AS-dot ``"high.low"`` normalised to the integer), Go
durations (``"3s"``, ``"1m30s"``), BGP communities (standard ``aa:nn`` and large ``aa:nn:mm``) and
the hold/keepalive timer rules shared by BGPConfiguration and BGPPeer.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.model.validate.checker import Checker, format_path, short, typename

_log = logging.getLogger(__name__)

__all__ = ["COMMUNITY", "asn", "community_value", "duration", "parse_duration", "timers_post"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_ASDOT = re.compile(r"(\d{1,5})\.(\d{1,5})")
# A community value written out: ``aa:nn`` or large ``aa:nn:mm``.
COMMUNITY = re.compile(r"(\d{1,10}):(\d{1,10})(?::(\d{1,10}))?")
_MAX_ASN = 4294967295


def asn(c: Checker, value: Any, path: str) -> Any:
    """An AS number 1..4294967295: an integer, or AS-dot ``"high.low"`` (normalised to the integer)."""
    if isinstance(value, str):
        m = _ASDOT.fullmatch(value)
        if not m:
            return c.error(path, f"AS number must be an integer 1..{_MAX_ASN} (or AS-dot \"high.low\"), "
                                 f"not the string {short(value)}")
        high, low = int(m.group(1)), int(m.group(2))
        if high > 65535 or low > 65535 or (high == 0 and low == 0):
            return c.error(path, f"AS-dot number {value!r} is out of range (each part 0..65535, not 0.0)")
        return high * 65536 + low
    if isinstance(value, bool) or not isinstance(value, int):
        return c.error(path, f"AS number must be an integer 1..{_MAX_ASN}, not {typename(value)}")
    if not 1 <= value <= _MAX_ASN:
        return c.error(path, f"AS number {value} is out of range 1..{_MAX_ASN}")
    return value


def parse_duration(value: str) -> float:
    """Go-style duration (``"3s"``, ``"1m30s"``, ``"250ms"``, ``"0"``) -> seconds. ValueError if malformed."""
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    if not value:
        raise ValueError("empty duration")
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if not m:
            raise ValueError(f"{value!r} is not a duration (e.g. \"3s\", \"90s\", \"1m30s\", \"500ms\")")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def duration(c: Checker, value: Any, path: str) -> Any:
    """A Go duration string (see :func:`parse_duration`); stored as written."""
    if not isinstance(value, str):
        return c.error(path, f"must be a duration string like \"3s\", not {typename(value)} {short(value)}")
    try:
        parse_duration(value)
    except ValueError as exc:
        return c.error(path, str(exc))
    return value


def community_value(c: Checker, value: Any, path: str) -> Any:
    """A BGP community: ``aa:nn`` with 16-bit parts or large ``aa:nn:mm`` with 32-bit parts."""
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {typename(value)}")
    m = COMMUNITY.fullmatch(value)
    if m:
        parts = [int(g) for g in m.groups() if g is not None]
        limit = 65535 if len(parts) == 2 else _MAX_ASN
        if all(p <= limit for p in parts):
            return value
    return c.error(path, f"{value!r} is not a BGP community (\"aa:nn\" with 16-bit parts or large "
                         "\"aa:nn:mm\" with 32-bit parts)")


def timers_post(c: Checker, out: dict[str, Any], path: str) -> None:
    """holdTime is 0 or at least 3s, and keepaliveTime is shorter than a non-zero holdTime."""
    hold = out.get("holdTime")
    if hold is not None:
        secs = parse_duration(hold)
        if 0 < secs < 3:
            c.error(format_path(path, "holdTime"), f"{hold} is below BGP's minimum of 3s (or 0 to disable)")
        elif secs > 65535:
            c.error(format_path(path, "holdTime"), f"{hold} is above BGP's maximum of 65535s (a 16-bit field)")
        keep = out.get("keepaliveTime")
        if keep is not None and secs and parse_duration(keep) >= secs:
            c.error(format_path(path, "keepaliveTime"), f"{keep} must be shorter than holdTime {hold}")

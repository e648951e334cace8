"""l3net.model.validate.bgp_fields: the checks of the values BGP resources are made of.

AS numbers (normalised to the integer), Go durations (stored as written), BGP communities and the
hold, keepalive and restart timer rules shared by BGPConfiguration and BGPPeer. The grammars and
ranges themselves live in :mod:`l3net.model.values`, which the typed specs the agent reads
(:mod:`l3net.model.bgp_specs`) call too: a value passes here exactly when the agent takes it.
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.checker import Checker, format_path
from l3net.model.values import hold_time, keepalive_reason, parse_asn, parse_community, parse_duration, restart_time

_log = logging.getLogger(__name__)

__all__ = ["asn", "community_value", "duration", "parse_duration", "timers_post"]

# The restart-time fields of BGPConfiguration and BGPPeer (a spec has one of them).
_RESTART_FIELDS = ("restartTime", "maxRestartTime")


def asn(c: Checker, value: Any, path: str) -> Any:
    """An AS number (see :func:`l3net.model.values.parse_asn`), normalised to the integer."""
    try:
        return parse_asn(value)
    except ValueError as exc:
        return c.error(path, str(exc))


def duration(c: Checker, value: Any, path: str) -> Any:
    """A Go duration string (see :func:`l3net.model.values.parse_duration`); stored as written."""
    try:
        parse_duration(value)
    except ValueError as exc:
        return c.error(path, str(exc))
    return value


def community_value(c: Checker, value: Any, path: str) -> Any:
    """A BGP community: ``aa:nn`` with 16-bit parts or large ``aa:nn:mm`` with 32-bit parts."""
    try:
        return parse_community(value)
    except ValueError as exc:
        return c.error(path, str(exc))


def timers_post(c: Checker, out: dict[str, Any], path: str) -> None:
    """holdTime is 0 or 3..65535s, keepaliveTime is shorter than a non-zero holdTime, a restart time is 1..4095s."""
    hold = out.get("holdTime")
    if hold is not None:
        try:
            hold_time(hold)
        except ValueError as exc:
            c.error(format_path(path, "holdTime"), str(exc))
        else:
            keep = out.get("keepaliveTime")
            reason = keepalive_reason(keep, hold) if keep is not None else ""
            if reason:
                c.error(format_path(path, "keepaliveTime"), reason)
    for name in _RESTART_FIELDS:
        if out.get(name) is not None:
            try:
                restart_time(out[name])
            except ValueError as exc:
                c.error(format_path(path, name), str(exc))

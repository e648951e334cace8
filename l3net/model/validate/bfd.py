"""l3net.model.validate.bfd: the ``bfd`` block of BGPConfiguration and BGPPeer, and its typed resolution.

Owns the field rules (``enabled``, ``minRxInterval``, ``minTxInterval`` as Go durations,
``multiplier``) and :func:`resolve_bfd`, which turns a cluster default plus a per-peer
override into the :class:`BfdSettings` a BFD session runs with. Intervals are 10 ms..60 s
(FRR's range: below 10 ms a user-space speaker on a shared node flaps; above 60 s BFD is
slower than BGP's own hold timer); the multiplier is 1..255 (RFC 5880 §4.1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.validate.bgp_fields import duration
from l3net.model.validate.checker import BAD, Checker, boolean, format_path, integer, obj
from l3net.model.values import parse_duration

_log = logging.getLogger(__name__)

__all__ = ["BFD_SPEC", "DEFAULT_INTERVAL_US", "DEFAULT_MULTIPLIER", "BfdSettings", "resolve_bfd"]

DEFAULT_INTERVAL_US = 300_000  # MetalLB's BFDProfile default, and the 300 ms x 3
DEFAULT_MULTIPLIER = 3
MIN_INTERVAL_S = 0.010
MAX_INTERVAL_S = 60.0
_INTERVALS = ("minRxInterval", "minTxInterval")


def _bfd_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    for name in _INTERVALS:
        value = out.get(name)
        if value is None or value is BAD:
            continue
        secs = parse_duration(value)
        if not MIN_INTERVAL_S <= secs <= MAX_INTERVAL_S:
            c.error(format_path(path, name), f"{value} is outside BFD's range of 10ms..60s")
            out[name] = BAD


BFD_SPEC = obj({
    "enabled": boolean,
    "minRxInterval": duration,
    "minTxInterval": duration,
    "multiplier": integer(1, 255),
}, post=_bfd_post)


@dataclass(frozen=True, slots=True)
class BfdSettings:
    """What one BFD session runs with. Intervals in microseconds, as BFD carries them."""

    enabled: bool = False
    min_rx_us: int = DEFAULT_INTERVAL_US
    min_tx_us: int = DEFAULT_INTERVAL_US
    multiplier: int = DEFAULT_MULTIPLIER

    @property
    def detection_time_s(self) -> float:
        """Detection time when both sides use these settings (multiplier x the slower interval)."""
        return self.multiplier * max(self.min_rx_us, self.min_tx_us) / 1e6


def resolve_bfd(*layers: Mapping[str, Any] | None) -> BfdSettings:
    """Merge ``bfd`` blocks field by field, later layers winning (cluster default, node, then BGPPeer).

    The blocks must already be validated: a value that is not valid here means a document bypassed
    validation, and it raises ValueError naming the field rather than guessing.
    """
    fields: dict[str, Any] = {}
    for layer in layers:
        if layer:
            fields.update({k: v for k, v in layer.items() if v is not None})
    out = BfdSettings()
    if "enabled" in fields:
        if not isinstance(fields["enabled"], bool):
            raise ValueError(f"bfd.enabled: {fields['enabled']!r} is not a boolean")
        out = BfdSettings(fields["enabled"], out.min_rx_us, out.min_tx_us, out.multiplier)
    us = {}
    for name in _INTERVALS:
        if name in fields:
            try:
                secs = parse_duration(fields[name])
            except ValueError as exc:
                raise ValueError(f"bfd.{name}: {exc}") from None
            if not MIN_INTERVAL_S <= secs <= MAX_INTERVAL_S:
                raise ValueError(f"bfd.{name}: {fields[name]} is outside BFD's range of 10ms..60s")
            us[name] = round(secs * 1e6)
    mult = fields.get("multiplier", out.multiplier)
    if isinstance(mult, bool) or not isinstance(mult, int) or not 1 <= mult <= 255:
        raise ValueError(f"bfd.multiplier: {mult!r} is not an integer 1..255")
    return BfdSettings(out.enabled, us.get("minRxInterval", out.min_rx_us), us.get("minTxInterval", out.min_tx_us),
                       mult)

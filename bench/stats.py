"""bench.stats: the arithmetic behind every ratio and verdict (pure: numbers in, numbers out).

A benchmark measures its variants in interleaved rounds, so round *k* of the
numerator and round *k* of the denominator ran under the same machine weather.
Their quotient is one **paired ratio**; the reported ratio is the **median of
the paired ratios**, and their **spread** (min..max and the interquartile range)
says how much to trust it. A pass or fail is only given with at least
:data:`MIN_ROUNDS` rounds behind the number: with fewer, the verdict is
``insufficient rounds`` (never a pass), because three rounds spread 0.82..0.97
cannot tell 0.95 from 0.85.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MIN_ROUNDS = 10
PASS, FAIL, INSUFFICIENT, NOT_MEASURED = "pass", "fail", "insufficient rounds", "not measured"
VERDICTS = (PASS, FAIL, INSUFFICIENT, NOT_MEASURED)
OPS = (">=", "<=")


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, ``q`` in [0, 100] (the same rule as ``framework.percentile``)."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"quantile q must be in [0, 100], not {q}")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


@dataclass(frozen=True)
class Spread:
    """How far a set of per-round values strays: min..max and the quartiles."""

    min: float
    q1: float
    q3: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_json(self) -> dict[str, float]:
        return {"min": self.min, "q1": self.q1, "q3": self.q3, "max": self.max, "iqr": self.iqr}


def spread(values: Sequence[float]) -> Spread | None:
    """The spread of ``values``; None for no values."""
    if not values:
        return None
    return Spread(min=float(min(values)), q1=quantile(values, 25), q3=quantile(values, 75), max=float(max(values)))


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Round k of the numerator over round k of the denominator, for every round.

    Both sides must hold one sample per round (equal lengths); a round whose
    denominator is zero has no ratio and is dropped (it counts as no round).
    """
    if len(numerator) != len(denominator):
        raise ValueError(f"paired ratios need one sample per round on both sides: {len(numerator)} vs "
                         f"{len(denominator)}")
    return [float(a) / float(b) for a, b in zip(numerator, denominator, strict=True) if b]


def verdict(value: float | None, op: str, threshold: float, rounds: int | None) -> str:
    """``pass``/``fail`` for ``value op threshold``, given only with >= MIN_ROUNDS rounds behind it."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, not {op!r}")
    if value is None or (isinstance(value, float) and math.isnan(value)) or math.isnan(threshold):
        return NOT_MEASURED
    if rounds is None or rounds < MIN_ROUNDS:
        return INSUFFICIENT
    ok = value >= threshold if op == ">=" else value <= threshold
    return PASS if ok else FAIL


def passed(verdict_: str | None) -> bool | None:
    """The JSON's boolean: True for pass, False for fail, None for no verdict (insufficient, unmeasured)."""
    return {PASS: True, FAIL: False}.get(verdict_ or "")


@dataclass(frozen=True)
class RatioStats:
    """One ratio: its value, the per-round ratios it came from, their spread and how many rounds."""

    value: float | None
    paired: tuple[float, ...]
    spread: Spread | None
    rounds: int
    method: str  # how value was computed (shown in the JSON so nobody has to guess)


def ratio_stats(numerator: Sequence[float], denominator: Sequence[float]) -> RatioStats:
    """Median of paired ratios when the rounds pair up; otherwise a ratio of medians with no rounds.

    A ratio whose sides do not pair (different sample counts: one side measured
    once, or derived) is still reported, but with ``rounds`` 0, so it can carry no verdict.
    """
    if numerator and len(numerator) == len(denominator):
        paired = paired_ratios(numerator, denominator)
        if paired:
            return RatioStats(float(statistics.median(paired)), tuple(paired), spread(paired), len(paired),
                              "median of paired per-round ratios")
    num = statistics.median(numerator) if numerator else None
    den = statistics.median(denominator) if denominator else None
    value = float(num) / float(den) if num is not None and den else None
    return RatioStats(value, (), None, 0, "median / median (sides not paired by round: no verdict)")


def quantile_ratio_stats(numerator: Sequence[float], denominator: Sequence[float], q: float,
                         groups: int = MIN_ROUNDS) -> RatioStats:
    """The ratio of the ``q``-th quantiles of two paired series (e.g. p99 of l3net / p99 of the floor).

    A tail quantile has no per-round value, so the value is the quantile ratio over all
    rounds, ``rounds`` is the number of paired rounds, and the spread comes from splitting
    the rounds into ``groups`` interleaved groups (round k goes to group k mod groups) and
    taking the same quantile ratio in each group.
    """
    if not numerator or len(numerator) != len(denominator):
        return RatioStats(None, (), None, 0, f"p{q:g} / p{q:g} (sides not paired by round: no value)")
    den_q = quantile(denominator, q)
    value = quantile(numerator, q) / den_q if den_q else None
    per_group = []
    for g in range(min(groups, len(numerator))):
        a, b = numerator[g::groups], denominator[g::groups]
        bq = quantile(b, q)
        if bq:
            per_group.append(quantile(a, q) / bq)
    return RatioStats(value, tuple(per_group), spread(per_group), len(numerator),
                      f"p{q:g}(numerator) / p{q:g}(denominator) over all rounds; spread over {groups} "
                      "interleaved groups of rounds")

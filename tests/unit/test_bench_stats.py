"""Unit tests of bench.stats: paired ratios, their median and spread, and when a verdict may be given."""

from __future__ import annotations

import pytest

from bench import stats

pytestmark = pytest.mark.unit


def test_quantile_interpolates_and_rejects_nonsense() -> None:
    assert stats.quantile([1, 2, 3, 4], 50) == 2.5
    assert stats.quantile([4, 1, 3, 2], 25) == pytest.approx(1.75)
    assert stats.quantile([7], 99) == 7
    with pytest.raises(ValueError):
        stats.quantile([], 50)
    with pytest.raises(ValueError):
        stats.quantile([1, 2], 101)


def test_paired_ratios_divide_round_by_round() -> None:
    assert stats.paired_ratios([10, 12, 8], [5, 6, 2]) == [2.0, 2.0, 4.0]
    assert stats.paired_ratios([1, 2], [0, 4]) == [0.5]  # a zero denominator has no ratio
    with pytest.raises(ValueError, match="one sample per round"):
        stats.paired_ratios([1, 2, 3], [1, 2])


def test_spread_gives_min_max_and_quartiles() -> None:
    sp = stats.spread([0.82, 0.97, 0.9, 0.88, 0.95])
    assert sp is not None
    assert (sp.min, sp.max) == (0.82, 0.97)
    assert sp.q1 == pytest.approx(0.88) and sp.q3 == pytest.approx(0.95)
    assert sp.iqr == pytest.approx(0.07)
    assert sp.to_json()["iqr"] == pytest.approx(0.07)
    assert stats.spread([]) is None


def test_median_of_paired_ratios_differs_from_ratio_of_medians() -> None:
    # Round by round the numerator is always 2x; the medians alone say 10/5 = 2 too, but a drifting
    # machine breaks the ratio of medians: pair the rounds and the drift cancels.
    num = [2.0, 4.0, 8.0, 16.0, 32.0]
    den = [1.0, 2.0, 4.0, 8.0, 64.0]
    st = stats.ratio_stats(num, den)
    assert st.value == 2.0 and st.rounds == 5
    assert st.paired == (2.0, 2.0, 2.0, 2.0, 0.5)
    assert st.spread is not None and st.spread.min == 0.5 and st.spread.max == 2.0
    assert "paired" in st.method


def test_unpaired_sides_give_a_ratio_of_medians_and_no_rounds() -> None:
    st = stats.ratio_stats([3.0], [1.0, 2.0, 3.0])
    assert st.value == pytest.approx(1.5)
    assert st.rounds == 0 and st.paired == () and st.spread is None
    assert stats.ratio_stats([], [1.0]).value is None
    assert stats.ratio_stats([1.0], []).value is None


@pytest.mark.parametrize(("value", "op", "threshold", "rounds", "expect"), [
    (0.9, ">=", 0.8, 10, stats.PASS),
    (0.7, ">=", 0.8, 10, stats.FAIL),
    (1.2, "<=", 1.5, 25, stats.PASS),
    (1.6, "<=", 1.5, 25, stats.FAIL),
    (0.9, ">=", 0.8, 9, stats.INSUFFICIENT),   # would pass, but 9 rounds give no verdict
    (0.1, ">=", 0.8, 3, stats.INSUFFICIENT),   # would fail: still no verdict
    (0.9, ">=", 0.8, None, stats.INSUFFICIENT),
    (None, ">=", 0.8, 10, stats.NOT_MEASURED),
    (float("nan"), ">=", 0.8, 10, stats.NOT_MEASURED),
    (1.0, "<=", float("nan"), 10, stats.NOT_MEASURED),
])
def test_verdict_needs_enough_rounds(value: float | None, op: str, threshold: float, rounds: int | None,
                                     expect: str) -> None:
    assert stats.verdict(value, op, threshold, rounds) == expect


def test_verdict_rejects_unknown_operator_and_maps_to_booleans() -> None:
    with pytest.raises(ValueError):
        stats.verdict(1.0, ">", 1.0, 10)
    assert stats.passed(stats.PASS) is True
    assert stats.passed(stats.FAIL) is False
    assert stats.passed(stats.INSUFFICIENT) is None and stats.passed(None) is None


def test_quantile_ratio_uses_all_rounds_and_groups_for_the_spread() -> None:
    num = [float(100 + i) for i in range(40)]
    den = [10.0] * 40
    st = stats.quantile_ratio_stats(num, den, 99)
    assert st.value == pytest.approx(stats.quantile(num, 99) / 10.0)
    assert st.rounds == 40
    assert len(st.paired) == 10  # one quantile ratio per interleaved group of rounds
    assert st.paired[0] == pytest.approx(stats.quantile(num[0::10], 99) / 10.0)
    assert st.spread is not None and st.spread.min <= st.value <= st.spread.max + 1e-9
    assert stats.quantile_ratio_stats([1.0], [1.0, 2.0], 99).value is None


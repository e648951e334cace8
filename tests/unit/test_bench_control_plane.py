"""bench.control_plane's targets at issue 18's thresholds, fed synthetic samples (no lab).

The like-with-like ratios are tested in test_bench_framework.py, the stage table in test_bench_addstages.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bench import control_plane, framework, stats

pytestmark = pytest.mark.unit

P99 = "l3net-rr p99 ADD -> remote route"
BIRD_RR = "l3net-rr/bird-rr ADD -> remote route, p99"
FLOOR = "l3net-rr ADD / BIRD floor route add, p99"


def _result(l3net: Sequence[float], bird_rr: Sequence[float], floor: Sequence[float]) -> framework.Result:
    res = framework.Result("control_plane", "t", quick=False)
    for variant, vals in (("l3net-rr", l3net), ("bird-rr", bird_rr), ("bird-bird", floor)):
        for v in vals:
            res.sample("add_to_route_ms", variant, v, unit="ms", better="lower")
            res.sample("origin_to_remote_ms", variant, v / 2, unit="ms", better="lower")
    control_plane.declare(res)
    return res


def _targets(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in res.targets}


def test_targets_are_issue_18s_and_issue_8s() -> None:
    t = _targets(_result([60.0] * 200, [50.0] * 200, [30.0] * 200))
    assert {n: (x["op"], x["threshold"]) for n, x in t.items()} == {
        "l3net-rr p99 ADD -> remote route": ("<=", 100.0), "bird-rr p99 ADD -> remote route": ("<=", 100.0),
        FLOOR: ("<=", 2.0), "bird-rr ADD / BIRD floor route add, p99": ("<=", 2.0), BIRD_RR: ("<=", 1.2)}
    assert {x["verdict"] for x in t.values()} == {stats.PASS}   # 60 ms, 1.2 x bird-rr, 2.0 x the floor: all at
    assert t[BIRD_RR]["value"] == 1.2 and t[FLOOR]["value"] == 2.0 and t[P99]["value"] == 60.0


@pytest.mark.parametrize(("tail", "p99", "verdict"), [
    ((100.0, 100.0, 900.0), 100.0, stats.PASS),    # one slow ADD in 200 is beyond the p99
    ((99.0, 100.0, 900.0), 99.01, stats.PASS),     # just inside
    ((100.0, 101.0, 900.0), 100.01, stats.FAIL),   # just outside
    ((440.0, 440.0, 440.0), 440.0, stats.FAIL),    # issue 18's figure: passed issue 8's 1 s
])
def test_p99_add_to_remote_route_within_100_ms(tail: tuple[float, float, float], p99: float, verdict: str) -> None:
    l3net = [50.0] * 197 + list(tail)   # p99 of 200 = sorted[197] + 0.01 x (sorted[198] - sorted[197])
    t = _targets(_result(l3net, [50.0] * 200, [40.0] * 200))[P99]
    assert t["value"] == pytest.approx(p99) and t["rounds"] == 200 and t["verdict"] == verdict


@pytest.mark.parametrize(("l3net", "value", "verdict"), [
    (60.0, 1.2, stats.PASS), (59.5, 1.19, stats.PASS), (60.5, 1.21, stats.FAIL)])
def test_l3net_reflector_within_1_2_x_the_bird_reflector(l3net: float, value: float, verdict: str) -> None:
    res = _result([l3net] * 200, [50.0] * 200, [40.0] * 200)
    t = _targets(res)[BIRD_RR]
    assert t["value"] == pytest.approx(value) and t["rounds"] == 200 and t["verdict"] == verdict
    entry = next(r for r in res.ratios if r["name"] == BIRD_RR)
    assert entry["method"].startswith("p99(numerator) / p99(denominator)")
    assert entry["paired"] == pytest.approx([value] * 10)   # one p99 ratio per interleaved group of rounds


def test_the_bird_rr_ratio_is_of_the_tails_not_of_the_medians() -> None:
    l3net = [40.0] * 190 + [120.0] * 10   # faster than bird-rr at p50, slower in its tail
    res = _result(l3net, [50.0] * 200, [40.0] * 200)
    assert _targets(res)[BIRD_RR]["value"] == pytest.approx(2.4) and _targets(res)[BIRD_RR]["verdict"] == stats.FAIL
    paired = next(r for r in res.ratios if r["name"] == "l3net-rr/bird-rr ADD -> remote, paired")
    assert paired["value"] == pytest.approx(0.8) and paired["target"] is None


def test_fewer_than_ten_adds_give_no_verdict() -> None:
    for n in (6, 9):   # --quick's 6; one short of 10
        res = _result([500.0] * n, [50.0] * n, [10.0] * n)
        assert {(t["rounds"], t["verdict"]) for t in res.targets} == {(n, stats.INSUFFICIENT)}

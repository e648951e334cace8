"""bench.bfd's percentile, ratio and verdict arithmetic, fed synthetic samples (no bfdd, no namespaces)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bench import bfd, framework, stats

pytestmark = pytest.mark.unit


def _result(l3net: Sequence[float], bfdd: Sequence[float],
            cpu: Sequence[tuple[float, float]] = ((0.08, 0.1),) * 3) -> framework.Result:
    res = framework.Result("bfd", "t", quick=False)
    for ours, theirs in cpu:
        res.sample("cpu_pct_per_session", "l3net", ours, unit="% core", better="lower")
        res.sample("cpu_pct_per_session", "bfdd", theirs, unit="% core", better="lower")
    for ours, theirs in zip(l3net, bfdd, strict=True):
        res.sample("detect_ms", "l3net", ours, unit="ms", better="lower")
        res.sample("detect_ms", "bfdd", theirs, unit="ms", better="lower")
    return res


def _targets(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in res.targets}


def test_percentiles_ratios_and_targets_from_twenty_cuts() -> None:
    ours = [700.0 + 10 * k for k in range(20)]     # 700..890 ms
    theirs = [600.0 + 10 * k for k in range(20)]   # 600..790 ms
    res = _result(ours, theirs, cpu=[(0.08, 0.1), (0.06, 0.1), (0.1, 0.1)])
    bfd.declare(res)
    assert res.median("detect_p50_ms", "l3net") == 795.0 and res.median("detect_p50_ms", "bfdd") == 695.0
    assert res.median("detect_p99_ms", "l3net") == pytest.approx(888.1)   # 880 + 0.81 x 10
    t = _targets(res)
    assert t["l3net detection p99 (300 ms x 3)"]["value"] == pytest.approx(888.1)
    assert t["l3net detection p99 (300 ms x 3)"]["threshold"] == 1000.0
    assert t["l3net detection p99 (300 ms x 3)"]["rounds"] == 20
    assert t["l3net detection p99 (300 ms x 3)"]["spread"]["min"] == 700.0
    assert t["bfdd detection p99 (300 ms x 3)"]["verdict"] == stats.PASS
    r = {x["name"]: x for x in res.ratios}
    assert r["l3net/bfdd detection p50"]["value"] == pytest.approx(795.0 / 695.0)
    assert r["l3net/bfdd detection p50"]["verdict"] is None
    cpu = r["l3net/bfdd CPU per session"]
    assert cpu["value"] == pytest.approx(0.8) and cpu["rounds"] == 3 and cpu["verdict"] is None
    assert cpu["paired"] == pytest.approx([0.8, 0.6, 1.0])


@pytest.mark.parametrize(("second", "worst", "p99", "verdict"), [
    (1000.0, 1000.0, 1000.0, stats.PASS),     # at the target
    (999.0, 1000.2, 999.972, stats.PASS),     # the slowest cut over 1 s, the p99 just inside
    (1000.0, 1000.2, 1000.162, stats.FAIL),   # just outside
])
def test_detection_p99_target(second: float, worst: float, p99: float, verdict: str) -> None:
    ours = [800.0] * 18 + [second, worst]     # p99 of 20 = second + 0.81 x (worst - second)
    res = _result(ours, [800.0] * 20)
    bfd.declare(res)
    t = _targets(res)["l3net detection p99 (300 ms x 3)"]
    assert t["value"] == pytest.approx(p99) and t["verdict"] == verdict
    assert _targets(res)["bfdd detection p99 (300 ms x 3)"]["verdict"] == stats.PASS


def test_quick_runs_six_cuts_and_get_no_verdict() -> None:
    res = _result([2000.0] * 6, [500.0] * 6)   # would fail / pass with enough cuts
    bfd.declare(res)
    assert [(t["rounds"], t["verdict"]) for t in res.targets] == [(6, stats.INSUFFICIENT)] * 2
    nine = _result([500.0] * 9, [500.0] * 9)
    bfd.declare(nine)
    assert {t["verdict"] for t in nine.targets} == {stats.INSUFFICIENT}

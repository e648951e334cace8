"""bench.policy_scale's targets at issue 18's thresholds, fed synthetic samples (no namespaces).

The ratios themselves are tested in test_bench_framework.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import framework, policy_scale, stats

pytestmark = pytest.mark.unit


def _result(rounds: int = 10, *, felix: float = 0.6, add_ms: float = 20.0,
            label_ms: float = 20.0) -> framework.Result:
    res = framework.Result("policy_scale", "t", quick=False)
    for k in range(rounds):
        scale = 2.0 ** (k % 2)   # every other round on a machine half as fast (exact in binary)
        res.sample("full_apply_s", "felix", felix * scale, unit="s", better="lower")
        res.sample("full_apply_s", "felix-warm", 0.42 * scale, unit="s", better="lower")
        res.sample("full_apply_s", "bare", 0.4 * scale, unit="s", better="lower")
        res.sample("compile_s", "cold", 0.1, unit="s", better="lower")
        res.sample("compile_s", "warm", 0.005, unit="s", better="lower")
        res.sample("workload_add_ms", "felix", add_ms, unit="ms", better="lower")
        res.sample("label_change_ms", "felix", label_ms, unit="ms", better="lower")
    policy_scale.declare(res)
    return res


def _targets(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in res.targets}


COLD = "felix (cold compiler)/bare full apply time"


@pytest.mark.parametrize(("ms", "verdict"), [(25.0, stats.PASS), (24.9, stats.PASS), (25.1, stats.FAIL),
                                             (41.0, stats.FAIL)])   # 41 ms passed issue 8's 50 ms
def test_one_change_within_25_ms(ms: float, verdict: str) -> None:
    t = _targets(_result(add_ms=ms, label_ms=ms))
    for name in ("workload_add_ms (p50)", "label_change_ms (p50)"):
        assert (t[name]["op"], t[name]["threshold"]) == ("<=", 25.0)
        assert t[name]["value"] == ms and t[name]["rounds"] == 10 and t[name]["verdict"] == verdict


@pytest.mark.parametrize(("felix", "value", "verdict"), [
    (0.6, 1.5, stats.PASS), (0.596, 1.49, stats.PASS), (0.604, 1.51, stats.FAIL)])
def test_cold_full_apply_within_1_5_x_bare(felix: float, value: float, verdict: str) -> None:
    t = _targets(_result(felix=felix))[COLD]
    assert t["value"] == pytest.approx(value) and t["verdict"] == verdict
    assert t["spread"]["iqr"] == pytest.approx(0.0)


def test_fewer_than_ten_rounds_give_no_verdict() -> None:
    for rounds in (3, 9):   # --quick's 3; one short of 10
        res = _result(rounds, felix=2.0, add_ms=90.0, label_ms=90.0)
        assert {(t["rounds"], t["verdict"]) for t in res.targets} == {(rounds, stats.INSUFFICIENT)}

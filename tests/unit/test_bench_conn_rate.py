"""bench.conn_rate's target at its edge, fed synthetic samples (the ratios: test_bench_framework.py)."""

from __future__ import annotations

import pytest

from bench import conn_rate, framework, stats

pytestmark = pytest.mark.unit


def _declared(rounds: int, felix: float) -> dict[str, object]:
    res = framework.Result("conn_rate", "t", quick=False)
    for k in range(rounds):
        scale = 2.0 ** (k % 3)
        for variant, rate in (("none", 1000.0), ("felix-0", 780.0), ("felix", felix), ("bare", felix)):
            res.sample("conn_per_s", variant, rate * scale, unit="conn/s")
    conn_rate.declare(res, 1000)
    assert len(res.targets) == 1
    return res.targets[0]


@pytest.mark.parametrize(("felix", "value", "verdict"), [
    (800.0, 0.8, stats.PASS), (801.0, 0.801, stats.PASS), (799.0, 0.799, stats.FAIL)])
def test_new_connections_at_least_0_8_x_no_policy(felix: float, value: float, verdict: str) -> None:
    t = _declared(10, felix)
    assert (t["op"], t["threshold"]) == (">=", 0.8)
    assert t["value"] == value and t["rounds"] == 10 and t["verdict"] == verdict


def test_fewer_than_ten_rounds_give_no_verdict() -> None:
    for rounds in (3, 9):
        t = _declared(rounds, 80.0)
        assert t["rounds"] == rounds and t["verdict"] == stats.INSUFFICIENT


def test_tracking_check_names_the_variant_that_differs_from_its_name() -> None:
    conn_rate.check_tracking({"none": 0, "conntrack": 40, "felix-0": 41, "felix": 39, "bare": 40})
    with pytest.raises(RuntimeError, match="none: 3 tracked connections"):
        conn_rate.check_tracking({"none": 3, "conntrack": 40, "felix": 39})
    with pytest.raises(RuntimeError, match="conntrack, bare: no tracked connection"):
        conn_rate.check_tracking({"none": 0, "conntrack": 0, "felix": 39, "bare": 0})

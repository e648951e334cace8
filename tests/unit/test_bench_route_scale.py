"""bench.route_scale's ratio and verdict arithmetic, fed synthetic samples (no namespaces, no netlink)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import framework, route_scale, stats

pytestmark = pytest.mark.unit


def _result(rounds: int, felix_rate: float, *, batch_rate: float = 1000.0, loop_rate: float = 50.0,
            felix_withdraw: float = 0.1, batch_withdraw: float = 0.2) -> framework.Result:
    res = framework.Result("route_scale", "t", quick=False)
    for k in range(rounds):
        scale = 2.0 ** (k % 3)   # the machine's speed changes from round to round (exact in binary)
        for variant, rate in (("felix", felix_rate), ("ip-batch", batch_rate), ("pyroute2-loop", loop_rate)):
            res.sample("install_routes_per_s", variant, rate * scale, unit="routes/s")
        res.sample("withdraw_all_s", "felix", felix_withdraw / scale, unit="s", better="lower")
        res.sample("withdraw_all_s", "ip-batch", batch_withdraw / scale, unit="s", better="lower")
    return res


def _by_name(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in res.ratios}


@pytest.mark.parametrize(("felix_rate", "value", "verdict"), [
    (500.0, 0.5, stats.PASS),      # at the target: >= holds
    (501.0, 0.501, stats.PASS),    # just inside
    (499.0, 0.499, stats.FAIL),    # just outside
])
def test_install_rate_target_at_half_of_ip_batch(felix_rate: float, value: float, verdict: str) -> None:
    res = _result(10, felix_rate)
    route_scale.declare(res)
    entry = _by_name(res)["felix/ip-batch install rate"]
    assert entry["value"] == value and entry["rounds"] == 10
    assert entry["spread"]["min"] == entry["spread"]["max"] == value   # pairing cancels the speed changes
    assert entry["target"] == {"op": ">=", "threshold": 0.5}
    assert entry["verdict"] == verdict
    assert [t["name"] for t in res.targets] == ["felix/ip-batch install rate"]


def test_other_ratios_carry_no_target() -> None:
    res = _result(10, 800.0)
    route_scale.declare(res)
    r = _by_name(res)
    assert r["felix/pyroute2 per-call loop install rate"]["value"] == 16.0
    assert r["felix/pyroute2 per-call loop install rate"]["verdict"] is None
    assert r["felix/ip-batch withdraw time"]["value"] == 0.5
    assert r["felix/ip-batch withdraw time"]["verdict"] is None


def test_fewer_than_ten_rounds_give_no_verdict() -> None:
    for rounds, felix_rate in ((3, 100.0), (9, 900.0)):   # --quick's 3 rounds; one short of 10
        res = _result(rounds, felix_rate)
        route_scale.declare(res)
        assert res.targets[0]["value"] == felix_rate / 1000.0 and res.targets[0]["rounds"] == rounds
        assert res.targets[0]["verdict"] == stats.INSUFFICIENT and res.targets[0]["pass"] is None

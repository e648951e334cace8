"""bench.ipam's ratio and verdict arithmetic, fed synthetic samples (no etcd)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import framework, ipam, stats

pytestmark = pytest.mark.unit


def _result(rounds: int, *, ipam_adds: float = 50.0, writes: float = 2.0) -> framework.Result:
    """``rounds`` rounds of 50 ADDs: the floor at 100 ADD/s and 120 DEL/s, IPAM at ``ipam_adds`` ADD/s."""
    res = framework.Result("ipam", "t", quick=False)
    for k in range(rounds):
        scale = 0.5 if k % 2 else 1.0   # odd rounds on a machine half as fast (exact in binary)
        res.sample("etcd_writes_per_add", "ipam", writes, unit="txns", better="lower")
        res.sample("etcd_reads_per_add", "ipam", 5.0, unit="requests", better="lower")
        res.sample("etcd_keys_written_per_add", "ipam", 2.0, unit="keys", better="lower")
        for variant, adds, dels in (("ipam", ipam_adds, 30.0), ("etcd-floor", 100.0, 120.0)):
            res.sample("adds_per_s", variant, adds * scale, unit="ADD/s")
            res.sample("dels_per_s", variant, dels * scale, unit="DEL/s")
    return res


def _targets(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in res.targets}


ADD_RATE = "ipam/etcd-floor ADD rate"
WRITES = "etcd writes per ADD (Calico: 2)"


def test_targets_are_issue_18s() -> None:
    res = _result(10)
    ipam.declare(res)
    t = _targets(res)
    assert (t[ADD_RATE]["op"], t[ADD_RATE]["threshold"]) == (">=", 0.5)
    assert (t[WRITES]["op"], t[WRITES]["threshold"]) == ("<=", 2.0)
    assert {r["name"]: r["verdict"] for r in res.ratios} == {ADD_RATE: stats.PASS,
                                                             "ipam/etcd-floor DEL rate": None}


@pytest.mark.parametrize(("adds", "value", "verdict"), [
    (50.0, 0.5, stats.PASS),     # at the target
    (50.5, 0.505, stats.PASS),   # just inside
    (49.5, 0.495, stats.FAIL),   # just outside
    (12.5, 0.125, stats.FAIL),   # where it was (46 against 359 ADD/s)
])
def test_add_rate_against_the_single_key_floor(adds: float, value: float, verdict: str) -> None:
    res = _result(10, ipam_adds=adds)
    ipam.declare(res)
    t = _targets(res)[ADD_RATE]
    assert t["value"] == value and t["rounds"] == 10 and t["verdict"] == verdict
    assert t["spread"]["iqr"] == 0.0   # the slow rounds pair with the floor's slow rounds
    dels = next(r for r in res.ratios if r["name"] == "ipam/etcd-floor DEL rate")
    assert dels["value"] == 0.25 and dels["target"] is None


@pytest.mark.parametrize(("writes", "verdict"), [
    (1.0, stats.PASS),
    (2.0, stats.PASS),     # Calico's two writes: at the target
    (2.02, stats.FAIL),    # one extra write in 50 ADDs: just outside
    (3.0, stats.FAIL),     # passed the old "within one write of Calico" target
])
def test_writes_per_add_at_most_two(writes: float, verdict: str) -> None:
    res = _result(10, writes=writes)
    ipam.declare(res)
    t = _targets(res)[WRITES]
    assert t["value"] == writes and t["rounds"] == 10 and t["unit"] == "txns" and t["verdict"] == verdict


def test_writes_per_add_is_the_median_over_rounds() -> None:
    res = _result(10)
    res.metrics["etcd_writes_per_add"].samples["ipam"] = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0]
    ipam.declare(res)
    t = _targets(res)[WRITES]
    assert t["value"] == 1.5 and t["verdict"] == stats.PASS
    assert (t["spread"]["min"], t["spread"]["max"]) == (1.0, 5.0)
    assert t["spread"]["q1"] == 1.0 and t["spread"]["q3"] == 2.75


def test_quick_runs_two_rounds_and_gets_no_verdict() -> None:
    res = _result(2, ipam_adds=10.0, writes=9.0)   # both would fail
    ipam.declare(res)
    assert {t["verdict"] for t in res.targets} == {stats.INSUFFICIENT}
    assert [t["rounds"] for t in res.targets] == [2, 2]


def test_the_same_bytes_floor_is_shown_beside_the_target_when_measured() -> None:
    res = _result(10, ipam_adds=40.0)
    for k in range(10):
        scale = 0.5 if k % 2 else 1.0
        res.sample("adds_per_s", "etcd-same-bytes", 50.0 * scale, unit="ADD/s")
        res.sample("dels_per_s", "etcd-same-bytes", 60.0 * scale, unit="DEL/s")
    ipam.declare(res)
    ratios = {r["name"]: r for r in res.ratios}
    assert ratios["ipam/same-bytes txn ADD rate"]["value"] == 0.8
    assert ratios["same-bytes/single-key txn rate"]["value"] == 0.5
    assert ratios["ipam/same-bytes txn ADD rate"]["target"] is None   # an explanation, not a target
    assert _targets(res)[ADD_RATE]["verdict"] == stats.FAIL   # 0.4: the target still reads the single-key floor


def test_without_the_same_bytes_floor_only_the_single_key_ratios_are_declared() -> None:
    res = _result(10)
    ipam.declare(res)
    assert {r["name"] for r in res.ratios} == {ADD_RATE, "ipam/etcd-floor DEL rate"}

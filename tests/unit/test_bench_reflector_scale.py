"""bench.reflector_scale's samples, ratios and issue 16's targets, fed synthetic measurements (no BGP)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import framework, reflector_scale, stats
from bench.reflector_scale import Measurement

pytestmark = pytest.mark.unit

KEY = "1000x4"


def _m(converge_s: float, rss_mib: float, change_s: tuple[float, ...] = ()) -> Measurement:
    return Measurement(converge_s=converge_s, rss_mib=rss_mib, setup_s=3.0, rr_cpu_s=1.5, sim_cpu_s=0.5,
                       sim_max_core=0.25, change_s=change_s)


def _result(rounds: int = 1, *, engine_s: float = 12.0, bird_s: float = 10.0, engine_mib: float = 75.0,
            bird_mib: float = 10.0, change_s: tuple[float, ...] = (0.5,) * 20,
            changes_per_size: int = 20) -> framework.Result:
    res = framework.Result("reflector_scale", "t", quick=False)
    res.setup["changes_per_size"] = changes_per_size
    for _r in range(rounds):
        reflector_scale.record(res, "l3net-rr", 1000, 4, _m(engine_s * 4, 500.0))
        reflector_scale.record(res, "l3net-bird", 1000, 4, _m(engine_s, engine_mib, change_s))
        reflector_scale.record(res, "bird-rr", 1000, 4, _m(bird_s, bird_mib))
    return res


def _targets(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in res.targets}


CONVERGE = f"BIRD engine / bare BIRD time to converge, {KEY}"
RSS = f"BIRD engine RSS (BIRD + l3net), {KEY}"
CHANGE = f"BIRD engine: one new block at every client, p99, {KEY}"


def test_record_turns_one_measurement_into_samples() -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    changes = tuple(0.1 * (k + 1) for k in range(20))   # 0.1 .. 2.0 s
    reflector_scale.record(res, "l3net-bird", 100, 4, _m(2.0, 75.0, changes))
    assert res.median("converge_s_100x4", "l3net-bird") == 2.0
    assert res.median("routes_per_s_100x4", "l3net-bird") == 19800.0   # 100 x 99 x 4 routes in 2 s
    assert res.median("rr_rss_mib_100x4", "l3net-bird") == 75.0
    assert res.median("sessions_up_s_100x4", "l3net-bird") == 3.0
    assert res.median("rr_cpu_s_100x4", "l3net-bird") == 1.5
    assert res.median("sim_cpu_s_100x4", "l3net-bird") == 0.5
    assert res.median("sim_busiest_core_share_100x4", "l3net-bird") == 0.25
    assert res.median("change_p50_s_100x4", "l3net-bird") == pytest.approx(1.05)
    assert res.median("change_p99_s_100x4", "l3net-bird") == pytest.approx(1.981)   # 1.9 + 0.81 x 0.1
    reflector_scale.record(res, "bird-rr", 100, 4, _m(0.5, 9.0))
    assert "bird-rr" not in res.metrics["change_p99_s_100x4"].samples   # no changes measured: no sample


def test_each_size_compares_both_engines_with_bare_bird_without_a_target() -> None:
    res = _result()
    reflector_scale.declare_size(res, KEY)
    r = {x["name"]: x for x in res.ratios}
    assert r[f"l3net-rr/BIRD time to converge, {KEY}"]["value"] == pytest.approx(4.8)
    assert r[f"l3net-bird/BIRD time to converge, {KEY}"]["value"] == pytest.approx(1.2)
    assert r[f"l3net-rr/BIRD RSS, {KEY}"]["value"] == 50.0
    assert r[f"l3net-bird/BIRD RSS, {KEY}"]["value"] == 7.5
    assert all(x["target"] is None and x["rounds"] == 1 for x in r.values())
    assert res.targets == []


def test_no_targets_for_the_64_prefix_series() -> None:
    res = _result()
    reflector_scale.declare_targets(res, None)
    assert res.targets == [] and res.ratios == []


def test_a_full_run_measures_each_size_once_so_only_the_change_p99_gets_a_verdict() -> None:
    res = _result(engine_s=30.0)   # 3 x bare BIRD: would fail, but it stands on one round
    reflector_scale.declare_targets(res, KEY)
    t = _targets(res)
    assert t[CONVERGE]["value"] == 3.0 and t[CONVERGE]["rounds"] == 1
    assert t[CONVERGE]["verdict"] == stats.INSUFFICIENT
    assert t[RSS]["rounds"] == 1 and t[RSS]["verdict"] == stats.INSUFFICIENT
    assert t[CHANGE]["rounds"] == 20 and t[CHANGE]["verdict"] == stats.PASS   # 20 changes, each a sample


@pytest.mark.parametrize(("engine_s", "value", "verdict"), [
    (12.0, 1.2, stats.PASS), (11.9, 1.19, stats.PASS), (12.1, 1.21, stats.FAIL)])
def test_convergence_target_with_enough_rounds(engine_s: float, value: float, verdict: str) -> None:
    res = _result(10, engine_s=engine_s)
    reflector_scale.declare_targets(res, KEY)
    t = _targets(res)[CONVERGE]
    assert t["value"] == pytest.approx(value) and t["threshold"] == 1.2 and t["verdict"] == verdict


@pytest.mark.parametrize(("engine_mib", "verdict"), [(75.0, stats.PASS), (74.9, stats.PASS), (75.1, stats.FAIL)])
def test_rss_target_is_one_and_a_half_bare_bird_plus_60_mib(engine_mib: float, verdict: str) -> None:
    res = _result(10, engine_mib=engine_mib, bird_mib=10.0)
    reflector_scale.declare_targets(res, KEY)
    t = _targets(res)[RSS]
    assert t["threshold"] == 75.0 and t["value"] == engine_mib and t["unit"] == "MiB"
    assert t["verdict"] == verdict


def test_rss_target_without_bare_bird_is_not_measured() -> None:
    res = _result(10)
    del res.metrics["rr_rss_mib_1000x4"].samples["bird-rr"]
    reflector_scale.declare_targets(res, KEY)
    assert _targets(res)[RSS]["verdict"] == stats.NOT_MEASURED


@pytest.mark.parametrize(("second", "worst", "p99", "verdict"), [
    (1.0, 1.0, 1.0, stats.PASS),           # at the target
    (0.98, 1.004, 0.99944, stats.PASS),    # the slowest change over 1 s, the p99 just inside
    (0.98, 1.01, 1.0043, stats.FAIL),      # just outside
])
def test_change_p99_target(second: float, worst: float, p99: float, verdict: str) -> None:
    res = _result(change_s=(0.5,) * 18 + (second, worst))   # p99 of 20 = second + 0.81 x (worst - second)
    reflector_scale.declare_targets(res, KEY)
    t = _targets(res)[CHANGE]
    assert t["value"] == pytest.approx(p99) and t["threshold"] == 1.0 and t["verdict"] == verdict


def test_quick_runs_three_changes_and_get_no_verdict() -> None:
    res = _result(change_s=(5.0,) * 3, changes_per_size=3)
    reflector_scale.declare_targets(res, KEY)
    assert _targets(res)[CHANGE]["rounds"] == 3 and _targets(res)[CHANGE]["verdict"] == stats.INSUFFICIENT


def _failover(**kw: Any) -> reflector_scale.Failover:
    base = dict(clients=1000, killed_down=1000, killed_down_s=0.01, survivor_drops=0, survivor_withdrawn=0,
                survivor_wrong=0, survivor_full=1000, watch_s=130.0, reflectors_peered=True)
    return reflector_scale.Failover(**{**base, **kw})


def _failover_verdicts(f: reflector_scale.Failover) -> tuple[str, str]:
    res = framework.Result("reflector_scale", "t", quick=False)
    reflector_scale.record_failover(res, "l3net-bird", f, 4)
    full, lost = (t for t in res.targets)
    assert "clients still holding every route" in full["name"] and "1000x4, 130 s watched" in full["name"]
    assert "withdrawn or sessions dropped" in lost["name"]
    return full["verdict"], lost["verdict"]


def test_failover_passes_when_every_client_keeps_every_route_through_the_survivor() -> None:
    assert _failover_verdicts(_failover()) == (stats.PASS, stats.PASS)


@pytest.mark.parametrize("kw", [
    {"survivor_withdrawn": 1, "survivor_full": 999},
    {"survivor_drops": 1, "survivor_full": 999},
    {"survivor_wrong": 1, "survivor_full": 999},
])
def test_failover_fails_on_any_loss_at_the_survivor(kw: dict[str, int]) -> None:
    assert _failover_verdicts(_failover(**kw)) == (stats.FAIL, stats.FAIL)


@pytest.mark.parametrize("kw", [{"killed_down": 999}, {"reflectors_peered": False}])
def test_failover_has_no_verdict_when_the_drill_did_not_happen(kw: dict[str, Any]) -> None:
    # a reflector that was not really killed, or reflectors that never peered, prove nothing
    assert _failover_verdicts(_failover(**kw)) == (stats.INSUFFICIENT, stats.INSUFFICIENT)


def test_failover_samples() -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    reflector_scale.record_failover(res, "l3net-rr", _failover(clients=200, killed_down=200, survivor_full=200), 4)
    assert res.median("failover_survivor_full_200x4", "l3net-rr") == 200
    assert res.median("failover_killed_sessions_down_200x4", "l3net-rr") == 200
    assert res.median("failover_survivor_withdrawn_200x4", "l3net-rr") == 0
    assert res.median("failover_reflectors_peered_200x4", "l3net-rr") == 1.0


@pytest.mark.parametrize(("converge_s", "factor", "verdict"), [
    (200 * 199 * 64 / 64000.0, 4.0, stats.INSUFFICIENT),   # exactly 4 x 16,000 routes/s, but one measurement
])
def test_exabgp_engine_target_is_four_times_the_issues_16000_routes_per_second(converge_s: float, factor: float,
                                                                             verdict: str) -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    reflector_scale.record(res, "l3net-rr", 200, 64, _m(converge_s, 500.0))
    reflector_scale.declare_exabgp_target(res)
    (t,) = res.targets
    assert t["value"] == pytest.approx(factor) and t["threshold"] == 4.0 and t["op"] == ">="
    assert t["rounds"] == 1 and t["verdict"] == verdict


@pytest.mark.parametrize(("routes_per_s", "verdict"), [(64000.0, stats.PASS), (63000.0, stats.FAIL)])
def test_exabgp_engine_target_with_enough_measurements(routes_per_s: float, verdict: str) -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    for _ in range(10):
        reflector_scale.record(res, "l3net-rr", 200, 64, _m(200 * 199 * 64 / routes_per_s, 500.0))
    reflector_scale.declare_exabgp_target(res)
    assert res.targets[0]["verdict"] == verdict


def test_no_exabgp_target_without_its_size() -> None:
    res = _result()
    reflector_scale.declare_exabgp_target(res)
    assert res.targets == []


def test_new_samples_say_who_waited_for_whom() -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    m = Measurement(converge_s=2.0, rss_mib=9.0, setup_s=1.0, rr_cpu_s=1.0, sim_cpu_s=1.0, sim_max_core=0.1,
                    rr_runq_s=0.7, sim_idle_share=0.66)
    reflector_scale.record(res, "bird-rr", 100, 4, m)
    assert res.median("rr_runq_s_100x4", "bird-rr") == 0.7
    assert res.median("sim_idle_share_100x4", "bird-rr") == 0.66


def test_sched_delta_sums_run_queue_time_and_averages_the_share_asleep() -> None:
    before = {1: (1.0, 0.5), 2: (0.0, 0.0), 3: (5.0, 5.0)}
    after = {1: (3.0, 1.5), 2: (1.0, 0.0), 4: (9.0, 9.0)}   # 3 gone, 4 new: both left out
    runq, idle = reflector_scale.sched_delta(before, after, window=4.0)
    assert runq == pytest.approx(1.0)                  # only pid 1 queued: 1.5 - 0.5
    assert idle == pytest.approx((0.25 + 0.75) / 2)    # pid 1 busy 3 of 4 s, pid 2 busy 1 of 4 s
    assert reflector_scale.sched_delta(before, after, window=0.0) == (0.0, 0.0)
    assert reflector_scale.sched_delta({}, after, window=4.0) == (0.0, 0.0)
    # a process busy longer than the window (threads in parallel) is not "negative asleep"
    assert reflector_scale.sched_delta({1: (0.0, 0.0)}, {1: (6.0, 1.0)}, window=4.0)[1] == 0.0


def test_rounds_per_variant_and_size() -> None:
    series = reflector_scale.SERIES
    target = reflector_scale.key_at_target(series)
    assert target == "1000x4"
    rounds_for = reflector_scale.rounds_for
    assert rounds_for("l3net-bird", "1000x4", target, 1, 10) == 10
    assert rounds_for("bird-rr", "1000x4", target, 1, 10) == 10
    assert rounds_for("l3net-rr", "1000x4", target, 1, 10) == 1     # minutes per round there, no target
    assert rounds_for("l3net-rr", "200x64", target, 1, 10) == 10    # the ExaBGP engine's own target
    assert rounds_for("bird-rr", "200x64", target, 1, 10) == 1
    assert rounds_for("l3net-bird", "500x4", target, 1, 10) == 1
    assert reflector_scale.key_at_target(((8, (5,)),)) is None       # --quick: no target size


@pytest.mark.parametrize(("shares", "verdict"), [((0.7,) * 10, stats.PASS), ((0.2,) * 10, stats.FAIL),
                                                 ((0.7,), stats.INSUFFICIENT)])
def test_keep_up_target_per_variant(shares: tuple[float, ...], verdict: str) -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    for share in shares:
        m = Measurement(converge_s=9.0, rss_mib=9.0, setup_s=1.0, rr_cpu_s=5.0, sim_cpu_s=8.0, sim_max_core=0.1,
                        rr_runq_s=3.0, sim_idle_share=share)
        reflector_scale.record(res, "bird-rr", 1000, 4, m)
    reflector_scale.declare_keep_up(res, KEY)
    (t,) = res.targets   # only the variant that was measured
    assert t["name"] == f"clients keep up with bird-rr: share of the window they slept, {KEY}"
    assert t["op"] == ">=" and t["threshold"] == 0.5 and t["verdict"] == verdict
    reflector_scale.declare_keep_up(res, None)
    assert len(res.targets) == 1


def test_no_keep_up_target_for_the_engine_measured_once_there() -> None:
    res = framework.Result("reflector_scale", "t", quick=False)
    reflector_scale.record(res, "l3net-rr", 1000, 4, Measurement(
        converge_s=200.0, rss_mib=700.0, setup_s=1.0, rr_cpu_s=200.0, sim_cpu_s=8.0, sim_max_core=0.1,
        rr_runq_s=3.0, sim_idle_share=0.9))
    reflector_scale.declare_keep_up(res, KEY)
    assert res.targets == [] and res.median(f"sim_idle_share_{KEY}", "l3net-rr") == 0.9

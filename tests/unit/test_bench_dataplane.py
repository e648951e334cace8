"""bench.dataplane's ratio and verdict arithmetic, fed synthetic samples (no namespaces, no iperf3)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import dataplane, framework, stats

pytestmark = pytest.mark.unit

PATHS = ("direct", "routed", "vxlan", "routed+pol", "routed-bare")


def _result(rounds: int, override: dict[str, dict[str, float]] | None = None, *,
            drift: bool = False) -> framework.Result:
    """Every metric the benchmark samples, every path at 100 unless ``override`` says otherwise.

    With ``drift`` round k is scaled by 2**k (exact in binary floating point): the machine doubles its
    speed every round, which pairing must cancel.
    """
    res = framework.Result("dataplane", "t", quick=False)
    metrics = [f"tcp_{s}stream_offload_{o}" for o in dataplane.MODES for s in dataplane.STREAMS]
    metrics += [f"{lat}_offload_{o}" for o in ("on", "off") for lat in ("ping_rtt_p50", "udp_rtt_p50")]
    for k in range(rounds):
        scale = 2.0 ** k if drift else 1.0
        for metric in metrics:
            for path in PATHS:
                value = (override or {}).get(metric, {}).get(path, 100.0)
                res.sample(metric, path, value * scale, unit="us" if "rtt" in metric else "Gbit/s")
    return res


def _by_name(res: framework.Result) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in res.ratios}


def test_the_targets_are_issue_8s_with_issue_18s_four_streams() -> None:
    res = _result(10)
    dataplane.declare(res)
    assert {t["name"]: t["threshold"] for t in res.targets} == {
        "routed/direct tcp1 offload on": 0.97, "routed/vxlan tcp1 offload on": 1.10,
        "routed/direct tcp4 offload on": 0.90, "routed/vxlan tcp4 offload on": 1.10,
        "routed/direct tcp1 offload off": 0.97, "routed/vxlan tcp1 offload off": 1.35,
        "routed/direct tcp4 offload off": 0.97, "routed/vxlan tcp4 offload off": 1.35,
    }
    assert all(t["op"] == ">=" for t in res.targets)
    r = _by_name(res)
    # no target on policy throughput (conntrack hides policy), latency, or the nicoff definition
    for name in ("routed+pol/routed tcp1 offload on", "routed/routed-bare tcp4 offload off",
                 "ping_rtt_p50 routed/direct offload off",
                 "udp_rtt_p50 vxlan/routed offload on", "routed/direct tcp4 offload nicoff"):
        assert r[name]["target"] is None and r[name]["verdict"] is None, name


TARGET_CASES = [(o, s, name, thr) for (o, s), targets in dataplane.TARGETS.items() for name, thr in targets.items()]


@pytest.mark.parametrize(("offload", "streams", "ratio", "threshold"), TARGET_CASES)
def test_each_target_passes_at_its_threshold_and_fails_just_below(offload: str, streams: int, ratio: str,
                                                                  threshold: float) -> None:
    metric = f"tcp_{streams}stream_offload_{offload}"
    denominator = ratio.split("/")[1]
    name = f"{ratio} tcp{streams} offload {offload}"
    at = round(threshold * 1000)   # routed = threshold x the denominator, exactly
    for routed, verdict, value in ((at, stats.PASS, threshold), (at - 1, stats.FAIL, (at - 1) / 1000)):
        res = _result(10, {metric: {"routed": float(routed), denominator: 1000.0}}, drift=True)
        dataplane.declare(res)
        entry = _by_name(res)[name]
        assert entry["value"] == value and entry["rounds"] == 10, (name, routed)
        assert entry["spread"]["iqr"] == 0.0   # the drift cancels round by round
        assert entry["verdict"] == verdict and entry["pass"] is (verdict == stats.PASS)


def test_four_streams_with_offloads_on_are_held_to_0_90_not_0_97() -> None:
    res = _result(10, {"tcp_4stream_offload_on": {"routed": 93.0}, "tcp_4stream_offload_off": {"routed": 93.0}})
    dataplane.declare(res)
    r = _by_name(res)
    assert r["routed/direct tcp4 offload on"]["value"] == 0.93
    assert r["routed/direct tcp4 offload on"]["verdict"] == stats.PASS
    assert r["routed/direct tcp4 offload off"]["verdict"] == stats.FAIL  # offloads off keep issue 8's 0.97


def test_verdict_is_the_median_of_paired_rounds_with_its_spread() -> None:
    res = framework.Result("dataplane", "t", quick=False)
    paired = [0.82, 0.97, 0.90, 0.88, 0.95, 0.99, 0.91, 0.93, 0.96, 0.98]
    for k, ratio in enumerate(paired):
        direct = 10.0 * (k + 1)   # the machine speeds up round by round
        res.sample("tcp_1stream_offload_on", "direct", direct, unit="Gbit/s")
        res.sample("tcp_1stream_offload_on", "routed", direct * ratio, unit="Gbit/s")
        res.sample("tcp_1stream_offload_on", "vxlan", direct * ratio / 1.2, unit="Gbit/s")
    dataplane.declare(res, with_policy=False)
    r = _by_name(res)
    entry = r["routed/direct tcp1 offload on"]
    assert entry["value"] == pytest.approx(0.94)  # median of the ten paired ratios: (0.93 + 0.95) / 2
    assert entry["paired"] == pytest.approx(paired)
    assert entry["spread"]["min"] == pytest.approx(0.82) and entry["spread"]["max"] == pytest.approx(0.99)
    assert entry["spread"]["q1"] == pytest.approx(0.9025) and entry["spread"]["q3"] == pytest.approx(0.9675)
    assert entry["verdict"] == stats.FAIL       # 0.94 < 0.97, though 6 of 10 rounds were above it
    assert r["routed/vxlan tcp1 offload on"]["value"] == pytest.approx(1.2)
    assert r["routed/vxlan tcp1 offload on"]["verdict"] == stats.PASS
    assert not any(name.startswith("routed+pol") for name in r)  # without ipset the policy pair is not there


def test_fewer_than_ten_rounds_give_no_verdict() -> None:
    res = _result(9, {"tcp_1stream_offload_on": {"routed": 10.0}, "tcp_4stream_offload_on": {"routed": 200.0}})
    dataplane.declare(res)
    r = _by_name(res)
    assert r["routed/direct tcp1 offload on"]["value"] == 0.1
    assert r["routed/direct tcp4 offload on"]["value"] == 2.0
    assert {t["verdict"] for t in res.targets} == {stats.INSUFFICIENT}
    assert all(t["rounds"] == 9 and t["pass"] is None for t in res.targets)
    doc = res.to_json(command="l3net bench dataplane", machine={"kernel": "k", "cores": 2, "cpu_model": "m"},
                      started=0.0, duration=1.0)
    assert doc["passed"] is None


def test_latency_ratios_are_lower_is_better_and_unpaired_sides_give_no_rounds() -> None:
    res = _result(10, {"ping_rtt_p50_offload_on": {"routed": 48.0, "direct": 24.0, "vxlan": 72.0}})
    dataplane.declare(res)
    r = _by_name(res)
    assert r["ping_rtt_p50 routed/direct offload on"]["value"] == 2.0
    assert r["ping_rtt_p50 vxlan/routed offload on"]["value"] == 1.5
    # nicoff runs only 3 rounds: its ratios are reported, with their rounds, and never a verdict
    short = framework.Result("dataplane", "t", quick=False)
    for _k in range(3):
        short.sample("tcp_1stream_offload_nicoff", "direct", 3.0, unit="Gbit/s")
        short.sample("tcp_1stream_offload_nicoff", "routed", 1.5, unit="Gbit/s")
    short.sample("tcp_1stream_offload_on", "direct", 4.0, unit="Gbit/s")   # one side only once
    short.sample("tcp_1stream_offload_on", "routed", 3.0, unit="Gbit/s")
    short.sample("tcp_1stream_offload_on", "routed", 5.0, unit="Gbit/s")
    dataplane.declare(short, with_policy=False)
    rs = _by_name(short)
    nicoff = rs["routed/direct tcp1 offload nicoff"]
    assert nicoff["value"] == 0.5 and nicoff["rounds"] == 3 and nicoff["verdict"] is None
    unpaired = rs["routed/direct tcp1 offload on"]
    assert unpaired["value"] == 1.0 and unpaired["rounds"] == 0 and unpaired["verdict"] == stats.INSUFFICIENT
    assert rs["routed/vxlan tcp1 offload on"]["verdict"] == stats.NOT_MEASURED  # no vxlan samples at all


def test_felix_rule_walk_is_routed_over_routed_bare_in_both_offload_modes() -> None:
    res = _result(10, {"tcp_1stream_offload_off": {"routed": 80.0}, "tcp_4stream_offload_on": {"routed": 95.0}},
                  drift=True)
    dataplane.declare(res)
    r = _by_name(res)
    assert r["routed/routed-bare tcp1 offload off"]["value"] == 0.8
    assert r["routed/routed-bare tcp4 offload on"]["value"] == 0.95
    assert r["routed/routed-bare tcp1 offload on"]["value"] == 1.0
    assert not any(name.startswith("routed/routed-bare") and "nicoff" in name for name in r)

"""bench.addstages and control_plane's stage table: the arithmetic on synthetic traces (no lab)."""

from __future__ import annotations

import jsonschema
import pytest

from bench import addstages, framework

pytestmark = pytest.mark.unit


def trace(start: float, durations: dict[str, float], tid: str = "c1") -> dict:
    stages, at = [], start
    for name, seconds in durations.items():
        at += seconds
        stages.append({"stage": name, "seconds": seconds, "at_s": at - start, "mono": at})
    return {"id": tid, "complete": True, "start_mono": start, "total_s": at - start, "stages": stages}


def test_stages_of_a_sample_add_up_to_the_whole_interval() -> None:
    t0 = 50.0
    tr = trace(50.03, {"cni_start": 0.01, "ipam": 0.02, "apply": 0.005, "bgp_announce": 0.001})
    seen = 50.03 + 0.036 + 0.040
    got = addstages.stage_ms(tr, t0, seen)
    assert list(got) == ["lab_exec", "cni_start", "ipam", "apply", "bgp_announce", "remote_install"]
    assert got["lab_exec"] == pytest.approx(30.0) and got["remote_install"] == pytest.approx(40.0)
    assert sum(got.values()) == pytest.approx((seen - t0) * 1000)


def test_a_new_block_announced_from_its_claim_takes_the_block_branch_as_the_path() -> None:
    t0 = 10.0
    tr = trace(10.02, {"cni_start": 0.001, "ipam": 0.03, "wire": 0.03, "endpoint_write": 0.01,
                       "watch_delivery": 0.002, "coalesce": 0.04, "calculation": 0.001, "apply": 0.002,
                       "bgp_announce": 0.001})
    # the affinity arrived 20 ms after the agent began, and its apply + announce came 30 ms later
    tr["block"] = [{"stage": n, "mono": 10.021 + dt, "at_s": 0.001 + dt}
                   for n, dt in (("watch_delivery", 0.02), ("coalesce", 0.04), ("calculation", 0.045),
                                 ("apply", 0.049), ("bgp_announce", 0.05))]
    seen = 10.021 + 0.05 + 0.012
    got = addstages.stage_ms(tr, t0, seen)
    assert list(got) == ["lab_exec", "cni_start", "block_claim", "block_coalesce", "block_calculation",
                         "block_apply", "block_announce", "remote_install"]
    assert got["block_claim"] == pytest.approx(20.0) and got["block_coalesce"] == pytest.approx(20.0)
    assert got["remote_install"] == pytest.approx(12.0)
    assert sum(got.values()) == pytest.approx((seen - t0) * 1000)
    assert addstages.endpoint_ms(tr)["coalesce"] == pytest.approx(40.0)


def test_find_trace_takes_only_a_finished_complete_trace_of_that_id() -> None:
    doc = {"finished": [trace(1.0, {"ipam": 0.1}, "a"), {**trace(1.0, {}, "b"), "complete": False}],
           "open": [trace(1.0, {}, "c")]}
    assert addstages.find_trace(doc, "a")["id"] == "a"
    assert addstages.find_trace(doc, "b") is None and addstages.find_trace(doc, "c") is None
    assert addstages.find_trace({}, "a") is None


def test_stage_table_percentiles_and_shares() -> None:
    samples = [{"ipam": float(i), "apply": 10.0} for i in range(1, 101)]
    rows = {r["stage"]: r for r in addstages.stage_table(samples)}
    assert list(rows) == ["ipam", "apply"]
    assert rows["ipam"]["n"] == 100 and rows["ipam"]["p50_ms"] == pytest.approx(50.5)
    assert rows["ipam"]["p99_ms"] == pytest.approx(99.01)
    assert rows["apply"]["p50_ms"] == rows["apply"]["p99_ms"] == 10.0
    assert rows["ipam"]["share"] + rows["apply"]["share"] == pytest.approx(1.0, abs=1e-3)


def test_control_plane_stage_samples_reach_the_json_and_the_printed_table() -> None:
    res = framework.Result("control_plane", "t", quick=True)
    res.sample("add_to_route_ms", "l3net-rr", 100.0, unit="ms", better="lower")
    sample = {"round": 0, "prefix": "10.244.0.0/26", "container_id": "c1", "add_to_route_ms": 100.0,
              "stages_ms": {"lab_exec": 30.0, "ipam": 25.0, "remote_install": 45.0},
              "endpoint_stages_ms": {"cni_start": 1.0, "ipam": 25.0, "apply": 2.0}}
    addstages.declare_stages(res, {"l3net-rr": [sample], "bird-rr": []})
    doc = res.to_json(command="l3net bench control_plane", machine={"kernel": "k", "cores": 2, "cpu_model": "m"},
                      started=0.0, duration=1.0)
    jsonschema.validate(doc, framework.RESULT_SCHEMA)
    assert doc["stage_samples"]["l3net-rr"] == [sample]
    text = framework.format_table(doc)
    assert "ADD -> remote route, stage by stage" in text and "ADD -> the pod's endpoint" in text
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("l3net-rr") and " ipam " in ln]
    assert lines == [["l3net-rr", "ipam", "1", "25.0", "25.0", "25.0", "%"],
                     ["l3net-rr", "ipam", "1", "25.0", "25.0", "89.3", "%"]]


def test_no_stage_samples_no_table() -> None:
    res = framework.Result("control_plane", "t", quick=True)
    addstages.declare_stages(res, {"l3net-rr": [], "bird-rr": []})
    assert res.tables == []


def test_the_add_call_is_split_through_the_policy_branch_and_adds_up() -> None:
    t0 = 20.0
    tr = trace(20.01, {"cni_start": 0.001, "ipam": 0.01, "wire": 0.02, "endpoint_write": 0.008,
                       "watch_delivery": 0.001, "coalesce": 0.0005, "calculation": 0.002, "apply": 0.003,
                       "bgp_announce": 0.001})
    delivered = 20.01 + 0.04
    tr["policy"] = [{"stage": n, "seconds": dt, "mono": at, "at_s": at - 20.01}
                    for n, dt, at in (("coalesce", 0.001, delivered + 0.001), ("route_wait", 0.006, delivered + 0.007),
                                      ("calculation", 0.004, delivered + 0.011), ("apply", 0.003, delivered + 0.014))]
    tr["policy_complete"] = True
    returned = delivered + 0.014 + 0.009
    got = addstages.policy_ms(tr, t0, returned)
    assert list(got) == ["lab_exec", "cni_start", "ipam", "wire", "endpoint_write", "watch_delivery",
                         "policy_coalesce", "policy_route_wait", "policy_calculation", "policy_apply", "release"]
    assert got["lab_exec"] == pytest.approx(10.0) and got["policy_route_wait"] == pytest.approx(6.0)
    assert got["release"] == pytest.approx(9.0)
    assert sum(got.values()) == pytest.approx((returned - t0) * 1000)
    assert addstages.policy_ms({**tr, "policy_complete": False}, t0, returned) is None
    no_delivery = {**tr, "stages": [s for s in tr["stages"] if s["stage"] == "cni_start"]}
    assert addstages.policy_ms(no_delivery, t0, returned) is None


def test_samples_without_a_policy_branch_leave_its_table_out() -> None:
    res = framework.Result("control_plane", "t", quick=True)
    bare = {"stages_ms": {"lab_exec": 30.0}, "endpoint_stages_ms": {"ipam": 25.0}, "policy_stages_ms": {}}
    addstages.declare_stages(res, {"l3net-rr": [bare]})
    assert [t["title"].split(",")[0] for t in res.tables] == ["ADD -> remote route", "ADD -> the pod's endpoint "
                                                              "applied and announced by the origin agent (ms; felix."
                                                              "addtrace stages)"]
    res = framework.Result("control_plane", "t", quick=True)
    addstages.declare_stages(res, {"l3net-rr": [bare, {**bare, "policy_stages_ms": {"release": 2.0}}]})
    (table,) = [t for t in res.tables if t["title"].startswith("ADD -> the pod policed")]
    assert table["rows"] == [["l3net-rr", "release", "1", "2.0", "2.0", "100.0 %"]]

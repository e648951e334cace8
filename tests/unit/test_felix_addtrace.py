"""felix.addtrace: the ADD trace bookkeeping, on a fake clock (no agent, no threads)."""

from __future__ import annotations

import pytest

from felix.addtrace import BLOCK, ENDPOINT, POLICY, POLICY_STAGES, STAGES, TraceBook
from l3net import metrics
from tests.fakes.clock import FakeClock

pytestmark = pytest.mark.unit

KEY = "/l3net/v1/workloadendpoints/ns/n1-k8s-pod-eth0"
CLAIMS = "/l3net/v1/ipam/affinities/n1/"


def book(clock: FakeClock, **kw: int) -> TraceBook:
    return TraceBook(clock=clock, wall=lambda: 1_000_000.0 + clock.now, observe=False, **kw)


def run_add(b: TraceBook, clock: FakeClock, tid: str = "c1", key: str = KEY, revision: int = 7) -> None:
    """One ADD through every stage, each taking a distinct, known time."""
    b.begin(tid, key, shim_started=clock.now - 0.04)
    for stage, dt in (("ipam", 0.02), ("wire", 0.03), ("endpoint_write", 0.01)):
        clock.step(dt)
        b.mark(tid, stage)
    clock.step(0.005)
    b.delivered(["/l3net/v1/other", key], revision)
    clock.step(0.05)
    ids = b.calculating(revision)
    assert ids == [(tid, ENDPOINT)]
    clock.step(0.002)
    b.mark_all(ids, "calculation")
    clock.step(0.004)
    b.mark_all(ids, "apply")
    clock.step(0.001)
    b.mark_all(ids, "bgp_announce")
    b.finish(ids)


def test_a_full_add_has_every_stage_in_order_with_its_own_duration() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    run_add(b, clock)
    snap = b.snapshot()
    assert snap["open"] == [] and len(snap["finished"]) == 1
    tr = snap["finished"][0]
    assert tr["complete"] and tr["id"] == "c1" and tr["key"] == KEY
    assert [s["stage"] for s in tr["stages"]] == list(STAGES)
    got = {s["stage"]: s["seconds"] for s in tr["stages"]}
    assert got == pytest.approx({"cni_start": 0.04, "ipam": 0.02, "wire": 0.03, "endpoint_write": 0.01,
                                 "watch_delivery": 0.005, "coalesce": 0.05, "calculation": 0.002,
                                 "apply": 0.004, "bgp_announce": 0.001}, abs=1e-6)
    assert tr["total_s"] == pytest.approx(sum(got.values()), abs=1e-5)
    ats = [s["at_s"] for s in tr["stages"]]
    assert ats == sorted(ats)
    # wall time of the origin: the shim's start, 40 ms before the agent began
    assert tr["start_wall"] == pytest.approx(1_000_000.0 + 100.0 - 0.04)


def test_delivery_before_the_writer_hears_from_etcd_dates_the_commit_by_the_delivery() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    clock.step(0.01)
    b.mark("c1", "ipam")
    clock.step(0.01)
    b.mark("c1", "wire")
    clock.step(0.01)
    b.delivered([KEY], 3)          # the watch is faster than the writer thread
    clock.step(0.02)
    b.mark("c1", "endpoint_write")  # etcd's answer arrives late: ignored, the commit was already seen
    ids = b.calculating(3)
    b.mark_all(ids, "calculation")
    b.mark_all(ids, "apply")
    b.finish(ids)
    stages = b.snapshot()["finished"][0]["stages"]
    secs = {s["stage"]: s["seconds"] for s in stages}
    assert secs["endpoint_write"] == pytest.approx(0.01) and secs["watch_delivery"] == 0
    assert all(s["seconds"] >= 0 for s in stages)
    assert "bgp_announce" not in secs  # no speaker marked it: the trace ends at apply


def test_a_calculation_of_an_older_revision_does_not_cover_a_later_delivery() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    b.delivered([KEY], 9)
    assert b.calculating(8) == []
    clock.step(0.05)
    assert b.calculating(9) == [("c1", ENDPOINT)]
    assert b.calculating(10) == []  # covered once


def test_a_failed_apply_requeues_and_the_retry_covers_the_trace() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    b.delivered([KEY], 2)
    ids = b.calculating(2)
    b.mark_all(ids, "calculation")
    b.requeue(ids)
    clock.step(0.3)  # the backoff
    assert b.calculating(2) == [("c1", ENDPOINT)]
    b.mark_all([("c1", ENDPOINT)], "apply")
    b.finish([("c1", ENDPOINT)])
    coalesce = {s["stage"]: s["seconds"] for s in b.snapshot()["finished"][0]["stages"]}["coalesce"]
    assert coalesce == pytest.approx(0.3)


def test_memory_is_bounded_for_open_and_finished_traces() -> None:
    clock = FakeClock(100.0)
    b = book(clock, keep=3, max_open=2)
    for i in range(5):
        b.begin(f"failed-{i}", f"{KEY}-{i}")  # never delivered: an ADD that failed without abandon()
    snap = b.snapshot()
    assert [t["id"] for t in snap["open"]] == ["failed-3", "failed-4"] and snap["dropped"] == 3
    b.abandon("failed-3")
    b.abandon("failed-4")
    for i in range(6):
        run_add(b, clock, tid=f"c{i}", key=f"{KEY}-ok{i}", revision=10 + i)
    snap = b.snapshot()
    assert [t["id"] for t in snap["finished"]] == ["c3", "c4", "c5"] and snap["open"] == []
    # and nothing left to match a later update of those keys
    b.delivered([f"{KEY}-ok5"], 99)
    assert b.calculating(99) == []


def test_a_stale_or_bogus_shim_stamp_is_not_the_origin() -> None:
    clock = FakeClock(1000.0)
    b = book(clock)
    b.begin("old", KEY, shim_started=1000.0 - 500)  # not this request's shim
    b.begin("future", f"{KEY}-2", shim_started=1000.0 + 5)
    for t in b.snapshot()["open"]:
        assert t["start_mono"] == 1000.0 and t["stages"][0] == {"stage": "cni_start", "seconds": 0,
                                                                 "at_s": 0, "mono": 1000.0}


def test_a_reused_container_id_starts_over_and_unknown_ids_are_ignored() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    clock.step(1.0)
    b.begin("c1", KEY)
    b.mark("nobody", "ipam")
    b.delivered(["/not/traced"], 1)
    snap = b.snapshot()
    assert len(snap["open"]) == 1 and snap["open"][0]["start_mono"] == 101.0


def test_finished_traces_feed_the_stage_histogram() -> None:
    def count(stage: str) -> float:
        return metrics.REGISTRY.get_sample_value("l3net_add_stage_seconds_count", {"stage": stage}) or 0.0

    before = {s: count(s) for s in STAGES}
    clock = FakeClock(100.0)
    b = TraceBook(clock=clock)
    run_add(b, clock)
    assert all(count(s) == before[s] + 1 for s in STAGES)


def test_a_block_claimed_by_the_add_is_followed_on_its_own_branch() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY, claims=CLAIMS)
    b.begin("c2", f"{KEY}-2")  # no claims prefix: no block branch
    clock.step(0.01)
    b.delivered(["/l3net/v1/ipam/affinities/n2/10-0-0-0-26"], 4)  # another node's block: not ours
    b.delivered([CLAIMS + "10-244-0-0-26"], 5)  # IPAM claimed a block (before the ipam stage ended)
    clock.step(0.005)
    b.mark("c1", "ipam")
    tokens = b.calculating(5)
    assert tokens == [("c1", BLOCK)]
    clock.step(0.002)
    b.mark_all(tokens, "calculation")
    b.mark_all(tokens, "apply")
    clock.step(0.001)
    b.mark_all(tokens, "bgp_announce")
    b.finish(tokens)  # the block branch does not end the trace
    (tr,) = [t for t in b.snapshot()["open"] if t["id"] == "c1"]
    assert [s["stage"] for s in tr["block"]] == ["watch_delivery", "coalesce", "calculation", "apply",
                                                 "bgp_announce"]
    assert [round(s["at_s"], 6) for s in tr["block"]] == [0.01, 0.015, 0.017, 0.017, 0.018]
    # a second affinity update (e.g. another ADD's block) does not move the branch
    b.delivered([CLAIMS + "10-244-0-64-26"], 6)
    assert b.calculating(6) == []
    # the endpoint branch still ends the trace (c2: no claims prefix, so no block branch)
    b.mark("c2", "endpoint_write")
    b.delivered([f"{KEY}-2"], 7)
    b.delivered([CLAIMS + "10-244-0-128-26"], 8)
    assert b.calculating(8) == [("c2", ENDPOINT)]


def test_the_policy_branch_runs_apart_and_may_end_after_the_trace() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    assert b.policy_calculating(50) == []  # nothing delivered yet: no policy apply covers the endpoint
    b.delivered([KEY], 7)
    assert b.policy_calculating(6) == []   # an apply of an older revision does not hold it
    clock.step(0.003)
    early = b.policy_calculating(7)        # the policy side starts (its coalesce ends)...
    assert early == [("c1", POLICY)]
    clock.step(0.010)                      # ...and gives the route apply in flight its head start
    assert b.policy_calculating(8) == []   # covered once
    b.mark_all(early, "route_wait")
    # the route side ends the trace first
    route = b.calculating(7)
    b.mark_all(route, "calculation")
    b.mark_all(route, "apply")
    b.finish(route)
    snap = b.snapshot()
    assert snap["open"] == [] and snap["finished"][0]["policy_complete"] is False
    clock.step(0.004)
    b.mark_all(early, "calculation")
    clock.step(0.002)
    b.mark_all(early, "apply")
    b.finish(early)
    tr = b.snapshot()["finished"][0]
    assert tr["policy_complete"] is True and tr["complete"] is True
    got = {s["stage"]: s["seconds"] for s in tr["policy"]}
    assert list(got) == list(POLICY_STAGES)
    assert got == pytest.approx({"coalesce": 0.003, "route_wait": 0.010, "calculation": 0.004, "apply": 0.002},
                                abs=1e-6)
    # the route side's marks are its own
    assert {s["stage"] for s in tr["stages"]} == {"cni_start", "ipam", "wire", "endpoint_write", "watch_delivery",
                                                  "coalesce", "calculation", "apply"}
    b.mark_all(early, "bgp_announce")  # a late mark for a finished branch changes nothing
    assert [s["stage"] for s in b.snapshot()["finished"][0]["policy"]] == list(POLICY_STAGES)


def test_a_failed_policy_apply_requeues_its_branch_only() -> None:
    clock = FakeClock(100.0)
    b = book(clock)
    b.begin("c1", KEY)
    b.delivered([KEY], 3)
    pol = b.policy_calculating(3)
    b.mark_all(pol, "route_wait")
    b.mark_all(pol, "calculation")
    b.requeue(pol)
    clock.step(0.2)  # the policy side's backoff
    assert b.policy_calculating(3) == [("c1", POLICY)]
    assert b.calculating(3) == [("c1", ENDPOINT)]  # the route side's branch was never touched
    b.mark_all(pol, "route_wait")
    b.mark_all(pol, "calculation")
    b.mark_all(pol, "apply")
    b.finish(pol)
    (tr,) = b.snapshot()["open"]
    assert tr["policy_complete"] and tr["policy"][0] == {"stage": "coalesce", "seconds": pytest.approx(0.2),
                                                         "at_s": pytest.approx(0.2), "mono": pytest.approx(100.2)}


def test_policy_branches_are_bounded_and_observed_from_the_endpoint_delivery() -> None:
    def count(stage: str) -> float:
        return metrics.REGISTRY.get_sample_value("l3net_add_stage_seconds_count", {"stage": stage}) or 0.0

    clock = FakeClock(100.0)
    b = TraceBook(clock=clock, max_open=2)
    before = {s: count(f"policy_{s}") for s in POLICY_STAGES}
    for i in range(4):  # finished on the route side, never on the policy side (a policy apply that fails on)
        run_add(b, clock, tid=f"c{i}", key=f"{KEY}-{i}", revision=10 + i)
    assert [t for t, _ in b.policy_calculating(99)] == ["c2", "c3"]  # the two newest only
    run_add(b, clock, tid="c9", key=f"{KEY}-9", revision=20)
    pol = b.policy_calculating(20)
    for stage in POLICY_STAGES[1:]:
        b.mark_all(pol, stage)
    b.finish(pol)
    assert all(count(f"policy_{s}") == before[s] + 1 for s in POLICY_STAGES)

"""The route driver against a stateful fake routing table: end states, not call sequences."""

from __future__ import annotations

import pytest

from felix.desired import RouteSpec
from felix.drivers.routes import RTN_BLACKHOLE, SCOPE_LINK, KernelRoute, RouteDriver
from l3net.constants import ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from tests.drivers.felix_fakes import FakeNetlink

pytestmark = pytest.mark.drivers

M = WORKLOAD_ROUTE_METRIC
DESIRED = [
    RouteSpec("10.65.0.2/32", "workload", ifname="cali1"),
    RouteSpec("10.65.0.3/32", "workload", ifname="cali2"),
    RouteSpec("10.65.0.0/26", "blackhole"),
    RouteSpec("10.65.1.0/26", "learned", next_hops=("10.0.0.2",)),
    RouteSpec("10.65.2.0/26", "learned", next_hops=("10.0.0.3", "10.0.0.4")),
]
FOREIGN = [
    KernelRoute("0.0.0.0/0", proto=3, metric=0, gateways=("10.0.0.254",)),
    KernelRoute("10.0.0.0/24", proto=2, metric=0, scope=SCOPE_LINK, oif=1),
    KernelRoute("10.65.9.0/26", proto=12, metric=M, gateways=("10.0.0.9",)),  # BIRD's
]


def expected_ours() -> dict[tuple[str, int], KernelRoute]:
    return {
        ("10.65.0.2/32", M): KernelRoute("10.65.0.2/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=11),
        ("10.65.0.3/32", M): KernelRoute("10.65.0.3/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=12),
        ("10.65.0.0/26", M): KernelRoute("10.65.0.0/26", ROUTE_PROTO, M, type=RTN_BLACKHOLE),
        ("10.65.1.0/26", M): KernelRoute("10.65.1.0/26", ROUTE_PROTO, M, gateways=("10.0.0.2",)),
        ("10.65.2.0/26", M): KernelRoute("10.65.2.0/26", ROUTE_PROTO, M, gateways=("10.0.0.3", "10.0.0.4")),
    }


def fresh() -> FakeNetlink:
    nl = FakeNetlink(links={"lo": 1, "eth0": 2, "cali1": 11, "cali2": 12})
    for r in FOREIGN:
        nl.add(r)
    return nl


def foreign_untouched(nl: FakeNetlink) -> bool:
    return all(nl.table.get(r.slot) == r for r in FOREIGN)


def test_converges_from_empty_and_second_apply_writes_nothing() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    res = drv.apply(DESIRED)
    assert res.writes == 5
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert foreign_untouched(nl)
    before = nl.writes
    assert drv.apply(DESIRED).writes == 0
    assert nl.writes == before


def test_converges_from_a_messy_state() -> None:
    nl = fresh()
    # Left over by a previous agent: one right, one wrong, one stale, one at another metric.
    nl.add(KernelRoute("10.65.0.2/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=11))
    nl.add(KernelRoute("10.65.0.3/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=11))
    nl.add(KernelRoute("10.65.3.7/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=12))
    nl.add(KernelRoute("10.65.0.0/26", ROUTE_PROTO, 5, gateways=("10.0.0.8",)))
    nl.add(KernelRoute("10.65.2.0/26", ROUTE_PROTO, M, gateways=("10.0.0.3",)))
    drv = RouteDriver(nl)
    drv.resync()
    res = drv.apply(DESIRED)
    # the correct 10.65.0.2 route is adopted, not rewritten
    assert res.writes == 6
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert foreign_untouched(nl)
    assert drv.apply(DESIRED).writes == 0


def test_adopts_existing_routes_without_rewriting_them() -> None:
    nl = fresh()
    for r in expected_ours().values():
        nl.add(r)
    drv = RouteDriver(nl)
    drv.resync()
    assert drv.apply(DESIRED).writes == 0
    assert nl.writes == 0


def test_foreign_route_in_our_slot_is_a_conflict_not_a_write() -> None:
    nl = fresh()
    squatter = KernelRoute("10.65.0.0/26", proto=4, metric=M, gateways=("10.0.0.7",))
    nl.add(squatter)
    drv = RouteDriver(nl)
    drv.resync()
    res = drv.apply(DESIRED)
    assert res.conflicts == ["10.65.0.0/26"]
    assert nl.table[squatter.slot] == squatter
    assert foreign_untouched(nl)


def test_heals_after_clobbering_on_refresh() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    # Someone deletes one of ours and rewrites another behind the driver's back.
    del nl.table[("10.65.0.2/32", M)]
    nl.table[("10.65.1.0/26", M)] = KernelRoute("10.65.1.0/26", ROUTE_PROTO, M, gateways=("10.0.0.99",))
    assert drv.apply(DESIRED).writes == 0  # cached view: no re-read, no writes
    drv.invalidate("periodic refresh")
    assert drv.apply(DESIRED).writes == 2
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()


def test_removing_desired_removes_exactly_ours() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    drv.apply(DESIRED[:1])
    assert set(nl.by_proto(ROUTE_PROTO)) == {("10.65.0.2/32", M)}
    drv.apply([])
    assert nl.by_proto(ROUTE_PROTO) == {}
    assert foreign_untouched(nl) and len(nl.table) == len(FOREIGN)


def test_stale_learned_routes_kept_during_startup_grace() -> None:
    nl = fresh()
    learned = KernelRoute("10.65.7.0/26", ROUTE_PROTO, M, gateways=("10.0.0.5",))
    stale_wl = KernelRoute("10.65.0.9/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=12)
    nl.add(learned)
    nl.add(stale_wl)
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED, keep_stale_learned=True)
    assert nl.table[learned.slot] == learned
    assert stale_wl.slot not in nl.table
    drv.apply(DESIRED, keep_stale_learned=False)
    assert learned.slot not in nl.table


def test_workload_route_waits_for_its_interface() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    spec = [RouteSpec("10.65.0.5/32", "workload", ifname="cali5")]
    res = drv.apply(spec)
    assert res.missing_links == ["cali5"] and res.writes == 0
    nl.links["cali5"] = 15
    assert drv.apply(spec).writes == 1
    assert nl.table[("10.65.0.5/32", M)].oif == 15


def test_failed_write_propagates_and_next_apply_recovers() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    nl.fail_writes = 1
    with pytest.raises(OSError):
        drv.apply(DESIRED)
    drv.apply(DESIRED)
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert drv.apply(DESIRED).writes == 0


def test_batches_large_change_sets() -> None:
    nl = fresh()
    drv = RouteDriver(nl, batch_size=7)
    drv.resync()
    many = [RouteSpec(f"10.70.{i // 250}.{i % 250}/32", "learned", next_hops=("10.0.0.2",)) for i in range(50)]
    assert drv.apply(many).writes == 50
    assert len(nl.by_proto(ROUTE_PROTO)) == 50


def test_our_route_at_another_metric_is_adopted_not_churned() -> None:
    nl = fresh()
    cni = KernelRoute("10.65.0.2/32", ROUTE_PROTO, 0, scope=SCOPE_LINK, oif=11)  # the CNI plugin's own
    wrong = KernelRoute("10.65.0.3/32", ROUTE_PROTO, 0, scope=SCOPE_LINK, oif=99)
    nl.add(cni)
    nl.add(wrong)
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    assert nl.table[cni.slot] == cni and ("10.65.0.2/32", M) not in nl.table
    assert wrong.slot not in nl.table and nl.table[("10.65.0.3/32", M)].oif == 12
    assert drv.apply(DESIRED).writes == 0

"""The route driver against a stateful fake routing table: end states, not call sequences."""

from __future__ import annotations

import errno
import random

import pytest

from felix.desired import RouteSpec
from felix.drivers.routes import (
    DELETE,
    REFUSAL_ERRNOS,
    REPLACE,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTN_BLACKHOLE,
    SCOPE_LINK,
    KernelRoute,
    RouteDriver,
    RouteWriteError,
    encode_route,
    parse_errors,
)
from l3net import metrics
from l3net.constants import ROUTE_PROTO, WORKLOAD_ROUTE_METRIC
from tests.fakes.netlink import FakeNetlink

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


def test_an_ipv6_pod_route_is_not_rewritten_by_every_resync() -> None:
    """The kernel keeps IPv6 routes at scope universe; a driver that wants link rewrote them each resync."""
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    desired = [RouteSpec("fd00:65::2/128", "workload", ifname="cali1")]
    assert drv.apply(desired).writes == 1
    for _ in range(3):
        drv.resync()
        assert drv.apply(desired).writes == 0


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


def test_foreign_route_planted_after_the_resync_is_not_overwritten() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    squatter = KernelRoute("10.65.0.0/26", proto=4, metric=M, gateways=("10.0.0.7",))
    nl.add(squatter)  # after the resync: the driver's cache does not know the slot is taken
    dumps = nl.dumps
    res = drv.apply(DESIRED)
    assert res.conflicts == ["10.65.0.0/26"] and nl.table[squatter.slot] == squatter
    assert nl.dumps == dumps + 1  # the taken slot was re-read once
    assert drv.apply(DESIRED).conflicts == ["10.65.0.0/26"] and nl.dumps == dumps + 1  # known now: no write
    # a route of ours in a slot the cache did not know (the CNI plugin's) is adopted and corrected, not a conflict
    cni = KernelRoute("10.65.7.0/26", ROUTE_PROTO, M, gateways=("10.0.0.99",))
    nl.add(cni)
    want = [*DESIRED, RouteSpec(dst="10.65.7.0/26", kind="learned", next_hops=("10.0.0.2",))]
    res = drv.apply(want)
    assert res.conflicts == ["10.65.0.0/26"] and nl.table[cni.slot].gateways == ("10.0.0.2",)


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


# -- batching and per-route failures ------------------------------------------------


def test_one_failed_route_does_not_block_the_others() -> None:
    nl = fresh()
    nl.fail_dsts = {"10.65.1.0/26"}  # a transient error (EIO): the apply fails, the loop retries
    drv = RouteDriver(nl, batch_size=2)
    drv.resync()
    with pytest.raises(RouteWriteError) as info:
        drv.apply(DESIRED)
    err = info.value
    assert isinstance(err, OSError)
    assert [(op, r.dst) for op, r, _ in err.failures] == [("create", "10.65.1.0/26")]
    assert "10.65.1.0/26" in str(err)
    want = expected_ours()
    del want[("10.65.1.0/26", M)]
    assert nl.by_proto(ROUTE_PROTO) == want  # every other route went in
    dumps = nl.dumps
    nl.fail_dsts = set()
    assert drv.apply(DESIRED).writes == 1  # the cache was marked stale: re-read, then only the missing one
    assert nl.dumps == dumps + 1
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert drv.apply(DESIRED).writes == 0


def test_failed_delete_is_reported_and_retried() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    nl.fail_dsts = {"10.65.0.3/32"}
    with pytest.raises(RouteWriteError) as info:
        drv.apply(DESIRED[:1])
    assert [(op, r.dst) for op, r, _ in info.value.failures] == [("delete", "10.65.0.3/32")]
    assert set(nl.by_proto(ROUTE_PROTO)) == {("10.65.0.2/32", M), ("10.65.0.3/32", M)}
    nl.fail_dsts = set()
    drv.apply(DESIRED[:1])
    assert set(nl.by_proto(ROUTE_PROTO)) == {("10.65.0.2/32", M)}
    assert foreign_untouched(nl)


def test_batches_have_the_configured_size_and_replaces_come_before_deletes() -> None:
    nl = fresh()
    drv = RouteDriver(nl, batch_size=7)
    drv.resync()
    first = [RouteSpec(f"10.70.{i // 250}.{i % 250}/32", "learned", next_hops=("10.0.0.2",)) for i in range(20)]
    drv.apply(first)
    assert nl.batches == [7, 7, 6]
    # Move every route to another next hop set while removing half: replaces first, then deletes.
    order: list[tuple[str, str]] = []
    real_batch = nl.write_batch

    def spy(ops):  # type: ignore[no-untyped-def]
        order.extend((op, r.dst) for op, r in ops)
        return real_batch(ops)

    nl.write_batch = spy  # type: ignore[method-assign]
    second = [RouteSpec(s.dst, "learned", next_hops=("10.0.0.3", "10.0.0.2")) for s in first[:10]]
    res = drv.apply(second)
    assert res.writes == 20
    kinds = [op for op, _ in order]
    assert kinds == ["replace"] * 10 + ["delete"] * 10
    assert {r.gateways for r in nl.by_proto(ROUTE_PROTO).values()} == {("10.0.0.2", "10.0.0.3")}
    assert len(nl.by_proto(ROUTE_PROTO)) == 10


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RouteDriver(fresh(), batch_size=0)


def test_many_changes_against_many_routes_converge() -> None:
    # The twin lookup is indexed by destination; a quadratic scan would make this crawl.
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    specs = [RouteSpec(f"10.{80 + i // 60000}.{i // 250 % 240}.{i % 250}/32", "learned", next_hops=("10.0.0.2",))
             for i in range(5000)]
    assert drv.apply(specs).writes == 5000
    moved = [RouteSpec(s.dst, "learned", next_hops=("10.0.0.5",)) for s in specs]
    assert drv.apply(moved).writes == 5000
    assert {r.gateways for r in nl.by_proto(ROUTE_PROTO).values()} == {("10.0.0.5",)}
    assert drv.apply(moved).writes == 0


# -- the wire format, checked against pyroute2's independent encoder -----------------


def _pyroute2_msg(kind: int, flags: int, seq: int, route: KernelRoute, attrs: list) -> bytes:  # type: ignore[type-arg]
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    m = rtmsg()
    m["header"]["type"] = kind
    m["header"]["flags"] = flags
    m["header"]["sequence_number"] = seq
    addr, _, plen = route.dst.partition("/")
    m["family"] = 10 if ":" in addr else 2
    m["dst_len"] = int(plen)
    m["table"] = route.table
    m["proto"] = route.proto
    m["scope"] = route.scope
    m["type"] = route.type
    m["attrs"] = [("RTA_DST", addr), ("RTA_PRIORITY", route.metric), ("RTA_TABLE", route.table), *attrs]
    m.encode()
    return bytes(m.data)


@pytest.mark.parametrize("route,extra", [
    (KernelRoute("10.65.1.0/26", ROUTE_PROTO, M, gateways=("10.0.0.2",)), [("RTA_GATEWAY", "10.0.0.2")]),
    (KernelRoute("10.65.2.0/26", ROUTE_PROTO, M, gateways=("10.0.0.3", "10.0.0.4")),
     [("RTA_MULTIPATH", [{"attrs": [("RTA_GATEWAY", "10.0.0.3")]}, {"attrs": [("RTA_GATEWAY", "10.0.0.4")]}])]),
    (KernelRoute("10.65.0.2/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=11), [("RTA_OIF", 11)]),
    (KernelRoute("10.65.0.0/26", ROUTE_PROTO, M, type=RTN_BLACKHOLE), []),
    (KernelRoute("0.0.0.0/0", ROUTE_PROTO, 0, gateways=("10.0.0.1",)), [("RTA_GATEWAY", "10.0.0.1")]),
    (KernelRoute("fd10::/64", ROUTE_PROTO, M, gateways=("fd00::2",)), [("RTA_GATEWAY", "fd00::2")]),
    (KernelRoute("fd10:1::/64", ROUTE_PROTO, M, gateways=("fd00::2", "fd00::3")),
     [("RTA_MULTIPATH", [{"attrs": [("RTA_GATEWAY", "fd00::2")]}, {"attrs": [("RTA_GATEWAY", "fd00::3")]}])]),
])
def test_encoded_messages_match_pyroute2(route: KernelRoute, extra: list) -> None:  # type: ignore[type-arg]
    assert encode_route(REPLACE, route, 41) == _pyroute2_msg(RTM_NEWROUTE, 0x501, 41, route, extra)
    assert encode_route(REPLACE, route, 42, ack=True) == _pyroute2_msg(RTM_NEWROUTE, 0x505, 42, route, extra)
    # A delete names the slot, protocol, type and scope only: never a next hop or interface.
    assert encode_route(DELETE, route, 43) == _pyroute2_msg(RTM_DELROUTE, 0x1, 43, route, [])


@pytest.mark.parametrize("route,reason", [
    (KernelRoute("10.65.1.0/26", ROUTE_PROTO, M, gateways=("fd00::1",)), "family"),
    (KernelRoute("10.65.1.0/33", ROUTE_PROTO, M), "prefix length"),
    (KernelRoute("10.65.1/26", ROUTE_PROTO, M), "not an IP address"),
    (KernelRoute("10.65.1.0/26", ROUTE_PROTO, M, gateways=("10.0.0.300",)), "not an IP address"),
])
def test_unencodable_routes_are_refused_with_a_reason(route: KernelRoute, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_route(REPLACE, route, 1)


def test_parse_errors_maps_sequence_numbers_and_kernel_text() -> None:
    from pyroute2.netlink import nlmsgerr

    def err(seq: int, code: int, text: str | None) -> bytes:
        m = nlmsgerr()
        m["header"]["type"] = 2
        m["header"]["sequence_number"] = seq
        m["header"]["flags"] = 0x100 | (0x200 if text else 0)  # capped echo, ext-ack TLVs
        m["error"] = code
        m["attrs"] = [("NLMSGERR_ATTR_MSG", text)] if text else []
        m.encode()
        # nlmsgerr carries the echoed request header before the TLVs: splice one in.
        raw = bytes(m.data)
        echoed = bytes(16)
        body = raw[:20] + echoed + raw[20:]
        return len(body).to_bytes(4, "little") + body[4:]

    buf = err(5, -101, "Nexthop has invalid gateway") + err(6, 0, None) + err(9, -19, None)
    assert parse_errors(buf) == [(5, 101, "Nexthop has invalid gateway"), (6, 0, ""), (9, 19, "")]


def test_route_already_gone_is_not_a_failure() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    del nl.table[("10.65.0.3/32", M)]  # the kernel dropped it with its interface
    res = drv.apply([s for s in DESIRED if s.dst != "10.65.0.3/32"])
    assert res.writes == 0
    assert ("10.65.0.3/32", M) not in drv.programmed
    assert foreign_untouched(nl)


def test_desired_text_is_canonicalised_so_a_second_apply_writes_nothing() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    spec = [RouteSpec("fd10:0::/64", "learned", next_hops=("fd00:0::2", "fd00::3", "fd00::2"))]
    assert drv.apply(spec).writes == 1
    assert nl.by_proto(ROUTE_PROTO) == {("fd10::/64", M): KernelRoute("fd10::/64", ROUTE_PROTO, M,
                                                                       gateways=("fd00::2", "fd00::3"))}
    assert drv.apply(spec).writes == 0
    drv.invalidate("test")  # as the kernel dumps it
    assert drv.apply(spec).writes == 0


def test_malformed_desired_routes_are_skipped_and_named() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    bad = [RouteSpec("10.65.0.5/26", "blackhole"), RouteSpec("10.65.300.0/26", "blackhole"),
           RouteSpec("10.65.4.0/26", "learned", next_hops=()), RouteSpec("10.65.5.0/26", "learned",
                                                                         next_hops=("nope",))]
    res = drv.apply([*DESIRED, *bad])
    assert [entry.split(":")[0] for entry in res.invalid] == ["10.65.0.5/26", "10.65.300.0/26", "10.65.4.0/26",
                                                              "10.65.5.0/26"]
    assert "host bits" in res.invalid[0] and "next hop" in res.invalid[2]
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert foreign_untouched(nl)


# -- routes the kernel refuses: a per-route condition, not a failed apply ------------


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refused_route_is_skipped_logged_once_and_retried_only_when_asked(caplog) -> None:  # type: ignore[no-untyped-def]
    nl = fresh()
    nl.refuse = {"10.65.1.0/26": errno.ENETUNREACH}  # a BGP peer's next hop that is not on any link
    drv = RouteDriver(nl, batch_size=2)
    drv.resync()
    failures_before = sample("l3net_route_write_failures_total", errno="ENETUNREACH")
    with caplog.at_level("WARNING", logger="felix.drivers.routes"):
        res = drv.apply(DESIRED)  # no exception: every other route goes in
        want = expected_ours()
        del want[("10.65.1.0/26", M)]
        assert nl.by_proto(ROUTE_PROTO) == want and res.writes == 4
        assert [(r.op, r.route.dst, r.errno) for r in res.refused] == [("create", "10.65.1.0/26",
                                                                         errno.ENETUNREACH)]
        assert "via 10.0.0.2" in res.refused[0].describe() and "ENETUNREACH" in res.refused[0].describe()
        assert sample("l3net_routes_refused") == 1
        assert sample("l3net_route_write_failures_total", errno="ENETUNREACH") == failures_before + 1
        # Nothing changed: no write, no attempt, no new log line; still reported as refused.
        batches = len(nl.batches)
        again = drv.apply(DESIRED)
        assert again.writes == 0 and len(nl.batches) == batches
        assert [r.route.dst for r in again.refused] == ["10.65.1.0/26"]
    logged = [r.getMessage() for r in caplog.records if "refused by the kernel" in r.getMessage()]
    assert len(logged) == 1 and "10.65.1.0/26 via 10.0.0.2" in logged[0] and "ENETUNREACH" in logged[0]
    assert sample("l3net_route_write_failures_total", errno="ENETUNREACH") == failures_before + 1
    # A link changed: tried again (still refused, still one log line's worth of state).
    drv.retry_refused("links changed")
    assert drv.apply(DESIRED).refused and len(nl.batches) == batches + 1
    # The next hop became reachable; the next refresh retries and the route goes in.
    nl.refuse = {}
    assert drv.apply(DESIRED).writes == 0  # not retried without a reason
    drv.invalidate("periodic refresh")
    res = drv.apply(DESIRED)
    assert res.writes == 1 and res.refused == [] and drv.refused == []
    assert nl.by_proto(ROUTE_PROTO) == expected_ours()
    assert sample("l3net_routes_refused") == 0


def test_a_new_next_hop_for_a_refused_route_is_written_at_once() -> None:
    nl = fresh()
    nl.refuse = {"10.65.1.0/26": errno.ENETUNREACH}
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    nl.refuse = {}
    moved = [RouteSpec("10.65.1.0/26", "learned", next_hops=("10.0.0.6",)) if s.dst == "10.65.1.0/26" else s
             for s in DESIRED]
    res = drv.apply(moved)  # a different route: not the refused one, so no waiting
    assert res.writes == 1 and res.refused == []
    assert nl.table[("10.65.1.0/26", M)].gateways == ("10.0.0.6",)


def test_refusals_and_transient_failures_in_one_apply() -> None:
    nl = fresh()
    nl.refuse = {"10.65.1.0/26": errno.ENETUNREACH, "10.65.0.3/32": errno.ENODEV}
    nl.fail_dsts = {"10.65.2.0/26"}
    drv = RouteDriver(nl)
    drv.resync()
    with pytest.raises(RouteWriteError) as info:
        drv.apply(DESIRED)
    assert [r.dst for _, r, _ in info.value.failures] == ["10.65.2.0/26"]  # only the transient one
    assert info.value.result is not None
    assert [r.route.dst for r in info.value.result.refused] == ["10.65.0.3/32", "10.65.1.0/26"]
    assert set(nl.by_proto(ROUTE_PROTO)) == {("10.65.0.2/32", M), ("10.65.0.0/26", M)}
    nl.fail_dsts = set()
    res = drv.apply(DESIRED)  # the transient failure re-reads and retries everything
    assert res.writes == 1 and [r.route.dst for r in res.refused] == ["10.65.0.3/32", "10.65.1.0/26"]


@pytest.mark.parametrize("code", sorted(REFUSAL_ERRNOS))
def test_every_refusal_errno_is_a_per_route_condition(code: int) -> None:
    nl = fresh()
    nl.refuse = {"10.65.0.0/26": code}
    drv = RouteDriver(nl)
    drv.resync()
    res = drv.apply(DESIRED)
    assert [r.errno for r in res.refused] == [code] and res.writes == 4


def test_reread_interfaces_adopts_the_cni_route_without_a_full_dump() -> None:
    nl = fresh()
    drv = RouteDriver(nl)
    drv.resync()
    drv.apply(DESIRED)
    dumps = nl.dumps
    nl.links["cali3"] = 13
    cni = KernelRoute("10.65.0.4/32", ROUTE_PROTO, M, scope=SCOPE_LINK, oif=13)  # the plugin's, same slot
    old = KernelRoute("10.65.0.5/32", ROUTE_PROTO, 0, scope=SCOPE_LINK, oif=13)  # an older plugin's metric
    nl.add(cni)
    nl.add(old)
    drv.reread_interfaces([13])
    spec = [*DESIRED, RouteSpec("10.65.0.4/32", "workload", ifname="cali3"),
            RouteSpec("10.65.0.5/32", "workload", ifname="cali3")]
    writes = nl.writes
    assert drv.apply(spec).writes == 0 and nl.writes == writes
    assert nl.dumps == dumps and nl.oif_dumps == 1
    assert nl.table[cni.slot] == cni and nl.table[old.slot] == old and ("10.65.0.5/32", M) not in nl.table


def _random_spec(rng: random.Random, i: int) -> RouteSpec:
    kind = "bad" if i == 23 else rng.choice(["workload", "workload", "blackhole", "learned", "learned"])
    if kind == "workload":
        # by interface name (no index) only in one slot, so that the walk has clean stretches
        return RouteSpec(f"10.65.0.{i}/32", "workload", ifname=f"cali{i % 6}", ifindex=None if i == 22 else 20 + i % 6)
    if kind == "blackhole":
        return RouteSpec(f"10.65.{i}.0/26", "blackhole")
    if kind == "learned":
        hops = rng.sample(["10.0.0.2", "10.0.0.3"], 2)[:rng.choice([1, 2])]
        return RouteSpec(f"10.66.{i}.0/26", "learned", next_hops=tuple(hops))
    return RouteSpec(f"10.67.{i}.0/26", "learned", next_hops=())   # malformed: no next hop


def _disturb(rng: random.Random, event: float, nls: list[FakeNetlink], drivers: tuple[RouteDriver, ...],
             links: dict[str, int]) -> None:
    """One change outside the desired set, the same on both tables."""
    if event < 0.04:     # a link comes or goes (a workload route without an index needs it)
        name, gone = f"cali{rng.randrange(6)}", rng.random() < 0.3
        for nl in nls:
            nl.links.pop(name, None) if gone else nl.links.__setitem__(name, links[name])
    elif event < 0.07:   # the kernel refuses, or stops refusing, a destination
        dst = f"10.66.{rng.randrange(24)}.0/26"
        for nl in nls:
            nl.refuse.pop(dst, None) if dst in nl.refuse else nl.refuse.__setitem__(dst, errno.ENETUNREACH)
    elif event < 0.10:   # someone else's route in a slot we may want; the CNI's own /32 at another metric
        i = rng.randrange(24)
        route = rng.choice([KernelRoute(f"10.66.{i}.0/26", proto=12, metric=M, gateways=("10.0.0.9",)),
                            KernelRoute(f"10.65.0.{i}/32", ROUTE_PROTO, 0, scope=SCOPE_LINK, oif=20 + i % 6)])
        for nl in nls:
            nl.add(route)
        for d in drivers:
            d.reread_interfaces([route.oif]) if route.oif else d.invalidate("test")
    elif event < 0.14:   # the others' routes and the refusals go, the links come back, and we re-read
        for nl in nls:
            nl.table = {k: r for k, r in nl.table.items() if r.proto == ROUTE_PROTO and r.metric == M}
            nl.refuse.clear()
            nl.links.update(links)
        for d in drivers:
            d.invalidate("test")


def test_after_a_clean_apply_the_next_looks_only_at_what_changed_and_ends_where_a_full_diff_ends() -> None:
    """A random walk of desired sets (routes come, go and change next hops; workload routes with and without
    an interface index; malformed routes) and of the kernel (refusals; foreign routes, CNI routes and links
    that appear and vanish; invalidations): the driver that diffs only the change since its last clean apply
    leaves the same table and reports the same result as one that diffs every route on every apply."""
    rng = random.Random(14)
    links = {f"cali{k}": 20 + k for k in range(6)}
    nls = [FakeNetlink(links=dict(links)), FakeNetlink(links=dict(links))]
    warm, full = RouteDriver(nls[0]), RouteDriver(nls[1])
    desired: dict[int, RouteSpec] = {}
    fast = 0
    for step in range(2000):
        event = rng.random()
        if event < 0.7:
            i = rng.randrange(24)
            if rng.random() < 0.35:
                desired.pop(i, None)
            else:
                desired[i] = _random_spec(rng, i)
        else:
            _disturb(rng, event - 0.7, nls, (warm, full), links)
        full._clean = None   # the reference diffs every route
        want = frozenset(desired.values())
        fast += warm._delta(want, False, True) is not None
        results = [d.apply(want) for d in (warm, full)]
        assert nls[0].table == nls[1].table, f"step {step}"
        assert results[0] == results[1], f"step {step}"
    assert fast > 100, fast   # the walk did exercise the delta path

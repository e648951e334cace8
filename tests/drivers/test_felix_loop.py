"""The sync loop end to end against stateful fakes: datastore updates in, fake kernel state out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json

import pytest

from felix.addtrace import POLICY_STAGES, STAGES, TraceBook
from felix.dataplane import Dataplane
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.routes import RTN_BLACKHOLE, SCOPE_LINK, KernelRoute, RouteDriver
from felix.links import Link
from felix.loop import LoopConfig, SyncLoop, withdraws_any
from l3net import metrics
from l3net.constants import ROUTE_PROTO
from tests.drivers.loop_builders import BASE, KEYS, M, Upd, affinity, pooled_model, until, wep
from tests.fakes.clock import FakeClock
from tests.fakes.netlink import FakeNetlink
from tests.fakes.sysctls import FakeSysctls

pytestmark = pytest.mark.drivers

NO_GRACE = LoopConfig(startup_sweep_delay=0)


class Rig:
    def __init__(self, links: dict[str, int], *, config: LoopConfig = NO_GRACE) -> None:
        self.nl = FakeNetlink(links=links)
        self.sys = FakeSysctls()
        for name in links:
            self.sys.add_iface(name)
        self.clock = FakeClock()
        self.io = concurrent.futures.ThreadPoolExecutor(1)
        self.sync = SyncLoop(pooled_model(), "n1", Dataplane(RouteDriver(self.nl), InterfaceDriver(self.sys)),
                             config=config, io_executor=self.io, clock=self.clock, rand=lambda: 0.5)
        self.sync.on_links({n: Link(n, i, True) for n, i in links.items()})

    def step(self) -> None:
        """Advance the fake clock past the throttle and run one loop iteration."""
        self.clock.now += 1.0

        async def once() -> None:
            await self.sync._maybe_apply(asyncio.get_running_loop())
        asyncio.run(once())

    def ours(self) -> dict[tuple[str, int], KernelRoute]:
        return self.nl.by_proto(ROUTE_PROTO)


def test_nothing_written_before_in_sync_then_converges_then_zero_writes() -> None:
    rig = Rig({"eth0": 2, "cali1": 11, "cali2": 12})
    rig.nl.add(KernelRoute("0.0.0.0/0", 3, 0, gateways=("10.0.0.254",)))
    rig.sync.on_updates(BASE)
    rig.step()
    assert rig.nl.writes == 0 and rig.sys.writes == 0
    rig.sync.on_in_sync()
    rig.step()
    assert set(rig.ours()) == {("10.65.0.2/32", M), ("10.65.0.3/32", M), ("10.65.0.0/26", M)}
    assert rig.ours()[("10.65.0.0/26", M)].type == RTN_BLACKHOLE
    assert rig.sys.values["net/ipv4/conf/cali1/proxy_arp"] == "1"
    assert rig.sys.values["net/ipv4/neigh/cali2/proxy_delay"] == "0"
    assert rig.sys.values["net/ipv6/conf/cali1/accept_ra"] == "0"
    assert rig.sys.values["net/ipv6/conf/cali1/disable_ipv6"] == "1"
    assert rig.sys.values["net/ipv4/ip_forward"] == "1"
    assert rig.sys.values["net/ipv4/conf/eth0/proxy_arp"] == "0"  # not a workload interface
    writes = (rig.nl.writes, rig.sys.writes)
    rig.sync.on_updates([wep("a", "n1", "10.65.0.2/32", "cali1")])  # same value again: dirty, no change
    rig.step()
    rig.step()
    assert (rig.nl.writes, rig.sys.writes) == writes
    assert rig.sync.applies >= 2


def test_deletes_remove_exactly_what_was_added() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    foreign = KernelRoute("10.65.0.2/32", 3, 0, scope=SCOPE_LINK, oif=11)  # e.g. a CNI's own route
    rig.nl.add(foreign)
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    rig.sync.on_updates([Upd(u.key, None, 2) for u in BASE])
    rig.step()
    assert rig.ours() == {}
    assert rig.nl.table == {foreign.slot: foreign}


def test_outage_holds_the_dataplane_and_resync_applies_the_difference() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    before = dict(rig.ours())
    rig.sync.on_status("down")
    rig.sync.on_status("resync")
    rig.sync.on_updates([Upd(BASE[0].key, None, 5)])  # partial resync: must not be applied yet
    rig.step()
    assert rig.ours() == before
    assert not rig.sync.health.readiness()[0]
    rig.sync.on_in_sync()
    rig.step()
    assert ("10.65.0.2/32", M) not in rig.ours()
    assert ("10.65.0.3/32", M) in rig.ours()


def test_malformed_values_are_absent_and_disturb_nothing_else() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    bad = [Upd(BASE[1].key, b"{not json", 3),
           Upd(KEYS.resource("workloadendpoints", "x", "default"), json.dumps({"kind": "WorkloadEndpoint"}).encode()),
           Upd(KEYS.affinity("n1", "10.65.9.0/26"), b"[]")]
    rig.sync.on_updates(bad)
    rig.step()
    assert set(rig.ours()) == {("10.65.0.2/32", M), ("10.65.0.0/26", M)}
    assert set(rig.sync.model.invalid) == {u.key for u in bad}
    rig.sync.on_updates([wep("b", "n1", "10.65.0.3/32", "cali2")])  # fixed again
    rig.step()
    assert ("10.65.0.3/32", M) in rig.ours()
    assert BASE[1].key not in rig.sync.model.invalid


def test_route_added_when_its_interface_appears_later() -> None:
    rig = Rig({"cali1": 11})
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    assert ("10.65.0.3/32", M) not in rig.ours()
    rig.nl.links["cali2"] = 12
    rig.sys.add_iface("cali2")
    rig.sync.on_links({"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True)})
    rig.step()
    assert rig.ours()[("10.65.0.3/32", M)].oif == 12
    assert rig.sys.values["net/ipv4/conf/cali2/proxy_arp"] == "1"
    rig.nl.links.pop("cali2")
    rig.sys.remove_iface("cali2")
    rig.sync.on_links({"cali1": Link("cali1", 11, True)})
    rig.nl.table.pop(("10.65.0.3/32", M))  # the kernel drops routes of a deleted link
    rig.step()
    assert ("10.65.0.3/32", M) not in rig.ours()


def test_restart_adopts_existing_routes_with_zero_writes() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    table = dict(rig.nl.table)
    # A new agent on the same kernel (the old one was SIGKILLed).
    rig2 = Rig({"cali1": 11, "cali2": 12})
    rig2.nl.table = dict(table)
    rig2.sys = rig.sys
    rig2.sync.dataplane.interfaces.sysctls = rig.sys
    sys_writes = rig.sys.writes

    async def start() -> None:
        await asyncio.get_running_loop().run_in_executor(rig2.io, rig2.sync.dataplane.start)
    asyncio.run(start())
    rig2.sync.on_updates(BASE)
    rig2.sync.on_in_sync()
    rig2.step()
    assert rig2.nl.writes == 0 and rig.sys.writes == sys_writes
    assert rig2.nl.table == table


def test_learned_routes_ecmp_and_startup_grace() -> None:
    rig = Rig({"cali1": 11, "cali2": 12}, config=LoopConfig(startup_sweep_delay=30))
    stale = KernelRoute("10.65.9.0/26", ROUTE_PROTO, M, gateways=("10.0.0.9",))
    rig.nl.add(stale)
    rig.sync.dataplane.routes.resync()
    rig.sync.on_updates(BASE)
    rig.sync.on_learned_routes({"10.65.0.64/26": ["10.0.0.3", "10.0.0.2"], "10.65.0.0/26": ["10.0.0.7"]})
    rig.sync.on_in_sync()
    rig.step()
    assert rig.ours()[("10.65.0.64/26", M)].gateways == ("10.0.0.2", "10.0.0.3")
    assert rig.ours()[("10.65.0.0/26", M)].type == RTN_BLACKHOLE  # our block: learned copy ignored
    assert stale.slot in rig.nl.table  # grace: not swept yet
    rig.clock.now += 30
    rig.step()
    assert stale.slot not in rig.nl.table


def test_failed_applies_back_off_forever_and_never_end_the_loop() -> None:
    cfg = LoopConfig(startup_sweep_delay=0, retry_base=0.1, retry_max=1.0, max_failures=5, jitter=0.2)
    rig = Rig({"cali1": 11, "cali2": 12}, config=cfg)
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.nl.fail_writes = 1000
    delays = []
    for _ in range(4 * cfg.max_failures):  # far past max_failures: still retried, nothing raised
        rig.clock.now += 0.5  # each step then passes the capped backoff (1.1 s)
        rig.step()
        delays.append(rig.sync._retry_at - rig.clock.now)
    assert rig.sync.failures == 4 * cfg.max_failures
    # doubling, capped at 1.0 * (1 + 0.2 * 0.5)
    assert delays == pytest.approx([0.11, 0.22, 0.44, 0.88] + [1.1] * (len(delays) - 4))
    ready, reasons = rig.sync.health.readiness()
    assert not ready and "routes apply failed" in reasons["dataplane"]
    rig.nl.fail_writes = 0
    rig.clock.now += 0.5
    rig.step()
    assert rig.sync.failures == 0 and len(rig.ours()) == 3
    assert rig.sync.health.readiness() == (True, {})


def test_recovers_after_transient_failures() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.nl.fail_writes = 2
    for _ in range(4):
        rig.step()
    assert rig.sync.failures == 0
    assert len(rig.ours()) == 3
    assert rig.sync.health.readiness() == (True, {})


def test_run_coalesces_bursts_on_the_real_event_loop() -> None:
    nl = FakeNetlink(links={f"cali{i}": 100 + i for i in range(50)})
    sysctls = FakeSysctls()
    for name in nl.links:
        sysctls.add_iface(name)
    sync = SyncLoop(pooled_model("10.66.0.0/16"), "n1", Dataplane(RouteDriver(nl), InterfaceDriver(sysctls)),
                    config=LoopConfig(min_interval=0.05, startup_sweep_delay=0))
    sync.on_links({n: Link(n, i, True) for n, i in nl.links.items()})

    async def scenario() -> None:
        task = asyncio.create_task(sync.run())
        for i in range(50):
            sync.on_updates([wep(f"w{i}", "n1", f"10.66.0.{i}/32", f"cali{i}")])
        sync.on_in_sync()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(nl.by_proto(ROUTE_PROTO)) == 50:
                break
        sync.stop()
        await task

    asyncio.run(scenario())
    assert len(nl.by_proto(ROUTE_PROTO)) == 50
    assert sync.applies <= 3  # 50 updates coalesced, not 50 applies


def test_a_learned_route_the_kernel_always_refuses_never_kills_the_agent() -> None:
    cfg = LoopConfig(startup_sweep_delay=0, max_failures=3, refresh_interval=20.0)
    rig = Rig({"cali1": 11, "cali2": 12}, config=cfg)
    rig.nl.refuse = {"10.70.0.0/24": errno.ENETUNREACH}  # the peer's next hop is on no link of ours
    rig.sync.on_updates(BASE)
    rig.sync.on_learned_routes({"10.70.0.0/24": ["192.0.2.99"], "10.65.0.64/26": ["10.0.0.2"]})
    rig.sync.on_in_sync()
    for i in range(3 * cfg.max_failures):  # far more applies than max_failures: none of them fails
        rig.sync.on_updates([wep(f"x{i}", "n2", f"10.65.0.{70 + i}/32", "calix")])  # keeps the loop dirty
        rig.step()
    assert rig.sync.failures == 0 and rig.sync.applies >= 3 * cfg.max_failures
    assert set(rig.ours()) == {("10.65.0.2/32", M), ("10.65.0.3/32", M), ("10.65.0.0/26", M), ("10.65.0.64/26", M)}
    assert metrics.REGISTRY.get_sample_value("l3net_routes_refused") == 1
    ready, reasons = rig.sync.health.readiness()
    assert ready and reasons == {}
    warning = rig.sync.health.warnings()["routesRefused"]
    assert "10.70.0.0/24 via 192.0.2.99" in warning and "ENETUNREACH" in warning
    # The next hop becomes reachable; the next periodic refresh installs the route and clears the warning.
    rig.nl.refuse = {}
    rig.clock.now += cfg.refresh_interval
    rig.step()
    assert rig.ours()[("10.70.0.0/24", M)].gateways == ("192.0.2.99",)
    assert "routesRefused" not in rig.sync.health.warnings()
    assert metrics.REGISTRY.get_sample_value("l3net_routes_refused") == 0


def test_refused_workload_route_is_retried_when_the_links_change() -> None:
    rig = Rig({"cali1": 11, "cali2": 12})
    rig.nl.refuse = {"10.65.0.3/32": errno.ENODEV}  # the veth vanished between the link event and the write
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    assert ("10.65.0.3/32", M) not in rig.ours() and rig.sync.failures == 0
    rig.nl.refuse = {}
    rig.sync.on_links({"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, True),
                       "eth1": Link("eth1", 13, True)})  # an uplink comes up: every refused route is tried again
    assert rig.sync.dirty
    rig.step()
    assert rig.ours()[("10.65.0.3/32", M)].oif == 12
    assert rig.sync.health.warnings() == {}


def test_a_learned_route_change_skips_the_coalescing_window_a_datastore_change_waits() -> None:
    """A learned route withdrawn (a BGP/BFD session down) or added (a pod on another node) is applied at once,
    whatever the credits, and spends none; a datastore change waits out min_interval once the side's apply
    credits are spent (burst=1: one credit, so the window follows every datastore apply)."""
    rig = Rig({"cali1": 11, "cali2": 12}, config=LoopConfig(min_interval=0.05, burst=1, startup_sweep_delay=0))
    rig.sync.on_updates(BASE)
    rig.sync.on_learned_routes({"10.70.1.0/26": ["10.0.0.2", "10.0.0.3"], "10.70.2.0/26": ["10.0.0.2"]})
    rig.sync.on_in_sync()
    rig.step()
    assert rig.ours()[("10.70.1.0/26", M)].gateways == ("10.0.0.2", "10.0.0.3")
    rig.sync.on_updates([wep("early", "n1", "10.65.0.8/32", "cali2")])
    rig.step()  # a datastore apply: it spends the one credit (the urgent one before it spent none)
    assert ("10.65.0.8/32", M) in rig.ours()
    spent_at = rig.clock.now
    applies = rig.sync.applies

    def now() -> None:  # one loop pass without moving the fake clock
        async def once() -> None:
            await rig.sync._maybe_apply(asyncio.get_running_loop())
        asyncio.run(once())

    rig.clock.now += 0.01  # 10 ms after the last apply: inside the 50 ms window
    rig.sync.on_updates([wep("late", "n1", "10.65.0.9/32", "cali2")])
    now()
    assert rig.sync.applies == applies and ("10.65.0.9/32", M) not in rig.ours(), "a datastore change waits"
    assert rig.sync._next_deadline(rig.clock.now) == pytest.approx(rig.clock.now + 0.04)

    rig.sync.on_learned_routes({"10.70.1.0/26": ["10.0.0.2", "10.0.0.3"], "10.70.2.0/26": ["10.0.0.2"],
                                "10.70.3.0/26": ["10.0.0.3"]})  # an addition only
    assert rig.sync._next_deadline(rig.clock.now) == rig.clock.now
    now()
    assert rig.sync.applies == applies + 1, "the addition was applied without waiting for the window"
    assert ("10.70.3.0/26", M) in rig.ours()
    assert ("10.65.0.9/32", M) in rig.ours(), "the pending datastore change rides along with it"

    rig.sync.on_learned_routes({"10.70.1.0/26": ["10.0.0.3"], "10.70.3.0/26": ["10.0.0.3"]})  # 10.0.0.2 is gone
    now()
    assert rig.sync.applies == applies + 2, "the withdraw was applied without waiting for the window"
    assert ("10.70.2.0/26", M) not in rig.ours()
    assert rig.ours()[("10.70.1.0/26", M)].gateways == ("10.0.0.3",)

    rig.clock.now += 0.01
    rig.sync.on_updates([wep("later", "n1", "10.65.0.10/32", "cali2")])
    now()
    assert ("10.65.0.10/32", M) not in rig.ours(), "after the urgent applies, datastore changes coalesce again"
    assert rig.sync._next_deadline(rig.clock.now) == pytest.approx(spent_at + 0.05), \
        "its credit refills from the last datastore apply: the two urgent applies spent nothing"
    rig.clock.now += 0.05
    now()
    assert ("10.65.0.10/32", M) in rig.ours()


def _pass(rig: Rig) -> None:
    """One loop pass at the fake clock's current time (the apply awaited)."""
    async def once() -> None:
        await rig.sync._maybe_apply(asyncio.get_running_loop())
    asyncio.run(once())


def _pod(i: int) -> Upd:
    return wep(f"p{i}", "n1", f"10.65.0.{10 + i}/32", "cali1")


def test_an_isolated_event_is_applied_at_once_and_so_are_the_few_that_follow_it() -> None:
    """Rate limit, not delay: after a quiet period an event is applied in the same pass it arrives in (0 coalescing
    delay), and so are the next closely following ones (one ADD's block claim, veth and endpoint) up to ``burst``."""
    rig = Rig({"cali1": 11}, config=LoopConfig(min_interval=0.05, burst=3, startup_sweep_delay=0))
    rig.sync.on_in_sync()
    rig.step()
    rig.clock.now += 10.0  # a quiet period: the credits are full again
    applies = rig.sync.applies
    for i in range(3):
        rig.clock.now += 0.005  # 5 ms apart: well inside min_interval
        rig.sync.on_updates([_pod(i)])
        assert rig.sync._next_deadline(rig.clock.now) == rig.clock.now, "due now, no window to wait out"
        _pass(rig)
        assert rig.sync.applies == applies + i + 1
        assert (f"10.65.0.{10 + i}/32", M) in rig.ours()
    rig.clock.now += 0.005
    rig.sync.on_updates([_pod(3)])  # credits spent: this one waits for the next credit
    _pass(rig)
    assert rig.sync.applies == applies + 3 and ("10.65.0.13/32", M) not in rig.ours()
    assert rig.sync._next_deadline(rig.clock.now) > rig.clock.now
    rig.clock.now = rig.sync._next_deadline(rig.clock.now)
    _pass(rig)
    assert ("10.65.0.13/32", M) in rig.ours()


def test_a_burst_of_events_is_coalesced_into_few_applies_and_min_interval_bounds_the_rate() -> None:
    """200 events 1 ms apart for 0.2 s: at most ``burst`` applies at once, then one per ``min_interval``; all land."""
    cfg = LoopConfig(min_interval=0.05, burst=3, startup_sweep_delay=0)
    rig = Rig({"cali1": 11}, config=cfg)
    rig.sync.on_in_sync()
    rig.step()
    rig.clock.now += 10.0
    start, applies = rig.clock.now, rig.sync.applies
    stamps = []
    for i in range(200):
        rig.clock.now += 0.001
        rig.sync.on_updates([wep(f"q{i}", "n1", f"10.65.{1 + i // 250}.{i % 250}/32", "cali1")])
        before = rig.sync.applies
        _pass(rig)
        if rig.sync.applies > before:
            stamps.append(rig.clock.now)
    elapsed = rig.clock.now - start
    made = rig.sync.applies - applies
    assert made <= cfg.burst + elapsed / cfg.min_interval + 1, made
    assert made < 20, "200 events coalesced into few applies"
    # Once the burst is spent, applies are at least min_interval apart.
    gaps = [b - a for a, b in zip(stamps[cfg.burst:], stamps[cfg.burst + 1:], strict=False)]
    assert gaps and min(gaps) >= cfg.min_interval - 1e-9
    rig.clock.now = rig.sync._next_deadline(rig.clock.now)
    _pass(rig)
    assert ("10.65.1.199/32", M) in rig.ours(), "the last event of the burst is applied too"
    assert not rig.sync.dirty


def test_updates_the_model_does_not_hold_make_no_apply() -> None:
    """IPAM blocks and handles and node status change no desired state: no apply, no credit spent on them."""
    rig = Rig({"cali1": 11}, config=LoopConfig(min_interval=0.05, burst=1, startup_sweep_delay=0))
    rig.sync.on_in_sync()
    rig.step()
    rig.clock.now += 10.0
    applies = rig.sync.applies
    rig.sync.on_updates([Upd(KEYS.block("10.65.0.0/26"), b"{}"), Upd(KEYS.handle("net.c1"), b"{}"),
                         Upd(KEYS.node_status("n2", "agent"), b"{}"), Upd(KEYS.block("10.65.0.64/26"), None)])
    assert not rig.sync.dirty
    _pass(rig)
    assert rig.sync.applies == applies
    rig.sync.on_updates([_pod(1)])  # the one credit is still there: applied at once
    assert rig.sync.dirty
    _pass(rig)
    assert rig.sync.applies == applies + 1 and ("10.65.0.11/32", M) in rig.ours()
    # A block affinity matters once confirmed (its route and announcement), and when a confirmed one goes; IPAM's
    # pending claim, and the deletion of one that never got confirmed, install and announce nothing.
    rig.sync.on_updates([affinity("n1", "10.65.9.0/26", "pending")])
    assert not rig.sync.dirty
    rig.sync.on_updates([affinity("n1", "10.65.9.0/26")])
    assert rig.sync.dirty
    rig.clock.now += 1.0
    _pass(rig)
    assert ("10.65.9.0/26", M) in rig.ours() and not rig.sync.dirty
    rig.sync.on_updates([affinity("n1", "10.65.9.0/26", "pendingDeletion")])
    assert rig.sync.dirty
    rig.clock.now += 1.0
    _pass(rig)
    assert ("10.65.9.0/26", M) not in rig.ours() and not rig.sync.dirty
    rig.sync.on_updates([Upd(KEYS.affinity("n1", "10.65.9.0/26"), None)])
    rig.sync.on_updates([affinity("n2", "10.65.8.0/26", "pending"), Upd(KEYS.affinity("n2", "10.65.8.0/26"), None)])
    assert not rig.sync.dirty
    rig.sync.on_updates([affinity("n2", "10.65.8.0/26")])  # another node's confirmed block: the BGP view's owner
    assert rig.sync.dirty


def test_only_links_the_route_side_uses_make_an_apply() -> None:
    """The CNI creates a pod's veth before it writes the endpoint: that bare veth writes nothing and spends no
    credit. A link a local endpoint names, and any interface that is not a workload's, do make an apply."""
    rig = Rig({"eth0": 2, "cali1": 11, "cali2": 12}, config=LoopConfig(min_interval=0.05, burst=1,
                                                                        startup_sweep_delay=0))
    rig.sync.on_updates(BASE)
    rig.sync.on_in_sync()
    rig.step()
    links = dict(rig.sync.links)
    rig.nl.links["cali9"] = 19  # the kernel has it; no endpoint names it yet
    rig.sync.on_links({**links, "cali9": Link("cali9", 19, True)})
    assert not rig.sync.dirty
    rig.sync.on_updates([wep("late", "n1", "10.65.0.9/32", "cali9")])  # now one does: its route goes through it
    rig.step()
    assert rig.ours()[("10.65.0.9/32", M)].oif == 19
    assert rig.sync.links["cali9"].index == 19
    rig.sync.on_links({**links, "cali9": Link("cali9", 19, False)})  # a named link changes
    assert rig.sync.dirty
    rig.step()
    rig.sync.on_links({**links, "cali9": Link("cali9", 19, False), "eth1": Link("eth1", 3, True)})  # an uplink
    assert rig.sync.dirty
    rig.step()
    rig.sync.on_links({**links, "cali9": Link("cali9", 19, False)})  # an uplink goes away
    assert rig.sync.dirty


@pytest.mark.parametrize(("old", "new", "withdraws"), [
    ({"a": ("1",)}, {"a": ("1",), "b": ("2",)}, False),
    ({"a": ("1",)}, {"a": ("1", "2")}, False),
    ({"a": ("1", "2")}, {"a": ("1",)}, True),
    ({"a": ("1",)}, {}, True),
    ({"a": ("1",)}, {"a": ("2",)}, True),
    ({}, {}, False)])
def test_withdraws_any(old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]], withdraws: bool) -> None:
    assert withdraws_any(old, new) is withdraws


def test_add_trace_stages_are_marked_by_the_route_side_and_a_pending_affinity_starts_no_block_branch() -> None:
    rig = Rig({"eth0": 2, "cali1": 11})
    book = TraceBook(clock=rig.clock, observe=False)
    rig.sync.traces = book
    rig.sync.on_in_sync()
    rig.step()
    pod = wep("d", "n1", "10.65.1.2/32", "cali1")
    book.begin("c1", pod.key, claims=f"{KEYS.affinities}n1/")
    rig.sync.on_updates([affinity("n1", "10.65.1.0/26", "pending")])  # IPAM's first write: announces nothing
    assert book.snapshot()["open"][0]["block"] == []
    rig.sync.on_updates([affinity("n1", "10.65.1.0/26")])
    rig.step()
    assert ("10.65.1.0/26", M) in rig.ours()
    block = book.snapshot()["open"][0]["block"]
    assert [s["stage"] for s in block] == ["watch_delivery", "coalesce", "calculation", "apply"]
    for stage in ("ipam", "wire", "endpoint_write"):
        book.mark("c1", stage)
    rig.sync.on_updates([pod])
    rig.step()
    assert ("10.65.1.2/32", M) in rig.ours()
    snap = book.snapshot()
    assert snap["open"] == []
    (trace,) = snap["finished"]
    # no speaker in this rig: the trace ends at the route apply
    assert [s["stage"] for s in trace["stages"]] == [s for s in STAGES if s != "bgp_announce"]
    assert all(s["seconds"] >= 0 for s in trace["stages"])


class _PolicedLoop:
    """A loop with both sides on the real event loop: fake netlink and a fake iptables/ipset kernel, and a route
    apply the test can hold (``route_gate``) and watch (``events``, in order: routes-start, routes-end, policy)."""

    def __init__(self, policy_defer: float = LoopConfig.policy_defer) -> None:
        import threading

        from felix.drivers.ipsets import IpsetDriver
        from felix.drivers.iptables import IptablesDriver
        from felix.main import policy_builder
        from tests.fakes.iptables import FakeIptables

        self.kernel = FakeIptables()
        self.links = {"cali1": 11, "cali2": 12, "cali4": 14}
        self.nl, sysctls = FakeNetlink(links=self.links), FakeSysctls()
        for name in self.links:
            sysctls.add_iface(name)
        self.dp = Dataplane(RouteDriver(self.nl), InterfaceDriver(sysctls),
                            ipsets=IpsetDriver(self.kernel, refresh_interval=None),
                            iptables=IptablesDriver(self.kernel, backend="nft", refresh_interval=None))
        self.events: list[str] = []
        self.route_gate = threading.Event()
        self.route_gate.set()
        apply_routes = self.dp.apply_routes

        def held_apply_routes(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.events.append("routes-start")
            self.route_gate.wait(30)
            try:
                return apply_routes(*args, **kwargs)
            finally:
                self.events.append("routes-end")

        self.dp.apply_routes = held_apply_routes  # type: ignore[method-assign]
        build = policy_builder()

        def watched_build(model, node):  # type: ignore[no-untyped-def]
            self.events.append("policy")
            return build(model, node)

        self.sync = SyncLoop(pooled_model(), "n1", self.dp, policy_builder=watched_build,
                             config=LoopConfig(startup_sweep_delay=0, min_interval=0.01, policy_defer=policy_defer))
        self.sync.on_links({n: Link(n, i, True) for n, i in self.links.items()})

    def chains_of(self, iface: str) -> bool:
        return any(iface in c for c in self.kernel.tables["filter"])

    def routed(self, dst: str) -> bool:
        return (dst, M) in self.nl.by_proto(ROUTE_PROTO)

    async def settled(self) -> asyncio.Task[None]:
        """The loop running on BASE, both sides applied and idle, the events so far forgotten."""
        task = asyncio.create_task(self.sync.run())
        self.sync.on_updates(BASE)
        self.sync.on_in_sync()
        await until(lambda: self.chains_of("cali1"), "the first policy apply")
        await until(lambda: self.sync.routes_side.task is None and self.sync.policy_side.task is None,  # type: ignore[union-attr]
                    "both sides idle")
        self.events.clear()
        return task


def test_a_model_change_applies_the_route_side_before_the_policy_compile_holds_the_loop() -> None:
    """The compile runs on the loop thread: begun during a new pod's route apply, it held the apply's completion
    and the BGP announcement behind it. So the policy side waits for the route apply in flight."""
    rig = _PolicedLoop()

    async def scenario() -> None:
        task = await rig.settled()
        rig.sync.on_updates([wep("d", "n1", "10.65.0.4/32", "cali4")])
        await until(lambda: rig.chains_of("cali4") and rig.routed("10.65.0.4/32"), "the new pod routed and policed")
        rig.sync.stop()
        await task

    asyncio.run(scenario())
    assert rig.events[:3] == ["routes-start", "routes-end", "policy"], rig.events


def test_a_hung_route_apply_holds_the_policy_side_no_longer_than_its_head_start() -> None:
    """Drivers are independent: a route apply that never returns (a netlink socket that hangs) delays the
    new pod's policy by at most ``policy_defer``, then the policy side applies on its own."""
    rig = _PolicedLoop(policy_defer=0.05)

    async def scenario() -> None:
        task = await rig.settled()
        rig.route_gate.clear()   # the next route apply hangs
        rig.sync.on_updates([wep("d", "n1", "10.65.0.4/32", "cali4")])
        await until(lambda: rig.chains_of("cali4"), "the new pod's policy, with its route apply still hung")
        assert rig.events == ["routes-start", "policy"]
        assert not rig.routed("10.65.0.4/32")
        rig.route_gate.set()
        await until(lambda: rig.routed("10.65.0.4/32"), "the route, once let go")
        rig.sync.stop()
        await task

    asyncio.run(scenario())


def test_the_policy_side_marks_the_add_trace_on_its_own_branch_with_the_route_head_start() -> None:
    """The pod is policed (and a holding ADD returns) once the policy side has applied it: its branch of the ADD
    trace shows the wait for the route apply in flight apart from its own compile and restore."""
    rig = _PolicedLoop(policy_defer=5.0)
    book = TraceBook(observe=False)
    rig.sync.traces = book

    async def scenario() -> None:
        task = await rig.settled()
        pod = wep("d", "n1", "10.65.0.4/32", "cali4")
        book.begin("c4", pod.key)
        for stage in ("ipam", "wire", "endpoint_write"):
            book.mark("c4", stage)
        rig.route_gate.clear()   # the route apply that takes the pod is held...
        rig.sync.on_updates([pod])
        await until(lambda: rig.events[:1] == ["routes-start"], "the route apply started")
        await asyncio.sleep(0.1)
        rig.route_gate.set()     # ...for 100 ms: the policy side waits it out (its head start)
        await until(lambda: rig.chains_of("cali4") and rig.routed("10.65.0.4/32"), "the new pod routed and policed")
        await until(lambda: all(t["policy_complete"] for t in book.snapshot()["finished"]), "the policy branch")
        rig.sync.stop()
        await task

    asyncio.run(scenario())
    (trace,) = book.snapshot()["finished"]
    policy = {s["stage"]: s["seconds"] for s in trace["policy"]}
    assert list(policy) == list(POLICY_STAGES)
    assert policy["route_wait"] >= 0.05, policy  # the held route apply, not the policy side's own work
    assert all(v >= 0 for v in policy.values())
    # the route side's branch ended the trace with its own marks; the policy apply came after it
    assert trace["complete"] and [s["stage"] for s in trace["stages"]][-1] == "apply"
    assert trace["policy"][-1]["mono"] >= trace["stages"][-1]["mono"]

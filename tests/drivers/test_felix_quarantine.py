"""Degrade, never die, on data: refused policy objects are narrowed and quarantined; the sides are independent.

The sync loop with every driver, the kernel faked by stateful fakes (FakeNetlink,
FakeSysctls, FakeIptables for iptables and ipset); the fake refuses what the real
kernel refuses here (a /0 in a ``hash:net`` set) plus rules containing a marker the
test chooses (``FakeIptables.refuse``): the stand-in for a kernel refusal of an
object that passed validation. The real kernel's side of it (an endpoint the
validator refuses, written raw into etcd) is ``tests/netns/test_felix_contain.py``.
"""

from __future__ import annotations

import pytest

from felix.links import Link
from l3net import metrics
from l3net.constants import ROUTE_PROTO
from tests.builders import gnp
from tests.drivers.loop_builders import BASE, M, Upd, res, wep
from tests.drivers.policy_rig import PolicyRig

pytestmark = pytest.mark.drivers

BAD_IF = "calibad"  # a valid workload interface name; the fake kernel is told to refuse rules naming it


def quarantined(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("l3net_quarantined_objects", {"kind": kind}) or 0.0


def ours(rig: PolicyRig) -> set[tuple[str, int]]:
    return set(rig.nl.by_proto(ROUTE_PROTO))


def filter_chains(rig: PolicyRig) -> dict[str, list[str]]:
    return rig.kernel.tables["filter"]


def allow_gnp(name: str, selector: str, port: int, **extra: object) -> Upd:
    return res("globalnetworkpolicies", gnp(name, {"selector": selector, "types": ["Ingress"], **extra,
                                                   "ingress": [{"action": "Allow", "protocol": "TCP",
                                                                "destination": {"ports": [port]}}]}))


def test_a_refused_endpoint_fails_closed_and_everything_else_converges() -> None:
    """The fake kernel refuses every rule that names ``calibad`` (FakeIptables.refuse stands in for a kernel
    refusal: no endpoint that passes the strict validation is known to be refused by the real kernel)."""
    rig = PolicyRig({"cali1": 11, "cali2": 12, BAD_IF: 13})
    rig.kernel.refuse = {BAD_IF}
    rig.sync.on_updates([*BASE, wep("q", "n1", "10.65.0.9/32", BAD_IF), allow_gnp("web", "all()", 80)])
    rig.sync.on_in_sync()
    rig.step()
    assert rig.sync.failures == 0
    # Routes never waited for the policy side: every workload, the bad one included, is routable.
    assert {("10.65.0.2/32", M), ("10.65.0.3/32", M), ("10.65.0.9/32", M)} <= ours(rig)
    filt = filter_chains(rig)
    dispatch = filt["l3n-from-wl-dispatch"]
    assert any("-i cali1 " in r for r in dispatch) and any("-i cali2 " in r for r in dispatch)
    assert not any(BAD_IF in r for r in dispatch) and dispatch[-1].endswith("-j DROP")  # q: fail closed
    assert not any(BAD_IF in c for c in filt)
    entries = rig.sync.quarantined()
    assert [(e["object"], e["effect"], e["cause"]) for e in entries] == [
        ("WorkloadEndpoint/default/n1-k8s-q-eth0", "fail closed", "kernel refused")]
    assert "iptables-restore refused" in entries[0]["reason"]
    assert quarantined("WorkloadEndpoint") == 1
    assert "quarantined" in rig.sync.health.warnings() and rig.sync.health.readiness() == (True, {})
    # Never retried as it is: the next apply writes nothing at all.
    writes = rig.writes()
    trials = rig.sync.converger.trials  # type: ignore[union-attr]
    rig.sync.on_updates([wep("q", "n1", "10.65.0.9/32", BAD_IF)])  # same content again
    rig.step()
    rig.step()
    assert rig.writes() == writes and rig.sync.converger.trials == trials  # type: ignore[union-attr]
    # A new pod added meanwhile is routed and policed.
    rig.nl.links["cali4"] = 14
    rig.sys.add_iface("cali4")
    rig.sync.on_links({**rig.sync.links, "cali4": Link("cali4", 14, True)})
    rig.sync.on_updates([wep("d", "n1", "10.65.0.4/32", "cali4")])
    rig.step()
    assert ("10.65.0.4/32", M) in ours(rig)
    assert any("-o cali4 " in r for r in filter_chains(rig)["l3n-to-wl-dispatch"])
    assert any(c.startswith("l3n-tw-cali4") for c in filter_chains(rig))
    # The endpoint is fixed (a new interface name): the quarantine is lifted, its chains go in.
    rig.nl.links["caliq"] = 15
    rig.sys.add_iface("caliq")
    rig.sync.on_links({**rig.sync.links, "caliq": Link("caliq", 15, True)})
    rig.sync.on_updates([wep("q", "n1", "10.65.0.9/32", "caliq")])
    rig.step()
    assert rig.sync.quarantined() == [] and quarantined("WorkloadEndpoint") == 0
    assert any("-i caliq " in r for r in filter_chains(rig)["l3n-from-wl-dispatch"])
    assert "quarantined" not in rig.sync.health.warnings()


def test_invalid_and_rejected_endpoints_are_listed_beside_the_kernel_refusals() -> None:
    """One operator view: a value the validator refuses (absent) and an endpoint outside every pool
    (rejected) are listed with their reasons; neither gets a route or a dispatch entry (fail closed)."""
    rig = PolicyRig({"cali1": 11, "cali2": 12, "calix": 13, "caliy": 14})
    invalid = wep("x", "n1", "10.65.0.0/24", "calix")  # ipNetworks must be host networks
    outside = wep("y", "n1", "192.0.2.9/32", "caliy")  # no IPPool covers it
    rig.sync.on_updates([*BASE, invalid, outside, allow_gnp("web", "all()", 80)])
    rig.sync.on_in_sync()
    rig.step()
    assert rig.sync.failures == 0
    entries = {e["object"]: e for e in rig.sync.quarantined()}
    x, y = "WorkloadEndpoint/default/n1-k8s-x-eth0", "WorkloadEndpoint/default/n1-k8s-y-eth0"
    assert set(entries) == {x, y}
    assert (entries[x]["kind"], entries[x]["effect"], entries[x]["cause"], entries[x]["key"]) == (
        "WorkloadEndpoint", "absent (invalid)", "invalid value", invalid.key)
    assert "ipNetworks" in entries[x]["reason"] and "10.65.0.0/24" in entries[x]["reason"]
    assert (entries[y]["effect"], entries[y]["cause"]) == ("no route, no policy (fail closed)", "rejected")
    assert entries[y]["reason"] == "addresses outside every IPPool: 192.0.2.9/32"
    assert metrics.REGISTRY.get_sample_value("l3net_datastore_invalid_values") == 1
    assert metrics.REGISTRY.get_sample_value("l3net_rejected_local_endpoints") == 1
    assert quarantined("WorkloadEndpoint") == 0  # the kernel refused nothing
    routed = {dst for dst, _ in ours(rig)}
    assert "10.65.0.2/32" in routed and not {"10.65.0.0/24", "192.0.2.9/32"} & routed
    filt = filter_chains(rig)
    for dispatch in (filt["l3n-from-wl-dispatch"], filt["l3n-to-wl-dispatch"]):
        assert not any("calix" in r or "caliy" in r for r in dispatch) and dispatch[-1].endswith("-j DROP")
    since = {ref: e["since"] for ref, e in entries.items()}
    rig.step()
    assert {e["object"]: e["since"] for e in rig.sync.quarantined()} == since  # first seen, not last
    # Both fixed: nothing set aside, both routed and in the dispatch chains.
    rig.sync.on_updates([wep("x", "n1", "10.65.0.7/32", "calix"), wep("y", "n1", "10.65.0.8/32", "caliy")])
    rig.step()
    assert rig.sync.quarantined() == []
    assert metrics.REGISTRY.get_sample_value("l3net_datastore_invalid_values") == 0
    assert metrics.REGISTRY.get_sample_value("l3net_rejected_local_endpoints") == 0
    assert {("10.65.0.7/32", M), ("10.65.0.8/32", M)} <= ours(rig)
    dispatch = filter_chains(rig)["l3n-from-wl-dispatch"]
    assert any("-i calix " in r for r in dispatch) and any("-i caliy " in r for r in dispatch)


def test_a_refused_policy_keeps_its_last_good_version_and_a_new_one_is_absent() -> None:
    rig = PolicyRig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates([*BASE, allow_gnp("web", "all()", 80), allow_gnp("db", "all()", 5432)])
    rig.sync.on_in_sync()
    rig.step()
    good = {c: list(r) for c, r in filter_chains(rig).items() if c.startswith("l3n-gi-web")}
    assert good and all("--dports 80" in " ".join(r) for r in good.values())
    rig.kernel.refuse = {"--dports 8080", "--dports 9999"}  # what this kernel will not take
    # web changes to a version the kernel refuses; "new" never applied; db changes fine.
    rig.sync.on_updates([allow_gnp("web", "all()", 8080), allow_gnp("new", "all()", 9999),
                         allow_gnp("db", "all()", 5433)])
    rig.step()
    assert rig.sync.failures == 0
    filt = filter_chains(rig)
    assert {c: filt[c] for c in good} == good  # web: its last good version stays enforced
    assert not any(c.startswith("l3n-gi-new") for c in filt)  # new: absent
    assert any("--dports 5433" in r for c, rules in filt.items() if c.startswith("l3n-gi-db") for r in rules)
    effects = {e["object"]: e["effect"] for e in rig.sync.quarantined()}
    assert effects == {"GlobalNetworkPolicy/web": "last good version", "GlobalNetworkPolicy/new": "absent"}
    assert quarantined("GlobalNetworkPolicy") == 2
    # Deleting the never-good one lifts its quarantine; the other stays until its content changes.
    rig.sync.on_updates([Upd(res("globalnetworkpolicies", gnp("new", {})).key, None, 9)])
    rig.step()
    assert [e["object"] for e in rig.sync.quarantined()] == ["GlobalNetworkPolicy/web"]
    assert quarantined("GlobalNetworkPolicy") == 1


def test_zero_prefix_nets_become_two_halves_and_apply() -> None:
    rig = PolicyRig({"cali1": 11, "cali2": 12})
    pol = gnp("zero", {"selector": "all()", "types": ["Ingress"], "ingress": [
        {"action": "Allow", "source": {"nets": ["10.0.0.0/8", "0.0.0.0/0"]}},
        {"action": "Deny", "source": {"notNets": ["0.0.0.0/0"]}}]})
    rig.sync.on_updates([*BASE, res("globalnetworkpolicies", pol)])
    rig.sync.on_in_sync()
    rig.step()
    assert rig.sync.failures == 0 and rig.sync.quarantined() == []
    members = [m for _, m in rig.kernel.ipsets.values()]
    assert {"10.0.0.0/8", "0.0.0.0/1", "128.0.0.0/1"} in members and {"0.0.0.0/1", "128.0.0.0/1"} in members


def test_a_kernel_fault_is_not_blamed_on_data_and_routes_do_not_wait() -> None:
    rig = PolicyRig({"cali1": 11, "cali2": 12})
    rig.sync.on_updates([*BASE, allow_gnp("web", "all()", 80)])
    rig.sync.on_in_sync()
    rig.kernel.fail_next = 10_000  # every iptables-restore fails (a lock that is never released)
    for _ in range(3):
        rig.step(5.0)
    assert rig.sync.quarantined() == []  # without any suspect it still fails: not a data fault
    assert rig.sync.policy_side.failures == 3 and rig.sync.routes_side.failures == 0  # type: ignore[union-attr]
    assert {("10.65.0.2/32", M), ("10.65.0.3/32", M)} <= ours(rig)
    ready, reasons = rig.sync.health.readiness()
    assert not ready and set(reasons) == {"policy"}
    rig.kernel.fail_next = 0
    rig.step(15.0)
    assert rig.sync.failures == 0 and any(c.startswith("l3n-gi-web") for c in filter_chains(rig))
    assert rig.sync.health.readiness() == (True, {})


def test_a_blocked_policy_side_never_delays_routes_and_reports_itself_stuck() -> None:
    """The real event loop; iptables-restore blocks (a held xtables lock) until the test lets go."""
    import asyncio
    import threading

    from felix.dataplane import Dataplane
    from felix.drivers.interfaces import InterfaceDriver
    from felix.drivers.ipsets import IpsetDriver
    from felix.drivers.iptables import IptablesDriver
    from felix.drivers.routes import RouteDriver
    from felix.loop import LoopConfig, SyncLoop
    from felix.main import policy_builder
    from tests.drivers.loop_builders import pooled_model, until
    from tests.fakes.iptables import FakeIptables
    from tests.fakes.netlink import FakeNetlink
    from tests.fakes.sysctls import FakeSysctls

    kernel = FakeIptables()
    lock = threading.Event()
    lock.set()
    blocked = threading.Event()

    def runner(argv, stdin=None):  # type: ignore[no-untyped-def]
        if argv[0].endswith("-restore"):
            blocked.set()
            lock.wait(30)
        return kernel(argv, stdin)

    links = {"cali1": 11, "cali2": 12, "cali4": 14, "cali5": 15}
    nl, sysctls = FakeNetlink(links=links), FakeSysctls()
    for name in links:
        sysctls.add_iface(name)
    dp = Dataplane(RouteDriver(nl), InterfaceDriver(sysctls), ipsets=IpsetDriver(kernel, refresh_interval=None),
                   iptables=IptablesDriver(runner, backend="nft", refresh_interval=None))
    # The pool the workloads live in: sec-wl's calculation routes and polices pool addresses only.
    sync = SyncLoop(pooled_model(), "n1", dp, config=LoopConfig(startup_sweep_delay=0, min_interval=0.01,
                                                             stuck_after=0.3),
                    policy_builder=policy_builder())
    sync.on_links({n: Link(n, i, True) for n, i in links.items()})

    async def scenario() -> None:
        task = asyncio.create_task(sync.run())
        sync.on_updates([*BASE, allow_gnp("web", "all()", 80)])
        sync.on_in_sync()
        await until(lambda: any(c.startswith("l3n-gi-web") for c in kernel.tables["filter"]), "first policy")
        lock.clear()  # someone takes the xtables lock
        blocked.clear()
        sync.on_updates([wep("d", "n1", "10.65.0.4/32", "cali4")])
        # The policy side gives the route apply its head start, so it reaches the lock after the route:
        # wait for it there rather than assume it got there by the time the route is seen.
        await until(blocked.is_set, "the policy side held at the lock")
        assert ("10.65.0.4/32", M) in ours_nl(nl)
        # A pod added while the policy side is held gets its route all the same.
        sync.on_updates([wep("e", "n1", "10.65.0.5/32", "cali5")])
        await until(lambda: ("10.65.0.5/32", M) in ours_nl(nl), "the route of the pod added meanwhile")
        assert not lock.is_set() and sync.policy_side.task is not None  # type: ignore[union-attr]
        # Their chains wait behind the lock.
        assert not any("cali4" in c or "cali5" in c for c in kernel.tables["filter"])
        await until(lambda: "policy" in sync.health.readiness()[1], "the stuck policy side reported")
        assert "in flight" in sync.health.readiness()[1]["policy"] and task.done() is False
        lock.set()
        await until(lambda: all(any(name in c for c in kernel.tables["filter"]) for name in ("cali4", "cali5")),
                    "policy caught up")
        await until(lambda: sync.health.readiness()[0], "ready again")
        sync.stop()
        await task

    asyncio.run(scenario())


def ours_nl(nl) -> set[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return set(nl.by_proto(ROUTE_PROTO))

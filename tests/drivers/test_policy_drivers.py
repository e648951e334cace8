"""iptables and ipset drivers against stateful fakes of iptables-restore --noflush and ipset restore."""

from __future__ import annotations

import copy

import pytest

from felix.dataplane import Dataplane
from felix.desired import NatOutgoing
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.ipsets import IpsetDriver, IpsetError
from felix.drivers.iptables import IptablesDriver, IptablesError, detect_backend
from felix.drivers.routes import RouteDriver
from policy.compiler import compile_policy
from policy.nat import CHAIN_NAT_OUTGOING, CHAIN_NAT_POSTROUTING, IPSET_ALL_POOLS, IPSET_MASQ_POOLS
from tests.builders import netpol, ns, wep
from tests.fakes.iptables import FakeIptables
from tests.fakes.netlink import FakeNetlink
from tests.fakes.sysctls import FakeSysctls

pytestmark = pytest.mark.drivers

def _program(with_b: bool = True, ports: int = 80):
    a = wep("a", "prod", "n1", "10.0.1.2", {"app": "web"}, [{"name": "http", "protocol": "TCP", "port": 8080}])
    b = wep("b", "prod", "n1", "10.0.1.3", {"app": "db"})
    locals_ = [a, b] if with_b else [a]
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                               # a wide range and a named port: rules in the policy's
                                               # chain (a narrow port would be a set member instead)
                                               "ports": [{"port": ports, "endPort": ports + 100},
                                                         {"port": "http"}]}]})]
    return compile_policy(locals_, [a, b], pols, [ns("prod")])


@pytest.fixture
def kernel() -> FakeIptables:
    k = FakeIptables()
    k.tables["filter"]["FOREIGN"] = ["-s 203.0.113.0/24 -j DROP"]
    k.tables["filter"]["FORWARD"] = ["-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"]
    k.ipsets["foreign-set"] = ("hash:ip", {"192.0.2.1"})
    return k


def _apply_all(ipsets, iptables, program) -> int:
    return (ipsets.apply_adds(program.ipsets) + iptables.apply(program.chains, program.hooks)
            + ipsets.apply_deletes(program.ipsets))


def test_apply_programs_everything_and_second_apply_writes_nothing(kernel: FakeIptables) -> None:
    foreign_before = copy.deepcopy(kernel.tables["filter"]["FOREIGN"])
    ipt, ips = IptablesDriver(kernel, backend="nft"), IpsetDriver(kernel)
    prog = _program()
    assert _apply_all(ips, ipt, prog) == 3  # ipsets, filter, raw
    for table, chains in prog.chains.items():
        for chain, rules in chains.items():
            assert kernel.tables[table][chain] == list(rules)
        for kchain, rules in prog.hooks[table].items():
            assert kernel.tables[table][kchain][:len(rules)] == list(rules)
    assert kernel.tables["filter"]["FORWARD"][1:] == ["-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"]
    assert kernel.tables["filter"]["FOREIGN"] == foreign_before
    assert {n: (k, frozenset(m)) for n, (k, m) in kernel.ipsets.items() if n.startswith("l3n")} == prog.ipsets
    assert kernel.ipsets["foreign-set"] == ("hash:ip", {"192.0.2.1"})
    writes = len(kernel.writes)
    assert _apply_all(ips, ipt, _program()) == 0
    assert len(kernel.writes) == writes
    # a fresh driver (agent restart) adopts what is there: still zero writes
    assert _apply_all(IpsetDriver(kernel), IptablesDriver(kernel, backend="nft"), _program()) == 0


def test_changes_rewrite_only_changed_chains_and_remove_stale(kernel: FakeIptables) -> None:
    ipt, ips = IptablesDriver(kernel, backend="nft"), IpsetDriver(kernel)
    _apply_all(ips, ipt, _program())
    before = len(kernel.writes)
    smaller = _program(with_b=False, ports=81)
    assert _apply_all(ips, ipt, smaller) == 2  # filter rewrite + stale sets destroyed; raw untouched
    filter_script = kernel.writes[before]
    assert "l3n-PREROUTING" not in filter_script and "-A l3n-FORWARD" not in filter_script
    ours = {c for c in kernel.tables["filter"] if c.startswith("l3n-")}
    assert ours == set(smaller.chains["filter"])
    assert {n for n in kernel.ipsets if n.startswith("l3n")} == set(smaller.ipsets)
    assert ipt.remove_all() == 2
    assert ips.apply_deletes({}) == 0  # the smaller program needed no sets: they went already
    assert kernel.tables["filter"] == {"INPUT": [], "FORWARD": ["-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"],
                                       "OUTPUT": [], "FOREIGN": ["-s 203.0.113.0/24 -j DROP"]}
    assert kernel.tables["raw"] == {"PREROUTING": [], "OUTPUT": []}
    assert set(kernel.ipsets) == {"foreign-set"}


def test_hook_pushed_down_by_someone_else_is_moved_back_to_the_top(kernel: FakeIptables) -> None:
    ipt = IptablesDriver(kernel, backend="nft")
    prog = _program()
    IpsetDriver(kernel).apply_adds(prog.ipsets)
    ipt.apply(prog.chains, prog.hooks)
    kernel.tables["filter"]["FORWARD"].insert(0, "-j ACCEPT")
    assert ipt.apply(prog.chains, prog.hooks) == 0  # the cached view does not see it yet (no save per apply)
    assert ipt.refresh() == 1 and ipt.drift_repairs == 1  # the periodic re-read finds and repairs it
    fwd = kernel.tables["filter"]["FORWARD"]
    assert fwd[0] == prog.hooks["filter"]["FORWARD"][0]
    assert sum("l3n:" in r for r in fwd) == 1 and fwd.count("-j ACCEPT") == 2


def test_bounded_retries_then_error(kernel: FakeIptables) -> None:
    sleeps: list[float] = []
    prog = _program()
    IpsetDriver(kernel).apply_adds(prog.ipsets)
    ipt = IptablesDriver(kernel, backend="nft", max_retries=3, sleep=sleeps.append)
    kernel.fail_next = 2
    assert ipt.apply(prog.chains, prog.hooks) == 2
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2 and ipt.errors == 2
    assert kernel.tables["filter"]["l3n-FORWARD"] == list(prog.chains["filter"]["l3n-FORWARD"])
    kernel.fail_next = 100
    with pytest.raises(IptablesError, match="failed 4 times"):
        IptablesDriver(kernel, backend="nft", max_retries=3, sleep=sleeps.append).remove_all()
    assert kernel.tables["filter"]["l3n-FORWARD"]  # nothing half-written


def test_restore_refusal_leaves_kernel_unchanged(kernel: FakeIptables) -> None:
    prog = _program()
    chains = {"filter": {"l3n-x": ['-m comment --comment "l3n:aaaa" -j l3n-missing']}}
    ipt = IptablesDriver(kernel, backend="nft", max_retries=1, sleep=lambda _s: None)
    with pytest.raises(IptablesError):
        ipt.apply(chains, {})
    assert "l3n-x" not in kernel.tables["filter"]
    assert prog.policies == 1


def test_backend_detection(kernel: FakeIptables) -> None:
    assert detect_backend(kernel) == "nft"
    kernel.legacy_tables = {"mangle": {"KUBE-IPTABLES-HINT": []}}
    assert detect_backend(kernel) == "legacy"
    kernel.legacy_tables = {"filter": {"INPUT": [], "FORWARD": ["-j ACCEPT"] * 5, "OUTPUT": []}}
    assert detect_backend(kernel) == "legacy"
    with pytest.raises(ValueError, match="backend"):
        IptablesDriver(kernel, backend="bpf")


def test_ipset_big_change_uses_swap_and_leaves_no_temp(kernel: FakeIptables) -> None:
    ips = IpsetDriver(kernel)
    ips.apply_adds({"l3ns:big": ("hash:net", frozenset(f"10.1.0.{i}" for i in range(20)))})
    ips.apply_adds({"l3ns:big": ("hash:net", frozenset(f"10.2.0.{i}" for i in range(20)))})
    assert "swap l3nt:0 l3ns:big" in kernel.writes[-1]
    assert kernel.ipsets["l3ns:big"][1] == {f"10.2.0.{i}" for i in range(20)}
    ips.apply_adds({"l3ns:big": ("hash:net", frozenset([*(f"10.2.0.{i}" for i in range(19)), "10.3.0.1"]))})
    assert "swap" not in kernel.writes[-1] and "del l3ns:big 10.2.0.19" in kernel.writes[-1]
    assert [n for n in kernel.ipsets if n.startswith("l3nt")] == []
    with pytest.raises(ValueError, match="not a valid"):
        ips.apply_adds({"other": ("hash:net", frozenset())})
    kernel.ipsets["l3ns:big"] = ("hash:ip", set())
    ips.invalidate("manual change")  # the driver trusts its view until told (or its refresh interval passes)
    ips.apply_adds({"l3ns:big": ("hash:net", frozenset(["10.9.9.9"]))})
    assert kernel.ipsets["l3ns:big"] == ("hash:net", {"10.9.9.9"})
    with pytest.raises(IpsetError):
        ips._restore(["destroy l3ns:nonexistent"], "test")


def test_cached_view_skips_saves_and_rereads_on_interval_and_failure(kernel: FakeIptables) -> None:
    now = [0.0]
    ipt = IptablesDriver(kernel, backend="nft", refresh_interval=90.0, clock=lambda: now[0], sleep=lambda _s: None)
    ips = IpsetDriver(kernel, refresh_interval=90.0, clock=lambda: now[0])
    _apply_all(ips, ipt, _program())
    saves = (ipt.save_calls, ips.save_calls)
    assert saves == (1, 1)  # one iptables-save for both tables and one ipset save: the first apply adopts
    changed = _program(ports=81)
    assert _apply_all(ips, ipt, changed) == 1  # only the filter table; no set changed
    assert (ipt.save_calls, ips.save_calls) == saves  # no iptables-save / ipset save on later applies
    for table, chains in changed.chains.items():
        for chain, rules in chains.items():
            assert kernel.tables[table][chain] == list(rules)
    # someone deletes one of our chains' rules and one of our set members behind our back
    chain = next(c for c in kernel.tables["filter"] if c.startswith("l3n-tw-"))
    kernel.tables["filter"][chain].pop()
    some_set = next(n for n in kernel.ipsets if n.startswith("l3n") and kernel.ipsets[n][1])
    kernel.ipsets[some_set][1].clear()
    assert _apply_all(ips, ipt, changed) == 0  # not seen before the refresh interval
    now[0] = 91.0
    assert _apply_all(ips, ipt, changed) == 2  # re-read: the set and the chain are repaired
    assert kernel.tables["filter"][chain] == list(changed.chains["filter"][chain])
    assert {n: (k, frozenset(m)) for n, (k, m) in kernel.ipsets.items() if n.startswith("l3n")} == changed.ipsets
    # a failed restore forgets the view: the retry re-reads first
    kernel.fail_next = 1
    before = ipt.save_calls
    assert ipt.apply(_program().chains, _program().hooks) == 1
    assert ipt.save_calls == before + 1 and ipt.errors == 1
    assert set(ipt.stats()) >= {"l3net_iptables_restore_calls", "l3net_iptables_apply_seconds"}
    assert set(ips.stats()) >= {"l3net_ipset_restore_calls", "l3net_ipset_lines_written"}


def _hooked(target: str) -> tuple[dict, dict]:
    chains = {"filter": {c: [f'-m comment --comment "l3n:{c[4:]}" -j ACCEPT'] for c in ("l3n-a", "l3n-b")}}
    return chains, {"filter": {"FORWARD": [f'-m comment --comment "l3n:hk{target[4:]}" -j {target}']}}


def test_hook_is_deleted_by_spec_so_a_rule_inserted_since_the_save_survives(kernel: FakeIptables) -> None:
    ipt = IptablesDriver(kernel, backend="nft")
    ipt.apply(*_hooked("l3n-a"))
    old_hook = kernel.tables["filter"]["FORWARD"][0]
    # kube-proxy inserts at position 1 after our save: the cached positions are now off by one
    kernel.tables["filter"]["FORWARD"].insert(0, "-j KUBE-FORWARD-INSERTED")
    kernel.tables["filter"]["KUBE-FORWARD-INSERTED"] = []
    assert ipt.apply(*_hooked("l3n-b")) == 1
    assert f"-D FORWARD {old_hook}" in kernel.writes[-1]
    assert kernel.tables["filter"]["FORWARD"] == ['-m comment --comment "l3n:hkb" -j l3n-b',
                                                  "-j KUBE-FORWARD-INSERTED",
                                                  "-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"]


def test_save_failure_is_retried_not_read_as_an_empty_table(kernel: FakeIptables) -> None:
    IptablesDriver(kernel, backend="nft").apply(*_hooked("l3n-a"))
    sleeps: list[float] = []
    ipt = IptablesDriver(kernel, backend="nft", max_retries=3, sleep=sleeps.append)  # an agent restart
    kernel.save_fail_next = 2  # the all-tables save and the first per-table retry fail
    writes = len(kernel.writes)
    assert ipt.apply(*_hooked("l3n-a")) == 0  # adopted after the retry: no duplicate hook, no rewrite
    assert len(kernel.writes) == writes and ipt.save_errors == 2 and len(sleeps) == 1
    assert sum("l3n:" in r for r in kernel.tables["filter"]["FORWARD"]) == 1
    kernel.save_fail_next = 100
    with pytest.raises(IptablesError, match="Could not fetch"):
        IptablesDriver(kernel, backend="nft", max_retries=2, sleep=sleeps.append).apply(*_hooked("l3n-b"))
    assert len(kernel.writes) == writes  # nothing written on an unknown table
    kernel.save_fail_next = 0
    # only "table does not exist" means empty
    ipt = IptablesDriver(kernel, backend="nft", tables=("filter",))
    del kernel.tables["raw"]
    assert ipt.read_table("raw").chains == {}


HOST_NAT = "-d 198.51.100.0/24 -j SNAT --to-source 10.0.0.1"


def _policy_dataplane(kernel: FakeIptables) -> Dataplane:
    return Dataplane(RouteDriver(FakeNetlink()), InterfaceDriver(FakeSysctls()), ipsets=IpsetDriver(kernel),
                     iptables=IptablesDriver(kernel, backend="nft"))


def test_nat_outgoing_applies_once_survives_restart_and_goes_leaving_host_nat_rules(kernel: FakeIptables) -> None:
    kernel.tables["nat"]["POSTROUTING"] = [HOST_NAT]
    nat = NatOutgoing(masq_pools=("10.65.0.0/16",), all_pools=("10.65.0.0/16", "10.70.0.0/16"))
    dp = _policy_dataplane(kernel)
    assert dp.apply_policy(_program(), nat) == 4  # ipsets, filter, raw, nat
    assert set(kernel.tables["nat"]) >= {CHAIN_NAT_POSTROUTING, CHAIN_NAT_OUTGOING}
    assert kernel.tables["nat"]["POSTROUTING"][0].endswith(f"-j {CHAIN_NAT_POSTROUTING}")
    assert kernel.tables["nat"]["POSTROUTING"][1:] == [HOST_NAT]
    assert kernel.ipsets[IPSET_MASQ_POOLS] == ("hash:net", {"10.65.0.0/16"})
    assert kernel.ipsets[IPSET_ALL_POOLS] == ("hash:net", {"10.65.0.0/16", "10.70.0.0/16"})
    writes = len(kernel.writes)
    assert dp.apply_policy(_program(), nat) == 0
    assert _policy_dataplane(kernel).apply_policy(_program(), nat) == 0  # a restarted agent adopts it
    assert len(kernel.writes) == writes

    # A new pool changes the set only; the flag turned off removes chains, hook and sets.
    wider = NatOutgoing(masq_pools=nat.masq_pools, all_pools=(*nat.all_pools, "10.80.0.0/16"))
    assert dp.apply_policy(_program(), wider) == 1
    assert dp.apply_policy(_program(), NatOutgoing()) == 2  # nat table, then ipsets deleted
    assert kernel.tables["nat"] == {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": [HOST_NAT]}
    assert not {IPSET_MASQ_POOLS, IPSET_ALL_POOLS} & set(kernel.ipsets)
    assert kernel.tables["filter"]["FOREIGN"] == ["-s 203.0.113.0/24 -j DROP"]


def test_iptables_runs_alongside_a_members_only_ipset_restore_and_after_one_that_creates(
        kernel: FakeIptables) -> None:
    """``apply_adds(then=...)``: a restore that creates a set finishes before the iptables apply starts (a rule
    may name the set); one that only moves members runs at the same time (on a thread, for a runner marked
    ``concurrent``). An iptables failure meanwhile still waits for the restore and drops the ipset view."""
    import threading

    started = threading.Event()
    release = threading.Event()
    log: list[str] = []

    def runner(argv, stdin=None):
        if argv[:2] == ["ipset", "restore"]:
            started.set()
            release.wait(5)
            log.append("ipset done")
        return kernel(argv, stdin)
    runner.concurrent = True  # type: ignore[attr-defined]

    ips = IpsetDriver(runner)

    def then() -> int:
        log.append("then running, ipset started" if started.is_set() else "then running")
        release.set()
        return 7

    one = ("hash:net", frozenset({"10.0.0.1"}))
    started.clear()
    release.set()  # a create: the restore must be done before ``then``
    assert ips.apply_adds({"l3n-a": one}, then=then) == 8
    assert log == ["ipset done", "then running, ipset started"]
    log.clear()
    started.clear()
    release.clear()  # members only: ``then`` runs while the restore is still blocked
    assert ips.apply_adds({"l3n-a": ("hash:net", frozenset({"10.0.0.2"}))}, then=then) == 8
    assert log == ["then running, ipset started", "ipset done"]
    assert kernel.ipsets["l3n-a"] == ("hash:net", {"10.0.0.2"})

    def boom() -> int:
        release.set()
        raise IptablesError("refused")
    with pytest.raises(IptablesError):
        ips.apply_adds({"l3n-a": ("hash:net", frozenset({"10.0.0.3"}))}, then=boom)
    assert kernel.ipsets["l3n-a"] == ("hash:net", {"10.0.0.3"})  # the restore was waited for
    saves = ips.save_calls
    assert ips.apply_adds({"l3n-a": ("hash:net", frozenset({"10.0.0.3"}))}) == 0  # re-read, nothing to do
    assert ips.save_calls == saves + 1


class _SetsInUseFor:
    """The fake kernel, whose ``destroy`` says "in use" ``times`` times first (a rule the kernel is still
    freeing), or always (``times`` None: a rule that is not ours names the set)."""

    def __init__(self, kernel: FakeIptables, times: int | None) -> None:
        self.kernel, self.times, self.refusals = kernel, times, 0

    def __call__(self, argv, stdin=None):  # type: ignore[no-untyped-def]
        if argv[:2] == ["ipset", "restore"] and stdin and stdin.startswith("destroy ") and (
                self.times is None or self.refusals < self.times):
            self.refusals += 1
            return 1, "", ("ipset v7.17: Error in line 1: Set cannot be destroyed: it is in use by a kernel "
                           "component")
        return self.kernel(argv, stdin)


def test_a_set_the_kernel_is_still_releasing_is_destroyed_after_a_pause_and_no_error_is_counted(
        kernel: FakeIptables) -> None:
    runner = _SetsInUseFor(kernel, times=3)
    sleeps: list[float] = []
    ips = IpsetDriver(runner, sleep=sleeps.append)
    ips.apply_adds({"l3n-s:gone": ("hash:ip", frozenset({"10.0.0.1"}))})
    assert ips.apply_deletes({}) == 1
    assert "l3n-s:gone" not in kernel.ipsets
    assert sleeps == [0.002, 0.004, 0.008]
    assert ips.stats()["l3net_ipset_restore_errors"] == 0
    assert ips.stats()["l3net_ipset_destroys_deferred"] == 0


def test_a_set_someone_else_still_uses_is_left_for_a_later_apply_not_raised(kernel: FakeIptables) -> None:
    runner = _SetsInUseFor(kernel, times=None)
    sleeps: list[float] = []
    ips = IpsetDriver(runner, sleep=sleeps.append)
    ips.apply_adds({"l3n-s:held": ("hash:ip", frozenset({"10.0.0.1"}))})
    assert ips.apply_deletes({}) == 0
    assert "l3n-s:held" in kernel.ipsets
    assert 0.5 <= sum(sleeps) < 0.6
    assert ips.stats()["l3net_ipset_destroys_deferred"] == 1
    runner.times = 0   # the foreign rule went: the next apply destroys the set
    assert ips.apply_deletes({}) == 1
    assert "l3n-s:held" not in kernel.ipsets


def test_ipset_restore_failures_other_than_in_use_still_raise(kernel: FakeIptables) -> None:
    ips = IpsetDriver(lambda argv, stdin=None: (1, "", "ipset v7.17: Kernel error received: Operation not "
                                                         "permitted") if argv[:2] == ["ipset", "restore"]
                      else kernel(argv, stdin), sleep=lambda _s: None)
    kernel.ipsets["l3n-s:x"] = ("hash:ip", {"10.0.0.1"})
    with pytest.raises(IpsetError, match="Operation not permitted"):
        ips.apply_deletes({})
    assert ips.stats()["l3net_ipset_restore_errors"] == 1


def test_a_fake_runner_without_spawn_runs_one_restore_per_transaction_and_legacy_never_streams(
        kernel: FakeIptables) -> None:
    spawned: list[object] = []

    def runner(argv, stdin=None):  # type: ignore[no-untyped-def]
        return kernel(argv, stdin)
    runner.spawn = spawned.append  # type: ignore[attr-defined]
    legacy = IptablesDriver(runner, backend="legacy")
    legacy.apply({"filter": {"l3n-a": ['-m comment --comment "l3n:a1" -j ACCEPT']}}, {})
    assert spawned == [] and legacy.stats()["l3net_iptables_restore_processes"] == 0
    plain = IptablesDriver(kernel, backend="nft")   # a runner without spawn
    plain.apply({"filter": {"l3n-b": ['-m comment --comment "l3n:b1" -j ACCEPT']}}, {})
    assert plain.stats()["l3net_iptables_restore_calls"] == 1
    assert plain.stats()["l3net_iptables_restore_processes"] == 0

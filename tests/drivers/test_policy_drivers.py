"""iptables and ipset drivers against stateful fakes of iptables-restore --noflush and ipset restore."""

from __future__ import annotations

import copy
import re
import shlex

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
from tests.drivers.felix_fakes import FakeNetlink, FakeSysctls

pytestmark = pytest.mark.drivers

_TARGETS = {"ACCEPT", "DROP", "RETURN", "MARK", "REJECT", "LOG", "MASQUERADE", "SNAT"}
_BUILTIN = {"filter": ["INPUT", "FORWARD", "OUTPUT"], "raw": ["PREROUTING", "OUTPUT"],
            "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]}


class FakeKernel:
    """Models iptables-{nft,legacy}-save/-restore --noflush and ipset save/restore, atomically per call."""

    def __init__(self) -> None:
        self.tables = {t: {c: [] for c in chains} for t, chains in _BUILTIN.items()}
        self.ipsets: dict[str, tuple[str, set[str]]] = {}
        self.legacy_tables: dict[str, dict[str, list[str]]] = {}
        self.writes: list[str] = []
        self.fail_next = 0
        self.save_fail_next = 0  # iptables-save calls that fail (not because a table is missing)
        self.refuse: set[str] = set()  # iptables-restore refuses a rule containing any of these (a kernel check)

    def __call__(self, argv, stdin=None):
        tool = argv[0]
        if tool.startswith("iptables-") and tool.endswith("-save"):
            tables = self.tables if "nft" in tool else self.legacy_tables
            if self.save_fail_next:
                self.save_fail_next -= 1
                return 1, "", "iptables-save: Could not fetch rule set generation id: Invalid argument"
            wanted = [argv[2]] if "-t" in argv else sorted(tables)
            if "-t" in argv and argv[2] not in tables:
                return 1, "", f"Table `{argv[2]}' does not exist"
            return 0, "".join(self._render(t, tables.get(t, {})) for t in wanted), ""
        if tool.startswith("iptables-") and tool.endswith("-restore"):
            assert "--noflush" in argv and "--wait" in argv
            self.writes.append(stdin)
            if self.fail_next:
                self.fail_next -= 1
                return 4, "", "Another app is currently holding the xtables lock"
            return self._restore(stdin)
        if argv[:2] == ["ipset", "save"]:
            out = []
            for name, (kind, members) in self.ipsets.items():
                out.append(f"create {name} {kind} family inet hashsize 1024 maxelem 1048576")
                out += [f"add {name} {m}" for m in sorted(members)]
            return 0, "\n".join(out) + "\n", ""
        if argv[:2] == ["ipset", "restore"]:
            self.writes.append(stdin)
            return self._ipset_restore(stdin)
        return 127, "", f"unknown command {argv}"

    @staticmethod
    def _render(table, chains):
        lines = [f"*{table}"]
        lines += [f":{c} {'ACCEPT' if c in _BUILTIN.get(table, ()) else '-'} [0:0]" for c in chains]
        lines += [f"-A {c} {r}" for c, rules in chains.items() for r in rules]
        return "\n".join([*lines, "COMMIT", ""])

    def _restore(self, script):
        tables = copy.deepcopy(self.tables)
        chains = None
        try:
            for line in script.splitlines():
                if not line or line.startswith("#"):
                    continue
                if line.startswith("*"):
                    chains = tables.setdefault(line[1:], {})
                elif line == "COMMIT":
                    chains = None
                elif line.startswith(":"):
                    chains.setdefault(line[1:].split()[0], [])
                else:
                    op, rest = line.split(None, 1)
                    assert not any(bad in rest for bad in self.refuse), f"kernel refused {rest}"
                    self._op(chains, op, rest)
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            return 1, "", f"iptables-restore: line failed: {exc}"
        self.tables = tables
        return 0, "", ""

    @staticmethod
    def _op(chains, op, rest):
        name, _, rule = rest.partition(" ")
        if op in ("-A", "-I"):
            assert name in chains, f"no chain {name}"
            pos = 0
            if op == "-I" and rule.split(" ", 1)[0].isdigit():
                pos, rule = int(rule.split(" ", 1)[0]) - 1, rule.split(" ", 1)[1]
            toks = shlex.split(rule)
            for flag in ("-i", "-o"):  # as iptables' parser: an interface name longer than IFNAMSIZ-1 is refused
                assert flag not in toks or len(toks[toks.index(flag) + 1]) <= 15, "interface name too long"
            for flag in ("-j", "-g"):
                if flag in toks:
                    target = toks[toks.index(flag) + 1]
                    assert target in _TARGETS or target in chains, f"no target {target}"
            chains[name].insert(pos, rule) if op == "-I" else chains[name].append(rule)
        elif op == "-D":  # by number or by rule spec (the first rule with exactly this text)
            if rule.isdigit():
                del chains[name][int(rule) - 1]
            else:
                chains[name].remove(rule)
        elif op == "-F":
            chains[name].clear()
        elif op == "-X":
            assert not chains[name], "chain not empty"
            assert not any(re.search(rf"-[jg] {re.escape(name)}( |$)", r) for rs in chains.values() for r in rs), \
                "chain referenced"
            assert not any(name in b for b in _BUILTIN.values())
            del chains[name]
        else:
            raise ValueError(op)

    def _ipset_restore(self, script):
        sets = copy.deepcopy(self.ipsets)
        try:
            for line in script.splitlines():
                parts = line.split()
                if not parts or parts[0] == "COMMIT":
                    continue
                cmd, name = parts[0], parts[1]
                if cmd == "create":
                    assert name not in sets, "set exists"
                    sets[name] = (parts[2], set())
                elif cmd == "add":
                    assert parts[2] not in sets[name][1], "element exists"
                    # the kernel's hash:net refuses a zero prefix length
                    assert not (sets[name][0] == "hash:net" and parts[2].endswith("/0")), "invalid CIDR /0"
                    sets[name][1].add(parts[2])
                elif cmd == "del":
                    sets[name][1].remove(parts[2])
                elif cmd == "swap":
                    assert sets[name][0] == sets[parts[2]][0], "incompatible types"
                    sets[name], sets[parts[2]] = sets[parts[2]], sets[name]
                elif cmd == "destroy":
                    del sets[name]
                else:
                    raise ValueError(cmd)
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            return 1, "", f"ipset restore: {exc}"
        self.ipsets = sets
        return 0, "", ""


def _program(with_b: bool = True, ports: int = 80):
    a = wep("a", "prod", "n1", "10.0.1.2", {"app": "web"}, [{"name": "http", "protocol": "TCP", "port": 8080}])
    b = wep("b", "prod", "n1", "10.0.1.3", {"app": "db"})
    locals_ = [a, b] if with_b else [a]
    pols = [netpol("db", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                               "ports": [{"port": ports}, {"port": "http"}]}]})]
    return compile_policy(locals_, [a, b], pols, [ns("prod")])


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.tables["filter"]["FOREIGN"] = ["-s 203.0.113.0/24 -j DROP"]
    k.tables["filter"]["FORWARD"] = ["-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"]
    k.ipsets["foreign-set"] = ("hash:ip", {"192.0.2.1"})
    return k


def _apply_all(ipsets, iptables, program) -> int:
    return (ipsets.apply_adds(program.ipsets) + iptables.apply(program.chains, program.hooks)
            + ipsets.apply_deletes(program.ipsets))


def test_apply_programs_everything_and_second_apply_writes_nothing(kernel: FakeKernel) -> None:
    foreign_before = copy.deepcopy(kernel.tables["filter"]["FOREIGN"])
    ipt, ips = IptablesDriver(kernel, backend="nft"), IpsetDriver(kernel)
    prog = _program()
    assert _apply_all(ips, ipt, prog) == 3  # ipsets, filter, raw
    for table, chains in prog.chains.items():
        for chain, rules in chains.items():
            assert kernel.tables[table][chain] == rules
        for kchain, rules in prog.hooks[table].items():
            assert kernel.tables[table][kchain][:len(rules)] == rules
    assert kernel.tables["filter"]["FORWARD"][1:] == ["-s 198.51.100.0/24 -j FOREIGN", "-j ACCEPT"]
    assert kernel.tables["filter"]["FOREIGN"] == foreign_before
    assert {n: (k, frozenset(m)) for n, (k, m) in kernel.ipsets.items() if n.startswith("l3n")} == prog.ipsets
    assert kernel.ipsets["foreign-set"] == ("hash:ip", {"192.0.2.1"})
    writes = len(kernel.writes)
    assert _apply_all(ips, ipt, _program()) == 0
    assert len(kernel.writes) == writes
    # a fresh driver (agent restart) adopts what is there: still zero writes
    assert _apply_all(IpsetDriver(kernel), IptablesDriver(kernel, backend="nft"), _program()) == 0


def test_changes_rewrite_only_changed_chains_and_remove_stale(kernel: FakeKernel) -> None:
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


def test_hook_pushed_down_by_someone_else_is_moved_back_to_the_top(kernel: FakeKernel) -> None:
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


def test_bounded_retries_then_error(kernel: FakeKernel) -> None:
    sleeps: list[float] = []
    prog = _program()
    IpsetDriver(kernel).apply_adds(prog.ipsets)
    ipt = IptablesDriver(kernel, backend="nft", max_retries=3, sleep=sleeps.append)
    kernel.fail_next = 2
    assert ipt.apply(prog.chains, prog.hooks) == 2
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2 and ipt.errors == 2
    assert kernel.tables["filter"]["l3n-FORWARD"] == prog.chains["filter"]["l3n-FORWARD"]
    kernel.fail_next = 100
    with pytest.raises(IptablesError, match="failed 4 times"):
        IptablesDriver(kernel, backend="nft", max_retries=3, sleep=sleeps.append).remove_all()
    assert kernel.tables["filter"]["l3n-FORWARD"]  # nothing half-written


def test_restore_refusal_leaves_kernel_unchanged(kernel: FakeKernel) -> None:
    prog = _program()
    chains = {"filter": {"l3n-x": ['-m comment --comment "l3n:aaaa" -j l3n-missing']}}
    ipt = IptablesDriver(kernel, backend="nft", max_retries=1, sleep=lambda _s: None)
    with pytest.raises(IptablesError):
        ipt.apply(chains, {})
    assert "l3n-x" not in kernel.tables["filter"]
    assert prog.policies == 1


def test_backend_detection(kernel: FakeKernel) -> None:
    assert detect_backend(kernel) == "nft"
    kernel.legacy_tables = {"mangle": {"KUBE-IPTABLES-HINT": []}}
    assert detect_backend(kernel) == "legacy"
    kernel.legacy_tables = {"filter": {"INPUT": [], "FORWARD": ["-j ACCEPT"] * 5, "OUTPUT": []}}
    assert detect_backend(kernel) == "legacy"
    with pytest.raises(ValueError, match="backend"):
        IptablesDriver(kernel, backend="bpf")


def test_ipset_big_change_uses_swap_and_leaves_no_temp(kernel: FakeKernel) -> None:
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


def test_cached_view_skips_saves_and_rereads_on_interval_and_failure(kernel: FakeKernel) -> None:
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
            assert kernel.tables[table][chain] == rules
    # someone deletes one of our chains' rules and one of our set members behind our back
    chain = next(c for c in kernel.tables["filter"] if c.startswith("l3n-tw-"))
    kernel.tables["filter"][chain].pop()
    some_set = next(n for n in kernel.ipsets if n.startswith("l3n") and kernel.ipsets[n][1])
    kernel.ipsets[some_set][1].clear()
    assert _apply_all(ips, ipt, changed) == 0  # not seen before the refresh interval
    now[0] = 91.0
    assert _apply_all(ips, ipt, changed) == 2  # re-read: the set and the chain are repaired
    assert kernel.tables["filter"][chain] == changed.chains["filter"][chain]
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


def test_hook_is_deleted_by_spec_so_a_rule_inserted_since_the_save_survives(kernel: FakeKernel) -> None:
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


def test_save_failure_is_retried_not_read_as_an_empty_table(kernel: FakeKernel) -> None:
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


def _policy_dataplane(kernel: FakeKernel) -> Dataplane:
    return Dataplane(RouteDriver(FakeNetlink()), InterfaceDriver(FakeSysctls()), ipsets=IpsetDriver(kernel),
                     iptables=IptablesDriver(kernel, backend="nft"))


def test_nat_outgoing_applies_once_survives_restart_and_goes_leaving_host_nat_rules(kernel: FakeKernel) -> None:
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

"""The long-lived iptables-nft-restore and ipset sessions, against the real tools in a namespace of our own.

What the driver relies on: a transaction counts as applied only once its marker came back, and then it is
in the kernel; a refused one changes nothing and reports xtables' status with the kernel's reason; the
process sees what others changed between transactions; a process that died or hung is replaced; close
leaves nothing running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver, netns_runner
from felix.drivers.restore_session import LOST_RC, TIMED_OUT_RC, IpsetSession, RestoreSession
from l3net import netns
from l3net.lab import procs
from tests.netns_fixtures import NetnsFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.netns

RESTORE = ["iptables-nft-restore", "--noflush", "--wait"]


@pytest.fixture
def ns(netns_factory: NetnsFactory) -> str:
    return netns_factory("rsess")


@pytest.fixture
def session(ns: str) -> Iterator[RestoreSession]:
    s = RestoreSession(RESTORE, netns_runner(ns).spawn)  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.close()


def _rules(ns: str, chain: str) -> list[str]:
    out = netns.run(ns, ["iptables-nft-save", "-t", "filter"]).stdout
    # iptables-save quotes a comment only when it must: compare without quotes
    return [line.replace('"', "") for line in out.splitlines() if line.startswith(f"-A {chain} ")]


def _refill(chain: str, comments: Sequence[str]) -> str:
    body = "".join(f'-A {chain} -m comment --comment "{c}" -j ACCEPT\n' for c in comments)
    return f"*filter\n:{chain} - [0:0]\n-F {chain}\n{body}COMMIT\n"


def test_transactions_stream_through_one_process_and_each_is_in_the_kernel_when_confirmed(
        ns: str, session: RestoreSession) -> None:
    assert session.run("*filter\n:l3n-s - [0:0]\n-A FORWARD -j l3n-s\nCOMMIT\n")[0] == 0
    for i in range(5):   # flush and refill: the deleting kind of transaction that a one-shot restore waits on
        rc, _, err = session.run(_refill("l3n-s", [f"gen{i}-a", f"gen{i}-b"]))
        assert (rc, err) == (0, "")
        assert _rules(ns, "l3n-s") == [f"-A l3n-s -m comment --comment gen{i}-{x} -j ACCEPT" for x in "ab"]
    assert session.started == 1


def test_a_change_made_by_someone_else_between_transactions_is_seen(ns: str, session: RestoreSession) -> None:
    assert session.run("*filter\n:l3n-s - [0:0]\nCOMMIT\n")[0] == 0
    netns.run(ns, ["iptables-nft", "-A", "l3n-s", "-m", "comment", "--comment", "theirs", "-j", "DROP"])
    netns.run(ns, ["iptables-nft", "-N", "THEIR-CHAIN"])
    rc, _, err = session.run("*filter\n-D l3n-s -m comment --comment theirs -j DROP\n-A l3n-s -j THEIR-CHAIN\n"
                             "COMMIT\n")
    assert (rc, err) == (0, "")
    assert _rules(ns, "l3n-s") == ["-A l3n-s -j THEIR-CHAIN"]
    assert session.started == 1


def test_a_refused_transaction_changes_nothing_says_why_and_the_next_one_gets_a_new_process(
        ns: str, session: RestoreSession) -> None:
    assert session.run(_refill("l3n-s", ["kept"]))[0] == 0
    first = session.pid
    rc, _, err = session.run("*filter\n-F l3n-s\n-A l3n-s -j L3N-NO-SUCH-CHAIN\nCOMMIT\n")
    assert rc in (1, 2)   # xtables' own status, as a one-shot restore would exit
    assert "L3N-NO-SUCH-CHAIN" in err
    assert _rules(ns, "l3n-s") == ["-A l3n-s -m comment --comment kept -j ACCEPT"]   # the flush did not happen
    assert first is not None and procs.starttime(first) is None
    assert session.run(_refill("l3n-s", ["after"]))[0] == 0
    assert session.started == 2 and session.pid != first
    assert _rules(ns, "l3n-s") == ["-A l3n-s -m comment --comment after -j ACCEPT"]


def test_a_process_that_was_killed_is_replaced_on_the_next_transaction(ns: str, session: RestoreSession) -> None:
    assert session.run(_refill("l3n-s", ["one"]))[0] == 0
    pid = session.pid
    assert pid is not None
    os.kill(pid, 9)   # our own child, by its PID
    wait_for(lambda: procs.starttime(pid) is None, timeout=5, what="the killed restore to exit")
    rc, _, _ = session.run(_refill("l3n-s", ["two"]))
    assert rc == 0 and session.started == 2
    assert _rules(ns, "l3n-s") == ["-A l3n-s -m comment --comment two -j ACCEPT"]


def test_a_process_that_confirms_nothing_is_ended_and_reported_as_timed_out() -> None:
    # A real process that reads its input and never answers: what a hung restore looks like from here.
    silent = [sys.executable, "-c", "import sys\nfor _ in sys.stdin: pass"]
    procs: list[subprocess.Popen] = []

    def spawn(argv: Sequence[str]) -> subprocess.Popen:
        procs.append(subprocess.Popen(silent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0))
        return procs[-1]

    s = RestoreSession(RESTORE, spawn, timeout=0.5)
    try:
        rc, _, err = s.run("*filter\nCOMMIT\n")
        assert rc == TIMED_OUT_RC and "0 s" in err
        assert procs[0].poll() is not None   # ended, not left behind
        assert s.pid is None
    finally:
        s.close()


def test_a_process_that_exits_without_a_verdict_is_a_loss_not_a_success() -> None:
    def spawn(argv: Sequence[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)

    s = RestoreSession(RESTORE, spawn)
    try:
        rc, _, _ = s.run("*filter\nCOMMIT\n")
        assert rc == LOST_RC
    finally:
        s.close()


def test_close_ends_the_process_and_is_idempotent(session: RestoreSession) -> None:
    assert session.run("*filter\n:l3n-s - [0:0]\nCOMMIT\n")[0] == 0
    pid = session.pid
    assert pid is not None and procs.starttime(pid) is not None
    session.close()
    session.close()
    assert procs.starttime(pid) is None
    assert session.pid is None


def test_the_driver_streams_its_applies_on_nft_and_closes_the_process(ns: str) -> None:
    ipt = IptablesDriver(netns_runner(ns), backend="nft", refresh_interval=None)
    try:
        for i in range(4):
            rule = f'-m comment --comment "l3n:gen{i}" -j ACCEPT'
            assert ipt.apply({"filter": {"l3n-d": [rule]}}, {"filter": {"FORWARD": ['-m comment --comment '
                                                                                   '"l3n:hook" -j l3n-d']}}) == 1
            assert _rules(ns, "l3n-d") == [f"-A l3n-d -m comment --comment l3n:gen{i} -j ACCEPT"]
        stats = ipt.stats()
        assert stats["l3net_iptables_restore_calls"] == 4
        assert stats["l3net_iptables_restore_processes"] == 1
        pid = ipt._stream.pid
        assert pid is not None
    finally:
        ipt.remove_all()
        ipt.close()
    assert procs.starttime(pid) is None
    assert _rules(ns, "l3n-d") == [] and _rules(ns, "FORWARD") == []


def test_a_set_whose_last_rule_just_went_is_destroyed_in_the_same_apply(ns: str) -> None:
    # The kernel frees a deleted rule (and its hold on a set) a grace period after the commit; the streamed
    # restore does not wait for that, so the set's destroy meets "in use" first and must wait it out.
    run = netns_runner(ns)
    ipt, ips = IptablesDriver(run, backend="nft", refresh_interval=None), IpsetDriver(run, refresh_interval=None)
    sets = {"l3n-s:held": ("hash:ip", frozenset({"192.0.2.1"}))}
    rule = '-m comment --comment "l3n:useset" -m set --match-set l3n-s:held src -j DROP'
    try:
        for _ in range(3):
            ips.apply_adds(sets, then=lambda: ipt.apply({"filter": {"l3n-u": [rule]}}, {}))
            assert "l3n-s:held" in netns.run(ns, ["ipset", "list", "-n"]).stdout.split()
            ipt.apply({"filter": {"l3n-u": []}}, {})   # the rule goes; the chain stays
            assert ips.apply_deletes({}) == 1
            assert netns.run(ns, ["ipset", "list", "-n"]).stdout.split() == []
        assert ips.stats()["l3net_ipset_restore_errors"] == 0
        assert ips.stats()["l3net_ipset_destroys_deferred"] == 0
        assert ipt.stats()["l3net_iptables_restore_processes"] == 1
        assert ips.stats()["l3net_ipset_processes"] == 1
    finally:
        ipt.remove_all()
        ipt.close()
        ips.apply_deletes({})
        ips.close()


def _members(ns: str, name: str) -> set[str]:
    out = netns.run(ns, ["ipset", "list", name]).stdout
    return set(out.split("Members:\n", 1)[1].split())


def test_the_ipset_session_applies_each_batch_reports_a_failing_command_and_goes_on(ns: str) -> None:
    s = IpsetSession(netns_runner(ns).spawn)  # type: ignore[attr-defined]
    try:
        assert s.run("create l3n-s:a hash:net,port family inet\nadd l3n-s:a 10.0.0.1,tcp:80\n") == (0, "", "")
        assert _members(ns, "l3n-s:a") == {"10.0.0.1,tcp:80"}
        rc, _, err = s.run("add l3n-s:a 10.0.0.1,tcp:80\nadd l3n-s:a 10.0.0.2,tcp:80\n")
        assert rc == 1 and "already added" in err   # ipset's words, and the batch is a failure
        assert _members(ns, "l3n-s:a") == {"10.0.0.1,tcp:80", "10.0.0.2,tcp:80"}   # it went on
        assert s.run("del l3n-s:a 10.0.0.1,tcp:80\n") == (0, "", "")   # stderr of the last batch is not carried
        assert _members(ns, "l3n-s:a") == {"10.0.0.2,tcp:80"}
        assert s.started == 1
        s.run("destroy l3n-s:a\n")
    finally:
        s.close()


def test_drivers_whose_session_binary_cannot_start_fall_back_to_one_process_per_transaction(ns: str) -> None:
    base = netns_runner(ns)

    def runner(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        return base(argv, stdin)

    def cannot_spawn(argv: Sequence[str]) -> subprocess.Popen:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    runner.spawn = cannot_spawn  # type: ignore[attr-defined]
    runner.concurrent = True  # type: ignore[attr-defined]
    ipt, ips = IptablesDriver(runner, backend="nft", refresh_interval=None), IpsetDriver(runner,
                                                                                         refresh_interval=None)
    try:
        ips.apply_adds({"l3n-s:b": ("hash:ip", frozenset({"192.0.2.9"}))},
                       then=lambda: ipt.apply({"filter": {"l3n-f": ['-m comment --comment "l3n:f1" -j ACCEPT']}},
                                              {}))
        assert _members(ns, "l3n-s:b") == {"192.0.2.9"}
        assert _rules(ns, "l3n-f") == ["-A l3n-f -m comment --comment l3n:f1 -j ACCEPT"]
        assert ipt.stats()["l3net_iptables_restore_errors"] == 0 and ips.stats()["l3net_ipset_restore_errors"] == 0
    finally:
        ipt.remove_all()
        ips.apply_deletes({})
        ipt.close()
        ips.close()


def test_a_batch_bigger_than_the_pipes_goes_through_both_sessions(ns: str) -> None:
    # ipset answers every line with a prompt: a big batch fills its stdout long before it has read the batch,
    # so the session must read while it writes (a plain write would wait forever).
    ips = IpsetSession(netns_runner(ns).spawn)  # type: ignore[attr-defined]
    ipt = RestoreSession(RESTORE, netns_runner(ns).spawn)  # type: ignore[attr-defined]
    try:
        adds = "".join(f"add l3n-s:big 10.{i // 250}.{i % 250}.1\n" for i in range(30000))
        assert ips.run("create l3n-s:big hash:ip family inet maxelem 65536\n" + adds) == (0, "", "")
        assert len(_members(ns, "l3n-s:big")) == 30000
        assert ipt.run(_refill("l3n-s", [f"r{i}" for i in range(4000)]))[0] == 0
        assert len(_rules(ns, "l3n-s")) == 4000
        assert (ips.started, ipt.started) == (1, 1)
        ips.run("destroy l3n-s:big\n")
    finally:
        ips.close()
        ipt.close()

"""Each fault verb of `l3net lab` (:mod:`l3net.lab.faults`) on a running two-node-rr lab, shown by its effect
on real traffic and real BGP: a paused node's sessions time out at the hold timer (and come back on
unpause), `netem --loss 100` stops traffic and clearing it restores it, `netem --delay` delays it,
`link set down` takes the routes
through the interface away as the kernel does, `node stop|start|restart` and `lab status` following the
new PIDs, and `etcd stop|start|pause|unpause` on the lab's etcd.

One lab for the module (hold time 6 s, keepalive 2 s); every test leaves it as it found it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net import netns
from l3net.datastore import connect_from_env
from l3net.errors import DatastoreUnavailable
from l3net.lab import cgroups as cg
from l3net.lab import faults
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.runtime import bgp_table, http_get_in_netns
from tests.e2e.e2e_helpers import (
    Lab,
    l3net_routes,
    next_hops,
    ping,
    ping_stats,
    route_to,
    running_lab,
    start_ping_stream,
)
from tests.waiting import seconds_until

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root, pytest.mark.slow]

HOLD, KEEPALIVE = 6, 2
TIMERS = f"""\
apiVersion: l3net.io/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
  holdTime: {HOLD}s
  keepaliveTime: {KEEPALIVE}s
"""
N1, N2, RR = "10.0.0.11", "10.0.0.12", "10.0.0.2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab("two-node-rr", extra_manifests={"30-timers.yaml": TIMERS},
                     workdir=tmp_path_factory.mktemp("faults")) as lab:
        yield lab


@pytest.fixture
def pods(lab: Lab) -> dict[str, dict[str, object]]:
    """A pod on n1 and on n2, each routable from the other node (waits for it: an earlier test may have
    broken and repaired something)."""
    p = {"n1": lab.ensure_pod("n1", "default/f1"), "n2": lab.ensure_pod("n2", "default/f2")}
    assert seconds_until(lambda: route_to(lab.ns("n2"), str(p["n1"]["ip"])) is not None
                    and route_to(lab.ns("n1"), str(p["n2"]["ip"])) is not None, 60, 0.2) is not None
    assert ping(str(p["n2"]["netns"]), str(p["n1"]["ip"]), count=3)
    return p


def rr_peer_state(lab: Lab, peer: str) -> str:
    for p in bgp_table(lab.reload(), "rr1") or []:
        if str(p.get("peer") or p.get("address")) == peer:
            return str(p.get("state")).lower()
    return "absent"


def established(state: str) -> bool:
    return state in ("up", "established")


@contextlib.contextmanager
def restoring(lab: Lab) -> Iterator[None]:
    """Whatever a test broke is repaired at its end, even on failure, so the next test starts clean."""
    try:
        yield
    finally:
        state = lab.reload()
        for node in ("n1", "n2", "rr1"):
            with contextlib.suppress(LabError):
                faults.node_unpause(state, node)
            rec = state.data["nodes"][node]
            if not cg.populated(Path(rec["cgroup"])):
                faults.node_start(state, node)
        for ep in ("n1:eth1", "n2:eth1"):
            faults.link_set(state, ep, up=True)
            faults.netem_clear(state, ep)
        faults.etcd_unpause(state)
        faults.etcd_start(state)


def test_paused_node_sessions_time_out_at_the_hold_timer(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    state = lab.reload()
    assert established(rr_peer_state(lab, N1))
    with restoring(lab):
        paused_at = time.monotonic()
        faults.node_pause(state, "n1")
        assert faults.node_paused(state, "n1")
        # Every process of n1 is frozen: its agent answers nothing, but the kernel still forwards.
        with pytest.raises(OSError):
            http_get_in_netns(lab.ns("n1"), 9099, "/readiness", timeout=1.0)
        assert ping(str(pods["n2"]["netns"]), str(pods["n1"]["ip"]), count=2)
        down_after = seconds_until(lambda: not established(rr_peer_state(lab, N1)), HOLD + 30, 0.1)
        assert down_after is not None, f"rr1 still has n1 {rr_peer_state(lab, N1)} {HOLD + 30}s after the pause"
        elapsed = time.monotonic() - paused_at
        print(f"\nFIGURE pause -> rr1 session to n1 down: {elapsed:.1f}s (hold {HOLD}s, keepalive {KEEPALIVE}s)")
        # Not a reset: the session lasted at least a hold time minus one keepalive interval after the pause.
        assert elapsed >= HOLD - KEEPALIVE, elapsed
        faults.node_unpause(state, "n1")
        assert not faults.node_paused(state, "n1")
        assert seconds_until(lambda: established(rr_peer_state(lab, N1)), 60, 0.2) is not None
        assert seconds_until(lambda: ping(str(pods["n2"]["netns"]), str(pods["n1"]["ip"])), 30, 0.2) is not None
        code, _ = http_get_in_netns(lab.ns("n1"), 9099, "/liveness", timeout=5)
        assert code == 200


def test_netem_loss_100_stops_traffic_and_clearing_restores_it(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    state = lab.reload()
    src, dst = str(pods["n2"]["netns"]), str(pods["n1"]["ip"])
    with restoring(lab):
        how = faults.netem(state, "n1:eth1", loss_pct=100)
        assert how in ("tc-netem", "nft")
        stream = start_ping_stream(src, dst, 0.05, 2)
        stats = ping_stats(stream)
        assert stats.sent >= 10 and stats.received == 0, stats
        faults.netem_clear(state, "n1:eth1")
        stream = start_ping_stream(src, dst, 0.05, 2)
        stats = ping_stats(stream)
        assert stats.sent >= 10 and stats.lost == 0, stats
        # Partial loss is partial: some replies, some not (2 x 200 pings at 50 %).
        faults.netem(state, "n1:eth1", loss_pct=50)
        stats = ping_stats(start_ping_stream(src, dst, 0.01, 2))
        assert 0 < stats.received < stats.sent, stats


def rtts(ns: str, ip: str, count: int = 6) -> list[float]:
    out = subprocess.run(["nsenter", f"--net={netns.netns_path(ns)}", "--", "ping", "-n", "-c", str(count), "-i",
                          "0.1", "-W", "3", ip], capture_output=True, text=True, timeout=60).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def test_netem_delay_and_jitter_delay_what_the_interface_sends(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    src, dst = str(pods["n2"]["netns"]), str(pods["n1"]["ip"])
    with restoring(lab):
        # Through the CLI: n1's replies leave by n1:eth1 and wait there 100 ms +- 10 ms.
        result = lab.lab_cli("netem", "--lab", lab.name, "n1:eth1", "--delay", "100", "--jitter", "10")
        assert result.returncode == 0, result.stderr
        delayed = rtts(src, dst)
        assert len(delayed) == 6 and min(delayed) >= 90, delayed
        print(f"\nFIGURE netem delay 100ms jitter 10ms: rtt {min(delayed):.1f}-{max(delayed):.1f} ms")
        faults.netem_clear(lab.reload(), "n1:eth1")
        plain = rtts(src, dst)
        assert len(plain) == 6 and min(plain) < 90, plain


def test_netem_refuses_bad_values_and_unknown_interfaces(lab: Lab) -> None:
    state = lab.reload()
    with pytest.raises(LabError, match="loss 150"):
        faults.netem(state, "n1:eth1", loss_pct=150)
    with pytest.raises(LabError, match="jitter needs a delay"):
        faults.netem(state, "n1:eth1", jitter_ms=5)
    with pytest.raises(LabError, match="node n1 has no interface eth7"):
        faults.netem(state, "n1:eth7", loss_pct=10)
    with pytest.raises(LabError, match="expected NODE:INTERFACE"):
        faults.link_set(state, "n1", up=False)
    with pytest.raises(LabError, match="node 'nine': not a node of lab"):
        faults.node_pause(state, "nine")
    result = lab.lab_cli("netem", "--lab", lab.name, "n1:eth1", "--loss", "-3")
    assert result.returncode == 1 and "netem loss -3" in result.stderr and "Traceback" not in result.stderr


def test_link_down_drops_routes_through_it_as_the_kernel_does(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    state = lab.reload()
    n2_pod = str(pods["n2"]["ip"])
    assert N2 in next_hops(route_to(lab.ns("n1"), n2_pod))
    with restoring(lab):
        faults.link_set(state, "n1:eth1", up=False)
        # The kernel removed every route through eth1 at once, ours (protocol 76) included; no BGP involved.
        assert [r for r in l3net_routes(lab.ns("n1")) if r.get("dev") == "eth1"] == []
        assert route_to(lab.ns("n1"), n2_pod) is None
        assert not ping(str(pods["n1"]["netns"]), n2_pod, wait=0.5)
        # The other end lost carrier; rr1's session to n1 ends at its hold timer, as for a dead link.
        assert seconds_until(lambda: not established(rr_peer_state(lab, N1)), HOLD + 30, 0.2) is not None
        faults.link_set(state, "n1:eth1", up=True)
        assert seconds_until(lambda: established(rr_peer_state(lab, N1)), 60, 0.2) is not None
        assert seconds_until(lambda: route_to(lab.ns("n1"), n2_pod) is not None, 60, 0.2) is not None, \
            "n1 did not get its route to n2's pod back after the link came up"
        assert ping(str(pods["n1"]["netns"]), n2_pod, count=2)


def test_node_stop_start_restart_and_status_follows(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    state = lab.reload()
    old = lab.process("n1", "agent")
    with restoring(lab):
        n = faults.node_stop(state, "n1")
        assert n >= 2, "the agent and its ExaBGP at least"
        assert faults.node_pids(state, "n1") == [] and not st.is_alive(old)
        # Killed processes: the kernel closes n1's sessions, rr1 sees it without waiting for a hold timer.
        assert seconds_until(lambda: not established(rr_peer_state(lab, N1)), HOLD + 30, 0.1) is not None
        status = lab.lab_cli("status", lab.name)
        assert f"agent:{old['pid']}:DEAD" in status.stdout and "[0 in cgroup]" in status.stdout
        with pytest.raises(LabError, match="rr1 is running"):
            faults.node_start(state, "rr1")
        faults.node_start(state, "n1")
        new = lab.process("n1", "agent")
        assert new["pid"] != old["pid"] and st.is_alive(new)
        assert seconds_until(lambda: established(rr_peer_state(lab, N1)), 60, 0.2) is not None
        assert seconds_until(lambda: ping(str(pods["n2"]["netns"]), str(pods["n1"]["ip"])), 30, 0.2) is not None
        # The CLI verb: restart, then status shows the PID that runs now, up.
        result = lab.lab_cli("node", "restart", "n1", "--lab", lab.name, "--grace", "2")
        assert result.returncode == 0, result.stderr
        newest = lab.process("n1", "agent")
        assert newest["pid"] not in (old["pid"], new["pid"]) and st.is_alive(newest)
        assert re.search(rf"agent:{newest['pid']}:up \[\d+ in cgroup\]", lab.lab_cli("status", lab.name).stdout)
        assert seconds_until(lambda: established(rr_peer_state(lab, N1)), 60, 0.2) is not None


def test_etcd_pause_stop_start_unpause(lab: Lab, pods: dict[str, dict[str, object]]) -> None:
    state = lab.reload()
    assert faults.etcd_members(state) == ["e1"]
    ds = connect_from_env(lab.endpoints)
    key = f"/lab-faults-test/{lab.name}"
    try:
        ds.put(key, b"kept")
        stream = start_ping_stream(str(pods["n2"]["netns"]), str(pods["n1"]["ip"]), 0.05, 12)
        with restoring(lab):
            faults.etcd_pause(state)
            assert faults.etcd_member_state(state, "e1") == "paused"
            # Hung, not gone: the socket accepts, nothing answers (the client's read timeout ends the wait).
            with pytest.raises(DatastoreUnavailable, match=r"timed out"):
                ds.get(key)
            faults.etcd_unpause(state)
            assert ds.get(key).value == b"kept"
            faults.etcd_stop(state, "e1")
            assert faults.etcd_member_state(state, "e1") == "stopped" and faults.etcd_pids(state, "e1") == []
            with pytest.raises(DatastoreUnavailable):
                ds.get(key)
            faults.etcd_start(state)
            assert ds.get(key).value == b"kept", "the member restarted on its data"
            # The lab's clients carry on: a pod added now is routable from the other node.
            late = lab.ensure_pod("n1", "default/after-etcd")
            assert seconds_until(lambda: ping(str(pods["n2"]["netns"]), str(late["ip"])), 30, 0.2) is not None
        # The data plane never depended on etcd: no ping lost while it was paused and stopped.
        stats = ping_stats(stream)
        assert stats.lost == 0, stats
    finally:
        with contextlib.suppress(DatastoreUnavailable):
            ds.delete(key)
        ds.close()

"""The distributed engine (issue 12): dual-rr on a 3-member etcd. Kill the leader's process; later restart
it and kill a follower. Agents, reflectors, the CNI plugin and `l3netctl` keep working (a pod added after
each kill is reachable from the other nodes; `l3netctl` reads and writes), and a continuous 100 pps
cross-node ping loses nothing. Every fault is a `l3net lab etcd` verb a user can repeat by hand.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from l3net import netns
from l3net.lab import faults
from l3net.lab import state as st
from tests.e2e.e2e_helpers import Lab, ping, route_to, running_lab
from tests.waiting import seconds_until

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root, pytest.mark.needs_etcd, pytest.mark.slow]

WORKERS = ("n1", "n2", "n3")
REFLECTORS = ("rr1", "rr2")
POOL = """\
apiVersion: l3net.io/v1
kind: IPPool
metadata:
  name: drill-{n}
spec:
  cidr: 10.250.{n}.0/24
  disabled: true
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("dual-rr", etcd_members=3) as lab:
        yield lab


class PingStream:
    """``ping -i 0.01`` in ``ns`` until :meth:`stop`; reports the sequence numbers without a reply.

    The one echo still in flight when the stream is stopped is not a loss: only gaps before the last
    sequence number sent count.
    """

    def __init__(self, ns: str, ip: str) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net={netns.netns_path(ns)}", "--", "ping", "-n", "-i", "0.01",
                                      ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, list[int]]:
        """(echo requests sent, sequence numbers lost)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # ping prints its summary and exits
        out, _ = self.proc.communicate(timeout=30)
        m = re.search(r"(\d+) packets transmitted", out)
        assert m, out[-500:]
        sent = int(m.group(1))
        replied = {int(x) for x in re.findall(r"icmp_seq=(\d+) ttl=", out)}
        return sent, [seq for seq in range(1, sent) if seq not in replied]


def every_process_alive(lab: Lab) -> dict[str, bool]:
    state = lab.reload()
    return {f"{p['node']}/{p['what']}": st.is_alive(p) for p in state.data["processes"]
            if p["node"] in WORKERS + REFLECTORS}


def check_clients_work(lab: Lab, step: int, pod_node: str) -> None:
    """l3netctl reads and writes, and a pod added through the CNI is reachable from every other node."""
    got = lab.ctl("get", "nodes")
    assert got.returncode == 0, got.stderr
    assert all(n in got.stdout for n in WORKERS), got.stdout
    applied = lab.ctl("apply", "-f", "-", stdin=POOL.format(n=step))
    assert applied.returncode == 0, applied.stderr
    pod = lab.add_pod(pod_node, f"default/drill{step}")
    ip = str(pod["ip"])
    for node in WORKERS:
        if node == pod_node:
            continue
        src = str(lab.pods[f"default/w{node}"]["netns"])
        assert seconds_until(lambda n=node: route_to(lab.ns(n), ip) is not None, 30, 0.1) is not None, \
            f"{node} has no route to {ip} (pod on {pod_node}, step {step})"
        assert seconds_until(lambda s=src: ping(s, ip), 30, 0.2) is not None, f"{node} cannot reach {ip}"


def test_leader_then_follower_killed_nothing_lost(lab: Lab) -> None:
    state = lab.reload()
    assert faults.etcd_members(state) == ["e1", "e2", "e3"]
    assert lab.endpoints.count("unix://") == 3, lab.endpoints
    for node in WORKERS:
        assert lab.reload().data["nodes"][node]["env"]["L3NET_ETCD_ENDPOINTS"] == lab.endpoints
    pods = {n: lab.ensure_pod(n, f"default/w{n}") for n in WORKERS}
    assert seconds_until(lambda: all(route_to(lab.ns(a), str(pods[b]["ip"])) is not None
                                for a in WORKERS for b in WORKERS if a != b), 60, 0.2) is not None
    streams = [PingStream(str(pods["n2"]["netns"]), str(pods["n1"]["ip"])),
               PingStream(str(pods["n3"]["netns"]), str(pods["n1"]["ip"]))]
    started = time.monotonic()
    try:
        time.sleep(1)
        leader = faults.etcd_leader(state)
        faults.etcd_stop(state, leader)  # SIGKILL to the leader's process
        killed_leader = time.monotonic()
        new_leader = faults.etcd_leader(state, timeout=30)
        print(f"\nFIGURE etcd leader {leader} killed -> {new_leader} leads after "
              f"{time.monotonic() - killed_leader:.2f}s")
        assert new_leader != leader
        check_clients_work(lab, 1, "n1")

        faults.etcd_start(state, leader)
        assert faults.etcd_member_state(state, leader) == "running"
        follower = next(m for m in faults.etcd_members(state) if m != faults.etcd_leader(state, timeout=30))
        faults.etcd_stop(state, follower)
        check_clients_work(lab, 2, "n3")
        faults.etcd_start(state, follower)
        time.sleep(1)
        alive = every_process_alive(lab)
    finally:
        results = [s.stop() for s in streams]
    print(f"FIGURE 3-member drill: {time.monotonic() - started:.1f}s, "
          + ", ".join(f"{sent} pings sent, {len(lost)} lost" for sent, lost in results))
    for sent, lost in results:
        # The streams ran from before the first kill to after the last check (seconds at 100 pps).
        assert sent >= 100 and lost == [], (sent, lost[:20])
    dead = [k for k, v in alive.items() if not v]
    assert not dead, "died during the drill: " + "; ".join(f"{k}: ...{lab.log(*k.split('/'))[-1500:]}" for k in dead)

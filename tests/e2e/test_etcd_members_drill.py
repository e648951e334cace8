"""Issue 12 with a 3-member etcd (``L3NET_LAB_ETCD_MEMBERS=3``) on the dual-rr lab: kill the leader's
process; later start it again and kill a follower. Agents, reflectors, the CNI plugin and ``l3netctl``
fail over between members: a pod added after each kill is reachable from the other nodes, l3netctl
answers, no packet of the 100 pps streams is lost and no kernel route changes (but the new pods' own).
Driven through the lab's fault verbs (``l3net lab etcd stop|start [MEMBER]`` by hand).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from l3net.lab import faults
from l3net.lab import state as st
from l3net.model.validation import host_veth_name
from tests.e2e.e2e_helpers import (
    REFLECTORS,
    WORKERS,
    Lab,
    ping_stats,
    ping_stream,
    ping_until_reply,
    route_to,
    running_lab,
)
from tests.route_monitor import RouteMonitor
from tests.waiting import seconds_until

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root, pytest.mark.slow]

# No bound in the issue for this one; generous for a loaded machine, the figure is printed.
NEW_POD_REACHABLE_WITHIN = 10.0


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    with running_lab("dual-rr", timeout=120, etcd_members=3) as lab:
        yield lab


def add_reachable_pod(lab: Lab, node: str, pods: dict, figures: dict, label: str) -> tuple[str, str]:
    name = f"{label}-{uuid.uuid4().hex[:4]}"
    t0 = time.monotonic()
    new = lab.add_pod(node, f"default/{name}")
    added = time.monotonic()
    ip = str(new["ip"])
    probes = {n: ping_until_reply(str(pods[n]["netns"]), ip, 30) for n in WORKERS if n != node}
    first: dict[str, float | None] = {}
    while len(first) < len(probes):
        for n, p in probes.items():
            if n not in first and p.poll() is not None:
                first[n] = round(time.monotonic() - added, 2) if p.returncode == 0 else None
        time.sleep(0.005)
    figures[f"{label}: CNI ADD took (s)"] = round(added - t0, 2)
    figures[f"{label}: new pod's first reply from the other nodes (s after ADD)"] = first
    assert all(t is not None and t <= NEW_POD_REACHABLE_WITHIN for t in first.values()), first
    return ip, host_veth_name("default", name)


def test_leader_then_follower_killed(lab3: Lab) -> None:
    lab, state = lab3, lab3.state
    assert faults.etcd_members(state) == ["e1", "e2", "e3"]
    pods = {n: lab.ensure_pod(n, f"default/m-{n}") for n in WORKERS}
    assert seconds_until(lambda: all(route_to(lab.ns(a), str(pods[b]["ip"])) is not None
                                for a in WORKERS for b in WORKERS if a != b), 60, 0.2) is not None
    time.sleep(3.0)  # new pod veths finish IPv6 DAD (the kernel's own fe80 routes) before routes are watched
    daemons = [lab.process(rr, "route-reflector") for rr in REFLECTORS] + [lab.process(n, "agent") for n in WORKERS]
    monitors = {n: RouteMonitor(lab.ns(n)) for n in WORKERS}
    streams = {(a, b): ping_stream(lab, str(pods[a]["netns"]), str(pods[b]["ip"]))
               for a, b in (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))}
    figures: dict[str, object] = {}
    ours: list[tuple[str, str]] = []
    try:
        time.sleep(1.0)
        leader = faults.etcd_leader(state)
        faults.etcd_stop(state, leader)
        figures["killed leader"] = leader
        ours.append(add_reachable_pod(lab, "n1", pods, figures, "after-leader-kill"))
        res = lab.ctl("get", "nodes")
        assert res.returncode == 0 and "n1" in res.stdout, res.stderr
        time.sleep(2.0)

        faults.etcd_start(state, leader)
        follower = next(m for m in faults.etcd_members(state) if m != faults.etcd_leader(state))
        faults.etcd_stop(state, follower)
        figures["killed follower"] = follower
        ours.append(add_reachable_pod(lab, "n3", pods, figures, "after-follower-kill"))
        res = lab.ctl("get", "nodes")
        assert res.returncode == 0 and "n3" in res.stdout, res.stderr
        time.sleep(2.0)
        faults.etcd_start(state, follower)
        assert all(st.is_alive(p) for p in daemons), "an agent or a reflector died"
    finally:
        for p in streams.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        stats = {f"{a}->{b}": ping_stats(p) for (a, b), p in streams.items()}
        changes = {n: m.stop() for n, m in monitors.items()}
        for m in faults.etcd_members(state):
            if faults.etcd_member_state(state, m) == "stopped":
                faults.etcd_start(state, m)
    figures.update({f"ping {k}": f"{s.sent} sent, {s.lost} lost" for k, s in stats.items()})
    for name, value in figures.items():
        print(f"\nFIGURE {name}: {value}")
    assert all(s.lost == 0 for s in stats.values()), stats
    foreign = {n: [x for x in lines if not any(ip in x or f" dev {ifname} " in x for ip, ifname in ours)]
               for n, lines in changes.items()}
    assert foreign == {n: [] for n in WORKERS}, f"kernel routes changed: {foreign}"

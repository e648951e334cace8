"""Every shipped topology end to end: up, one pod per l3net node through l3net-cni, every pair pings,
each node has a route to every other node's pod, and `lab down` leaves no namespace and no run dir."""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3net import netns
from l3net.lab import state as st
from l3net.lab.pods import add_pod, del_pod
from l3net.lab.runtime import LabRuntime, down
from l3net.lab.topology import Topology, load_topology
from tests.e2e.e2e_helpers import route_to

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = ["two-node-rr", "mesh3", "dual-rr", "leaf-spine", "bird-rr", "dual-rr-bird"]


@pytest.fixture
def run_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = Path("/run/l3net") / f"te{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(st.RUN_BASE_ENV, str(base))
    monkeypatch.delenv("L3NET_ETCD_ENDPOINTS", raising=False)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def unique(topo: Topology) -> Topology:
    """The shipped file under a unique lab name, so a running demo is never touched."""
    import dataclasses

    return dataclasses.replace(topo, name=f"{topo.name[:8]}-{uuid.uuid4().hex[:4]}")


def ping(ns: str, ip: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", "-q", ip],
                          capture_output=True).returncode == 0


def _sh(ns: str, argv: list[str]) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip()


def diagnose(failures: list[str], topo: Topology, workers: list[str], pods: dict[str, dict[str, Any]],
             state: st.LabState) -> str:
    """Kernel state of every node and pod at the moment a ping failed, and the agents' logs."""
    t0 = time.strftime("%H:%M:%S")
    out = [f"FAILED {failures} at {t0}"]
    for (a, pa), (b, pb) in itertools.permutations(pods.items(), 2):
        out.append(f"retry {a} -> {b}: {ping(pa['netns'], pb['ip'])}")
    for node in workers:
        ns = topo.node_netns(node)
        for argv in (["ip", "-d", "route", "show", "table", "all"], ["ip", "neigh"], ["ip", "-br", "link"],
                     ["iptables-save", "-c"], ["ipset", "list"], ["conntrack", "-L"],
                     ["sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"]):
            out.append(f"--- {node}: {' '.join(argv)}\n{_sh(ns, argv)}")
    for key, pod in pods.items():
        for argv in (["ip", "addr"], ["ip", "route"], ["ip", "neigh"]):
            out.append(f"--- pod {key}: {' '.join(argv)}\n{_sh(pod['netns'], argv)}")
    # The lines that name a known cause, first: an ADD that returned before the agent programmed the
    # pod (policy_setup_timeout_seconds ran out), a failed apply, a BGP session that went down.
    notable = ("policy setup not done", "dataplane apply failed", "state=down", "speaker restart", "quarantin")
    causes: list[str] = []
    for proc in state.data.get("processes", []):
        log = Path(proc.get("log") or "")
        if log.is_file():
            lines = log.read_text(errors="replace").splitlines()
            causes += [f"{log.name}: {line}" for line in lines if any(n in line for n in notable)]
            out.append(f"--- log {log.name}\n" + "\n".join(lines[-150:]))
    out.insert(1, "notable log lines:\n" + ("\n".join(causes[-40:]) or "(none)"))
    text = "\n".join(out)
    dump = Path("/tmp") / f"flake-diag-{topo.name}-{uuid.uuid4().hex[:4]}.txt"
    dump.write_text(text)
    return f"{failures}; diagnostics in {dump}\n{text[:4000]}"


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_shipped_topology_pods_reach_each_other(name: str, run_base: Path) -> None:
    if shutil.which("exabgp") is None and not (Path(__import__("sys").executable).parent / "exabgp").exists():
        pytest.skip("ExaBGP is not installed")
    if name in ("leaf-spine", "bird-rr", "dual-rr-bird") and shutil.which("bird") is None:
        pytest.skip("BIRD is not installed (apt-get install bird2)")
    topo = unique(load_topology(REPO / "topologies" / f"{name}.clab.yml"))
    messages: list[str] = []
    try:
        state = LabRuntime(topo, out=messages.append).up(wait_bgp=True, timeout=60)
        assert any("every session established" in m for m in messages), messages
        workers = [n.name for n in topo.nodes.values() if n.role == "node"]
        pods = {}
        for i, node in enumerate(workers):
            rec = add_pod(state, node, f"default/p{i}", {"app": f"p{i}"})
            assert rec["ip"] and ipaddress.ip_address(rec["ip"]) in ipaddress.ip_network("10.244.0.0/16")
            pods[f"default/p{i}"] = rec
        state = st.LabState.load(topo.name)
        assert state is not None
        # routes: each node reaches each other node's pod through a route l3net wrote (proto 76)
        deadline = time.monotonic() + 20
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = []
            for node, (_key, pod) in itertools.product(workers, pods.items()):
                if pod["node"] == node:
                    continue
                # Not `ip route get`: every node also has a default route via the management network.
                if route_to(topo.node_netns(node), pod["ip"]) is None:
                    missing.append(f"{node} -> {pod['ip']}")
            if not missing:
                break
            time.sleep(0.5)
        assert not missing, missing
        # every pair of pods pings (both directions)
        failures = [f"{a} -> {b}" for (a, pa), (b, pb) in itertools.permutations(pods.items(), 2)
                    if not ping(pa["netns"], pb["ip"])]
        assert not failures, diagnose(failures, topo, workers, pods, state)
        if name == "leaf-spine":
            # pods in the other rack are reached over both spines (ECMP)
            routes = netns.run(topo.node_netns("n1"), ["ip", "route", "show", "proto", "76"]).stdout
            rack2 = [p for p in pods.values() if p["node"] in ("n3", "n4")]
            assert rack2, pods
            assert "nexthop via 10.1.1.1" in routes and "nexthop via 10.1.1.2" in routes, routes
        del_pod(state, "default/p0")
        assert not netns.exists(pods["default/p0"]["netns"])
    finally:
        leftovers = down(topo.name, topo, out=lambda _m: None)
    assert not leftovers
    assert [n for n in netns.list_names() if n.startswith(f"clab-{topo.name}")] == []
    assert not st.lab_dir(topo.name).exists()

"""The lab owns every process a topology starts: `lab down` leaves no process, namespace, link, mount,
cgroup or file behind, for processes started through `cmd:` and `exec:` lines that background
themselves, double-fork into a new session or even leave the node's network namespace.
Also after the `lab up` process itself was killed half-way."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net import netns
from l3net.lab import cgroups as cg
from l3net.lab import faults
from l3net.lab import state as st
from l3net.lab.runtime import LabRuntime, down
from l3net.lab.topology import load_topology
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

L3NET = [sys.executable, "-m", "l3net.cli.agent_main"]

# Each sleep runs for a unique duration (GNU sleep takes fractions), so any leftover is found by its
# command line and never confused with another test's processes. {slow} is a last exec line that blocks.
TOPOLOGY = """
name: {name}
mgmt:
  ipv4-subnet: 172.30.78.0/24
topology:
  nodes:
    a:
      kind: linux
      binds:
        - bound.txt:/etc/hostname:ro
      cmd: sleep {d}1
      exec:
        - sh -c "nohup sleep {d}2 >/dev/null 2>&1 &"
        - sh -c "(setsid sh -c 'sleep {d}3; true' </dev/null >/dev/null 2>&1 &); true"
        - sh -c "(unshare --net sleep {d}4 </dev/null >/dev/null 2>&1 &); true"
    b:
      kind: linux
      exec:
        - sh -c "(setsid nohup sleep {d}5 </dev/null >/dev/null 2>&1 &); true"
        - "{slow}"
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: ["10.78.0.0/31", "10.78.0.1/31"]
"""
SLEEPS = 5


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, str]]:
    """Lab name, topology folder and the unique sleep-duration stem; everything removed at the end."""
    name = "lo" + uuid.uuid4().hex[:6]
    base = Path("/run/l3net") / f"t{name}"
    monkeypatch.setenv(st.RUN_BASE_ENV, str(base))
    monkeypatch.delenv("L3NET_ETCD_ENDPOINTS", raising=False)
    (tmp_path / "bound.txt").write_text(f"bound-{name}\n")
    stem = f"7{random.randrange(10**5, 10**6)}.{random.randrange(10**5, 10**6)}"
    try:
        yield name, tmp_path, stem
    finally:
        down(name, out=lambda _m: None)
        for pid in marked_pids(stem):  # only if the test failed: ours by their unique argv
            os.kill(pid, signal.SIGKILL)
        for ns_name in netns.list_names():
            if ns_name.startswith(f"clab-{name}-"):
                netns.delete(ns_name)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def write_topology(folder: Path, name: str, stem: str, slow: str = "true") -> Path:
    path = folder / f"{name}.clab.yml"
    path.write_text(TOPOLOGY.format(name=name, d=stem, slow=slow))
    return path


def marked_pids(stem: str, sleeps_only: bool = False) -> list[int]:
    """Live processes whose command line holds ``stem`` (with ``sleeps_only``: the sleeps themselves)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = st.cmdline(int(entry))
        if any(stem in a for a in argv) and st.starttime(int(entry)) and (not sleeps_only or argv[0] == "sleep"):
            pids.append(int(entry))
    return pids


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def assert_nothing_left(name: str, stem: str, links_before: set[str], cgroup: str, etcd_data: str) -> None:
    assert marked_pids(stem) == [], "processes of the lab survived `lab down`"
    assert [n for n in netns.list_names() if n.startswith(f"clab-{name}-")] == []
    assert root_links() <= links_before, "an interface appeared in the root namespace"
    assert str(st.lab_dir(name)) not in Path("/proc/self/mountinfo").read_text()
    assert not st.lab_dir(name).exists()
    assert not Path(cgroup).exists()
    assert not Path(etcd_data).exists()


def up_down_cycles(name: str, folder: Path, stem: str, cycles: int) -> None:
    topo = load_topology(write_topology(folder, name, stem))
    links_before = root_links()
    for i in range(cycles):
        state = LabRuntime(topo, out=lambda _m: None).up(wait_bgp=False)
        group = Path(state.data["cgroup"])
        pids = wait_for(lambda: len(m := marked_pids(stem, True)) == SLEEPS and m, 10,
                              f"cycle {i}: the {SLEEPS} sleeps to run")
        # Every one of them is in its node's cgroup, although two left their session and one its netns.
        in_groups = set(cg.pids(group))
        assert set(pids) <= in_groups, (pids, in_groups)
        escaped = [p for p in pids if p not in st.pids_in_netns(netns.netns_path(topo.node_netns("a")))
                   and p not in st.pids_in_netns(netns.netns_path(topo.node_netns("b")))]
        assert len(escaped) == 1, "the `unshare --net` sleep should be outside every lab namespace"
        if i == 1:
            # A lab with a paused node and a paused etcd comes down all the same.
            faults.node_pause(state, "a")
            faults.etcd_pause(state)
        result = subprocess.run([*L3NET, "lab", "down", name], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert_nothing_left(name, stem, links_before, str(group), state.data["etcd"]["data_dir"])


def test_up_down_three_times_leaves_nothing(lab_env: tuple[str, Path, str]) -> None:
    up_down_cycles(*lab_env, cycles=3)


@pytest.mark.soak
def test_up_down_twenty_times_leaves_nothing(lab_env: tuple[str, Path, str]) -> None:
    started = time.monotonic()
    up_down_cycles(*lab_env, cycles=20)
    print(f"20 up/down cycles in {time.monotonic() - started:.1f}s")


def test_down_after_lab_up_was_killed_ends_double_forked_processes(lab_env: tuple[str, Path, str]) -> None:
    name, folder, stem = lab_env
    path = write_topology(folder, name, stem, slow="sleep 120")
    links_before = root_links()
    up = subprocess.Popen([*L3NET, "lab", "up", "--no-wait", str(path)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(marked_pids(stem, True)) == SLEEPS, 30, "the exec lines before the blocking one")
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    state = st.LabState.load(name)
    assert state is not None and state.data["phase"] == "creating"
    result = subprocess.run([*L3NET, "lab", "down", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_nothing_left(name, stem, links_before, state.data["cgroup"], state.data["etcd"]["data_dir"])


def test_failed_up_removes_what_it_created(lab_env: tuple[str, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab up` fails after every node's processes started (the wait for readiness raises): it removes
    everything itself, the double-forked and namespace-escaped processes included."""
    name, folder, stem = lab_env
    topo = load_topology(write_topology(folder, name, stem))
    links_before = root_links()
    seen: dict[str, object] = {}

    def failing_wait(state: st.LabState, **_kw: object) -> bool:
        wait_for(lambda: len(marked_pids(stem, True)) == SLEEPS, 10, "the sleeps to run")
        seen.update(cgroup=state.data["cgroup"], etcd=state.data["etcd"]["data_dir"])
        raise RuntimeError("injected: readiness wait failed")

    monkeypatch.setattr("l3net.lab.runtime.wait_ready", failing_wait)
    with pytest.raises(RuntimeError, match="injected"):
        LabRuntime(topo, out=lambda _m: None).up(wait_bgp=True)
    assert seen, "the failure was not injected after the processes started"
    assert_nothing_left(name, stem, links_before, str(seen["cgroup"]), str(seen["etcd"]))

"""The lab runtime on real namespaces with plain linux nodes (no agent): links, mgmt, exec, sysctls,
binds, cmd, env, and `lab down` leaving nothing behind, also after the lab's own process was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net import netns
from l3net.lab import checks
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.runtime import LabRuntime, _ip, down
from l3net.lab.topology import load_topology
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

L3NET = [sys.executable, "-m", "l3net.cli.agent_main"]

TOPOLOGY = """
name: {name}
mgmt:
  ipv4-subnet: 172.30.77.0/24
topology:
  defaults:
    kind: linux
    env:
      GREETING: ${{LT_GREETING:=hello}}
  groups:
    routers:
      sysctls:
        net.ipv4.ip_forward: 1
  nodes:
    a:
      group: routers
      binds:
        - bound.txt:{bind_target}:ro
      cmd: sh -c "echo $$GREETING > greet.txt; exec sleep 600"
      exec:
        - ip addr add 192.168.50.1/24 dev eth2
    b:
      mgmt-ipv4: 172.30.77.50
      exec:
        - ip addr add 192.168.50.2/24 dev eth2
        - "{slow_exec}"
    sw:
      kind: bridge
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: ["10.77.0.0/31", "10.77.0.1/31"]
    - endpoints: ["a:eth2", "sw:pa"]
    - endpoints: ["b:eth2", "sw:pb"]
"""


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A unique lab name, its topology folder, and a private run base; everything removed at the end."""
    name = "lt" + uuid.uuid4().hex[:6]
    base = Path("/run/l3net") / f"t{name}"
    monkeypatch.setenv(st.RUN_BASE_ENV, str(base))
    monkeypatch.delenv("L3NET_ETCD_ENDPOINTS", raising=False)
    (tmp_path / "bound.txt").write_text(f"bound-{name}\n")
    try:
        yield name, tmp_path
    finally:
        down(name, out=lambda _m: None)
        for ns_name in netns.list_names():
            if f"-{name}-" in ns_name or ns_name.startswith(f"clab-{name}"):
                netns.delete(ns_name)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def write_topology(folder: Path, name: str, slow_exec: str = "true") -> Path:
    # /etc/hostname exists on every Debian machine; the bind hides it inside node a only.
    path = folder / f"{name}.clab.yml"
    path.write_text(TOPOLOGY.format(name=name, bind_target="/etc/hostname", slow_exec=slow_exec))
    return path


def lab_netns(name: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(f"clab-{name}-")]


def run_in(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return netns.run(ns, list(cmd), check=False)


def test_up_builds_nodes_links_mgmt_and_processes_then_down_removes_all(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    topo = load_topology(write_topology(folder, name))
    state = LabRuntime(topo, out=lambda _m: None).up(wait_bgp=False)
    a, b = topo.node_netns("a"), topo.node_netns("b")
    assert set(lab_netns(name)) == {a, b, topo.node_netns("sw"), topo.mgmt_netns}

    # point-to-point link with addresses from the link's ipv4 list
    assert run_in(a, "ping", "-c1", "-W2", "10.77.0.1").returncode == 0
    assert checks.ping(a, "10.77.0.1") and not checks.ping(a, "10.77.0.9", timeout=0.3)
    # the bridge node switches between a:eth2 and b:eth2 (addresses set by exec lines)
    assert run_in(a, "ping", "-c1", "-W2", "192.168.50.2").returncode == 0
    assert "master sw" in run_in(topo.node_netns("sw"), "ip", "-o", "link", "show", "pa").stdout
    # management network: eth0 addresses, gateway on the mgmt bridge, default route through it
    assert "172.30.77.50/24" in run_in(b, "ip", "-o", "addr", "show", "eth0").stdout
    assert run_in(a, "ping", "-c1", "-W2", "172.30.77.50").returncode == 0
    assert run_in(a, "ping", "-c1", "-W2", "172.30.77.1").returncode == 0
    assert "default via 172.30.77.1 dev eth0" in run_in(a, "ip", "route").stdout
    # sysctls from the group, per namespace only
    assert netns.read_sysctl("net.ipv4.ip_forward", a) == "1"
    assert netns.read_sysctl("net.ipv4.ip_forward", b) == "0"
    # cmd runs with the node's env in the node's directory; binds are visible to the node only
    greet = Path(state.data["nodes"]["a"]["cwd"]) / "greet.txt"
    wait_for(greet.exists, 10, f"the node's cmd to write {greet}")
    assert greet.read_text().strip() == "hello"
    exec_a = subprocess.run([*L3NET, "lab", "exec", "--lab", name, "a", "--", "cat", "/etc/hostname"],
                            capture_output=True, text=True, env=os.environ.copy())
    assert exec_a.stdout.strip() == f"bound-{name}", exec_a.stderr
    assert Path("/etc/hostname").read_text().strip() != f"bound-{name}"
    exec_b = subprocess.run([*L3NET, "lab", "exec", "--lab", name, "b", "--", "ip", "-o", "addr", "show", "eth1"],
                            capture_output=True, text=True)
    assert "10.77.0.1/31" in exec_b.stdout
    procs = state.data["processes"]
    assert [p["what"] for p in procs] == ["cmd"] and st.is_alive(procs[0])
    status = subprocess.run([*L3NET, "lab", "status", name], capture_output=True, text=True)
    assert f"cmd:{procs[0]['pid']}:up" in status.stdout

    result = subprocess.run([*L3NET, "lab", "down", name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert lab_netns(name) == []
    assert not st.lab_dir(name).exists()
    assert not st.is_alive(procs[0])
    assert str(st.lab_dir(name)) not in Path("/proc/self/mountinfo").read_text()


def test_down_after_the_lab_process_was_killed(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    # node b's last exec line blocks, so `lab up` is killed mid-way with namespaces, a cmd process,
    # a bind mount namespace and etcd already created.
    path = write_topology(folder, name, slow_exec="sleep 120")
    up = subprocess.Popen([*L3NET, "lab", "up", "--no-wait", str(path)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        state = wait_for(lambda: (s := st.LabState.load(name)) is not None and s.data["processes"] and s, 30,
                         "lab up to get as far as its processes", step=0.1)
        time.sleep(0.5)  # into the blocking exec line
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    cmd_proc = state.data["processes"][0]
    assert st.is_alive(cmd_proc) and lab_netns(name)
    etcd_pid = int((st.lab_dir(name) / "etcd.pid").read_text())

    result = subprocess.run([*L3NET, "lab", "down", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert lab_netns(name) == []
    assert not st.lab_dir(name).exists()
    assert not st.is_alive(cmd_proc)
    assert st.starttime(etcd_pid) is None or b"etcd" not in Path(f"/proc/{etcd_pid}/cmdline").read_bytes()
    assert str(st.lab_dir(name)) not in Path("/proc/self/mountinfo").read_text()


def test_invalid_topology_refused_before_anything_is_created(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    path = folder / "bad.clab.yml"
    path.write_text(f"name: {name}\ntopology:\n  nodes:\n    a: {{kind: linux}}\n  links:\n"
                    "    - endpoints: [a:eth1, ghost:eth1]\n")
    before = netns.list_names()
    result = subprocess.run([*L3NET, "lab", "up", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{path}: topology.links[0].endpoints[1]: unknown node 'ghost'" in result.stderr
    assert netns.list_names() == before
    assert not st.lab_dir(name).exists()


def test_second_up_of_a_running_lab_is_refused(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    topo = load_topology(write_topology(folder, name))
    LabRuntime(topo, out=lambda _m: None).up(wait_bgp=False)
    result = subprocess.run([*L3NET, "lab", "up", "--no-wait", topo.path], capture_output=True, text=True)
    assert result.returncode == 1 and "already up" in result.stderr
    assert len(lab_netns(name)) == 4


def test_ip_refuses_a_call_without_its_namespace() -> None:
    """The lab never runs ip in the root namespace: a call not starting with -n NS is refused unrun."""
    for args in (("link", "show"), ("-n",), ("-n", "", "link"), ("link", "-n", "x")):
        with pytest.raises(LabError, match="-n NAMESPACE"):
            _ip(*args)


def test_wait_for_returns_the_value_or_names_what_timed_out() -> None:
    calls = iter([0, None, "ready"])
    assert checks.wait_for(lambda: next(calls), 5, "the third call", interval=0.01) == "ready"
    with pytest.raises(TimeoutError, match="the impossible"):
        checks.wait_for(lambda: False, 0.05, "the impossible", interval=0.01)

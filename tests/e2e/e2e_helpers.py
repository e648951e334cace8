"""Shared helpers for the end-to-end tests: one running lab per test class or module, driven only through
the real parts (``l3net lab``, ``l3net-cni``, the agents, ``l3netctl``) and observed from the outside
(kernel routes, packets on the fabric, TCP connections between pod namespaces).

Everything a helper starts is recorded and ended by PID; every lab runs under a private run directory
with a unique name, so a demo lab or another test's lab is never touched. Nothing here writes to the
host's root namespace: commands run in the lab's namespaces (``ip -n``, ``nsenter --net``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from l3net import netns
from l3net.lab import procs
from l3net.lab import state as st
from l3net.lab.pods import add_pod
from l3net.lab.runtime import LabRuntime, down
from l3net.lab.topology import Topology, load_topology

_log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"
L3NET = [sys.executable, "-m", "l3net.cli.agent_main"]
L3NETCTL = [sys.executable, "-m", "l3net.cli.ctl"]
ROUTE_PROTO = "76"
# the dual-rr topology's workers and route reflectors
WORKERS = ("n1", "n2", "n3")
REFLECTORS = ("rr1", "rr2")


def exabgp_available() -> bool:
    return shutil.which("exabgp") is not None or (Path(sys.executable).parent / "exabgp").exists()


# -- a lab ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Lab:
    """One running lab (its topology, its state record and the pods tests added).

    Not thread-safe. Every query goes to the kernel or the datastore afresh; nothing is cached but the
    pod records that ``add_pod`` returned.
    """

    topo: Topology
    state: st.LabState
    run_base: Path
    pods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    helpers: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def endpoints(self) -> str:
        return self.state.etcd_endpoints

    def ns(self, node: str) -> str:
        return self.topo.node_netns(node)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[st.RUN_BASE_ENV] = str(self.run_base)
        env["L3NET_ETCD_ENDPOINTS"] = self.endpoints
        return env

    def reload(self) -> st.LabState:
        fresh = st.LabState.load(self.name)
        assert fresh is not None, f"lab {self.name} has no state any more"
        self.state = fresh
        return fresh

    # -- pods ----------------------------------------------------------------------------------------
    def add_pod(self, node: str, ref: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Create pod ``ref`` on ``node`` through l3net-cni (as a runtime does); returns its record."""
        rec = add_pod(self.state, node, ref, labels or {})
        self.pods[ref] = dict(rec)
        return self.pods[ref]

    def ensure_pod(self, node: str, ref: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        if ref in self.pods:
            assert self.pods[ref]["node"] == node, (ref, self.pods[ref])
            return self.pods[ref]
        return self.add_pod(node, ref, labels)

    # -- commands ------------------------------------------------------------------------------------
    def ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``l3netctl ARGS`` against the lab's etcd (its unix socket: reachable from the root namespace)."""
        return subprocess.run([*L3NETCTL, *args], input=stdin, capture_output=True, text=True, env=self.env(),
                              timeout=60)

    def lab_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``l3net lab ARGS`` with this lab's run directory and etcd in the environment."""
        return subprocess.run([*L3NET, "lab", *args], capture_output=True, text=True, env=self.env(), timeout=120)

    def lab_exec_argv(self, target: str, *cmd: str) -> list[str]:
        return [*L3NET, "lab", "exec", "--lab", self.name, target, "--", *cmd]

    # -- processes -----------------------------------------------------------------------------------
    def process(self, node: str, what: str) -> dict[str, Any]:
        procs = [p for p in self.reload().data["processes"] if p["node"] == node and p["what"] == what]
        assert procs, f"no {what} process recorded for {node}"
        return procs[-1]

    def log(self, node: str, what: str) -> str:
        return Path(self.process(node, what)["log"]).read_text(errors="replace")

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """Start a helper process (ended by PID in :meth:`close`)."""
        proc = subprocess.Popen(argv, text=True, env=self.env(), **kw)
        self.helpers.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.helpers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self.helpers.clear()


@contextlib.contextmanager
def running_lab(topology: str, *, extra_manifests: dict[str, str] | None = None, workdir: Path | None = None,
                timeout: float = 60.0, etcd_members: int = 1, kubernetes: bool = False) -> Iterator[Lab]:
    """Bring up ``topologies/<topology>.clab.yml`` under a unique lab name and run base; remove it all after.

    ``extra_manifests`` (file name -> YAML) are applied with the shipped ones: the topology file and its
    manifests are copied into ``workdir`` first, so the shipped files are never changed. ``etcd_members``
    runs the lab's etcd as a cluster of that many members (every client gets every member's endpoint).
    """
    if not exabgp_available():
        import pytest

        pytest.skip("ExaBGP is not installed")
    src = TOPOLOGIES / f"{topology}.clab.yml"
    if extra_manifests:
        assert workdir is not None, "extra manifests need a workdir"
        shutil.copy(src, workdir / src.name)
        if (TOPOLOGIES / topology).is_dir():
            shutil.copytree(TOPOLOGIES / topology, workdir / topology, dirs_exist_ok=True)
        else:
            (workdir / topology).mkdir()
        for fname, text in extra_manifests.items():
            (workdir / topology / fname).write_text(text)
        src = workdir / src.name
    topo = load_topology(src)
    topo = dataclasses.replace(topo, name=f"{topology[:7]}-{uuid.uuid4().hex[:4]}")
    run_base = Path("/run/l3net") / f"e2e{uuid.uuid4().hex[:6]}"
    saved = {k: os.environ.get(k) for k in (st.RUN_BASE_ENV, "L3NET_ETCD_ENDPOINTS")}
    os.environ[st.RUN_BASE_ENV] = str(run_base)
    os.environ.pop("L3NET_ETCD_ENDPOINTS", None)
    lab: Lab | None = None
    try:
        messages: list[str] = []
        started = time.monotonic()
        state = LabRuntime(topo, out=messages.append, etcd_members=etcd_members).up(wait_bgp=True, timeout=timeout,
                                                                                   kubernetes=kubernetes)
        _log.info("lab %s up in %.1fs", topo.name, time.monotonic() - started)
        assert any("every session established" in m for m in messages), messages
        lab = Lab(topo, state, run_base)
        yield lab
    finally:
        if lab is not None:
            lab.close()
        # Idempotent: a test may already have brought the lab down through the CLI.
        down(topo.name, topo, out=lambda _m: None)
        shutil.rmtree(run_base, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- kernel routes ----------------------------------------------------------------------------------

def l3net_routes(ns: str) -> list[dict[str, Any]]:
    """Unicast routes l3net wrote (our protocol number) in namespace ``ns``, as ``ip -j`` reports them."""
    out = subprocess.run(["ip", "-j", "-n", ns, "route", "show", "proto", ROUTE_PROTO], capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return [r for r in json.loads(out.stdout) if r.get("type", "unicast") == "unicast"]


def route_to(ns: str, ip: str) -> dict[str, Any] | None:
    """The most specific l3net route in ``ns`` covering ``ip`` that goes via a next hop, or None."""
    addr = ipaddress.ip_address(ip)
    best: tuple[int, dict[str, Any]] | None = None
    for r in l3net_routes(ns):
        dst = r.get("dst", "")
        if dst == "default":
            dst = "0.0.0.0/0"
        net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if addr not in net or not (r.get("gateway") or r.get("nexthops")):
            continue
        if best is None or net.prefixlen > best[0]:
            best = (net.prefixlen, r)
    return best[1] if best else None


def next_hops(route: dict[str, Any] | None) -> set[str]:
    if route is None:
        return set()
    if route.get("gateway"):
        return {route["gateway"]}
    return {nh["gateway"] for nh in route.get("nexthops", []) if nh.get("gateway")}


# -- packets ----------------------------------------------------------------------------------------

def ping(ns: str, ip: str, count: int = 1, wait: float = 1.0) -> bool:
    return subprocess.run(["nsenter", f"--net={netns.netns_path(ns)}", "--", "ping", "-n", "-q", "-c", str(count),
                           "-W", str(wait), ip], capture_output=True, timeout=30).returncode == 0


@dataclasses.dataclass(frozen=True)
class PingStats:
    sent: int
    received: int

    @property
    def lost(self) -> int:
        return self.sent - self.received


def start_ping_stream(ns: str, ip: str, interval: float, duration: float) -> subprocess.Popen[str]:
    """``ping -i interval -w duration`` in ``ns``; read its result with :func:`ping_stats`."""
    return subprocess.Popen(["nsenter", f"--net={netns.netns_path(ns)}", "--", "ping", "-n", "-q", "-i",
                             str(interval), "-w", str(duration), ip], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def ping_stats(proc: subprocess.Popen[str], timeout: float = 60) -> PingStats:
    out, _ = proc.communicate(timeout=timeout)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    assert m, out
    return PingStats(int(m.group(1)), int(m.group(2)))


def ping_until_reply(ns: str, ip: str, deadline: float) -> subprocess.Popen[str]:
    """A ping sending every 10 ms until the first reply (exit 0) or ``deadline`` seconds (exit 1)."""
    return subprocess.Popen(["nsenter", f"--net={netns.netns_path(ns)}", "--", "ping", "-n", "-q", "-c", "1",
                             "-i", "0.01", "-w", str(deadline), ip], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def ping_stream(lab: Lab, src: str, dst_ip: str) -> subprocess.Popen[str]:
    """100 pps until SIGINT (the drill's length is not known in advance)."""
    return lab.spawn(["nsenter", f"--net={netns.netns_path(src)}", "--", "ping", "-n", "-q", "-i", "0.01", dst_ip],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Capture:
    """``tcpdump -w`` in one namespace for the duration of a ``with`` block; read it back with :meth:`read`."""

    def __init__(self, ns: str, path: Path, iface: str = "any", bpf: str = "ip") -> None:
        self.ns, self.path, self.iface, self.bpf = ns, path, iface, bpf
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Capture:
        # -Z root: Debian's tcpdump drops to its own user before writing, and the file is ours.
        self.proc = subprocess.Popen(["nsenter", f"--net={netns.netns_path(self.ns)}", "--", "tcpdump", "-n",
                                      "-U", "-Z", "root", "-i", self.iface, "-w", str(self.path), self.bpf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        seen = []
        while not seen or "listening on" not in seen[-1]:  # printed once the capture runs
            line = self.proc.stderr.readline()
            assert line, f"tcpdump exited: {''.join(seen)}"
            seen.append(line)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        time.sleep(0.2)  # let the last packets reach the file (-U flushes per packet)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read(self, bpf: str = "") -> list[str]:
        cmd = ["tcpdump", "-n", "-r", str(self.path)]
        if bpf:
            cmd.append(bpf)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.strip()]

    def written(self, bpf: str) -> list[str]:
        """What matches ``bpf`` in the file so far, while the capture still runs (-U writes whole packets).

        A packet on the wire is not yet in the file: tcpdump may still hold it in its socket on a loaded
        machine. Wait on this before leaving the ``with`` block rather than for a fixed time.
        """
        out = subprocess.run(["tcpdump", "-n", "-r", str(self.path), bpf], capture_output=True, text=True,
                             timeout=30)
        return [line for line in out.stdout.splitlines() if line.strip()]


# -- node processes ---------------------------------------------------------------------------------

def exabgp_child(agent_pid: int) -> int | None:
    """The ExaBGP process the agent ``agent_pid`` runs (``python -m exabgp server ...``), or None."""
    for kid in procs.children(agent_pid):
        line = st.cmdline(kid)
        if any("exabgp" in a for a in line) and "server" in line:
            return kid
    return None


def kill_node(lab: Lab, node: str, fabric_ifaces: tuple[str, ...] = ("eth1",)) -> list[int]:
    """A node dies: its fabric links go down first (so no TCP FIN/RST ever leaves it), then every process of
    the node gets SIGKILL. By hand: ``l3net lab link set NODE:eth1 down; l3net lab node stop NODE``.
    Returns the PIDs killed (all the node's, from its cgroup)."""
    from l3net.lab import faults

    state = lab.reload()
    for iface in fabric_ifaces:
        faults.link_set(state, f"{node}:{iface}", up=False)
    pids = faults.node_pids(state, node)
    faults.node_stop(state, node)
    return pids


# -- TCP probes between pods ------------------------------------------------------------------------

# Runs in a pod's namespace: TCP listeners on the given ports, and a prober driven over stdin
# ("IP PORT TIMEOUT" -> "1|0 start end"), so that one connection attempt costs milliseconds, not a
# process start.
POD_AGENT = r"""
import socket, sys, threading, time
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"ok\n")
        except OSError:
            pass
        c.close()
for p in sys.argv[1].split(","):
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    ip, port, timeout = line.split()
    t0 = time.time()
    ok = False
    try:
        with socket.create_connection((ip, int(port)), timeout=float(timeout)) as c:
            c.settimeout(float(timeout))
            ok = c.recv(3) == b"ok\n"
    except OSError:
        ok = False
    print("%d %.6f %.6f" % (ok, t0, time.time()), flush=True)
"""


class PodAgent:
    """A listener + prober in one pod, started with ``l3net lab exec``; ended by closing its stdin."""

    def __init__(self, lab: Lab, pod: str, ports: tuple[int, ...]) -> None:
        self.pod = pod
        self.proc = lab.spawn(lab.lab_exec_argv(pod, sys.executable, "-u", "-c", POD_AGENT,
                                                ",".join(map(str, ports))),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=1)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"pod agent in {pod} did not start: {line!r}"

    def connect(self, ip: str, port: int, timeout: float = 0.5) -> tuple[bool, float, float]:
        """One TCP connection attempt from this pod: (accepted, wall-clock start, wall-clock end)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{ip} {port} {timeout}\n")
        self.proc.stdin.flush()
        ok, t0, t1 = self.proc.stdout.readline().split()
        return ok == "1", float(t0), float(t1)

    def can_connect(self, ip: str, port: int, timeout: float = 0.5) -> bool:
        return self.connect(ip, port, timeout)[0]

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def wait_for_connect_outcome(agent: PodAgent, ip: str, port: int, want: bool, since: float, limit: float,
                             attempt_timeout: float = 0.05, confirm_timeout: float = 0.5) -> float | None:
    """Seconds from wall-clock ``since`` until a connection attempt from ``agent`` to ``ip:port`` had the
    outcome ``want`` (for an allow: when the accepted attempt ended; for a deny: when the first refused
    attempt started, since its SYN was already dropped then), or None after ``limit`` seconds.

    Short attempts give the resolution; an outcome counts only once a second attempt with a patient
    timeout agrees, so a connection that was merely slow on a loaded machine is not taken for a deny."""
    while time.time() - since < limit:
        ok, t0, t1 = agent.connect(ip, port, attempt_timeout)
        if ok == want and agent.connect(ip, port, confirm_timeout)[0] == want:
            return (t1 if want else t0) - since
    return None


# -- the root namespace -----------------------------------------------------------------------------

_COUNTERS = re.compile(r"\[\d+:\d+\]|counter packets \d+ bytes \d+")


def root_netfilter_snapshot() -> dict[str, str]:
    """The host's own netfilter state, read only: iptables (nft and legacy, both families), ipsets and the
    nft ruleset, with packet counters and timestamp comments removed."""
    snap = {}
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        if shutil.which(tool) is None:
            continue
        out = subprocess.run([tool], capture_output=True, text=True, timeout=30)
        lines = [_COUNTERS.sub("[]", line) for line in out.stdout.splitlines() if not line.startswith("#")]
        snap[tool] = "\n".join(lines)
    for cmd in (["ipset", "list"], ["nft", "list", "ruleset"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        snap[" ".join(cmd)] = _COUNTERS.sub("[]", out.stdout)
    return snap

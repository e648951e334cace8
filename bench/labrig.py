"""bench.labrig: real l3net labs, BIRD daemons and kernel route watches for the control-plane benchmarks.

- :class:`BenchLab` runs a containerlab topology file through :class:`l3net.lab.runtime.LabRuntime`
  (etcd, ``l3net agent`` per node, ``l3net route-reflector``) under a unique name that starts with
  the workspace tag, with its run directory in the workspace's scratch; pods are added with the real
  ``l3net-cni`` (:func:`l3net.lab.pods.add_pod`). ``lab down`` runs in the workspace's cleanup.
- :func:`start_bird` runs BIRD 2 (``bird -f -c CONF -s SOCK``) in a namespace as a process we own;
  :func:`bird_rr_conf` / :func:`bird_speaker_conf` render the reflector and speaker configs.
- :class:`RouteWatch` follows ``ip -n NS monitor route`` and stamps the first time each prefix appears.
- :func:`proc_tree`, :func:`rss_bytes`, :func:`cpu_ticks` read /proc for the footprint.

Everything lives in the workspace's namespaces; nothing touches the root namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.framework import Workspace, need_binary
from l3net import netns
from l3net.constants import HEALTH_PORT
from l3net.lab import node as lab_node
from l3net.lab import pods, runtime
from l3net.lab import state as lab_state
from l3net.lab import topology as lab_topology

_log = logging.getLogger(__name__)

ROUTE_TYPES = {"blackhole", "unreachable", "prohibit", "local", "broadcast", "anycast", "multicast", "throw", "nat"}


# -- the l3net lab ----------------------------------------------------------------
class BenchLab:
    """Owns one l3net lab (namespaces, etcd, agents, reflector) made from a topology text.

    ``up()`` builds it without waiting for BGP (the caller may still have to start
    a BIRD the nodes peer with), ``wait_bgp()`` then waits for every session.
    ``lab down`` is registered with the workspace, so it runs even when the
    benchmark fails half-way. Not thread-safe.
    """

    def __init__(self, ws: Workspace, suffix: str, topology: str, manifests: dict[str, str]) -> None:
        self.ws = ws
        self.name = f"{ws.tag}{suffix}"
        self.dir = ws.scratch(suffix)
        (self.dir / "lab").mkdir()
        for fname, text in manifests.items():
            (self.dir / "lab" / fname).write_text(text)
        self.topo_path = self.dir / "lab.clab.yml"
        self.topo_path.write_text(topology)
        self.messages: list[str] = []
        self.state: Any = None
        self.topo: Any = None

    def up(self, timeout: float = 90.0) -> None:
        need_binary("etcd")
        # The lab keeps its state (and finds it again in `down`) under this run base.
        old_env = {k: os.environ.get(k) for k in (lab_state.RUN_BASE_ENV, runtime.ETCD_ENV, lab_node.PREFIX_ENV)}
        os.environ[lab_state.RUN_BASE_ENV] = str(self.dir / "run")
        os.environ.pop(runtime.ETCD_ENV, None)
        os.environ.pop(lab_node.PREFIX_ENV, None)
        # "__lab-name": namespaces are "<name>-<node>", so they carry the workspace tag.
        self.topo = dataclasses.replace(lab_topology.load_topology(self.topo_path), name=self.name, prefix="__lab-name")

        def down() -> None:
            try:
                left = runtime.down(self.name, self.topo, out=self.messages.append)
                if left:
                    _log.error("lab down left %s", left)
            finally:
                for k, v in old_env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

        self.ws.on_close(down)
        self.state = runtime.LabRuntime(self.topo, out=self.messages.append).up(wait_bgp=False, timeout=timeout)

    def wait_bgp(self, timeout: float = 90.0) -> None:
        if not runtime.wait_ready(self.state, timeout=timeout, out=self.messages.append):
            raise RuntimeError(f"lab {self.name}: BGP not established in {timeout:.0f}s: "
                               + " | ".join(self.messages[-6:]))

    def ns(self, node: str) -> str:
        return str(self.topo.node_netns(node))

    def add_pod(self, node: str, name: str, ips: list[str] | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
        return dict(pods.add_pod(self.state, node, f"bench/{name}", labels or {"app": "bench"}, ips))

    def del_pod(self, name: str) -> None:
        """CNI DEL of pod ``bench/NAME`` through the real ``l3net-cni``, then its namespace goes."""
        pods.del_pod(self.state, f"bench/{name}")

    def cni_served(self, node: str, command: str = "ADD") -> int:
        """CNI requests of ``command`` the node's agent served on its socket (its log), i.e. the fast path."""
        logs = [p["log"] for p in self.state.data["processes"] if p["node"] == node and p["what"] == "agent"]
        return sum(Path(log).read_text(errors="replace").count(f"CNI {command} served") for log in logs)

    def add_traces(self, node: str) -> dict[str, Any]:
        """The node agent's ``/debug/traces`` document (its last ADD stage traces, ``felix.addtrace``)."""
        code, body = runtime.http_get_in_netns(self.ns(node), HEALTH_PORT, "/debug/traces", timeout=5.0)
        if code != 200:
            raise RuntimeError(f"{node}: /debug/traces answered {code}: {body[:200]}")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise RuntimeError(f"{node}: /debug/traces is not a JSON object")
        return doc

    def processes(self, node: str) -> list[dict[str, Any]]:
        return [p for p in self.state.data["processes"] if p["node"] == node]

    def etcd_pid(self) -> int | None:
        pid_file = Path(self.state.dir) / "etcd.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None


# -- BIRD ------------------------------------------------------------------------
@dataclasses.dataclass
class Bird:
    proc: subprocess.Popen[Any]
    sock: Path
    conf: Path

    def cli(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(["birdc", "-s", str(self.sock), *args], capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"birdc {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def established(self) -> tuple[int, int]:
        """(established, total) BGP protocols."""
        lines = [ln.split() for ln in self.cli("show", "protocols").splitlines()]
        bgp = [ln for ln in lines if len(ln) >= 2 and ln[1] == "BGP"]
        return sum(1 for ln in bgp if "Established" in ln), len(bgp)

    def wait_established(self, want: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        got = (0, 0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird ({self.conf}) exited {self.proc.returncode}")
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                got = self.established()
                if got[0] >= want:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"bird ({self.conf}): {got[0]} of {want} BGP sessions established after {timeout:.0f}s")


def bird_timers(hold: int, keepalive: int) -> str:
    return f"hold time {hold}; keepalive time {keepalive}; connect retry time 1; error wait time 1, 2;"


def bird_rr_conf(router_id: str, clients: Iterable[str], *, cluster_id: str, asn: int = 64512,
                 hold: int = 90, keepalive: int = 30) -> str:
    """A BIRD 2 route reflector: every client ``rr client`` in one cluster, passive (clients connect)."""
    out = [f"router id {router_id};", "protocol device { scan time 10; }",
           "template bgp rrc {", f"  local {router_id} as {asn};", "  rr client;", f"  rr cluster id {cluster_id};",
           "  passive on;", f"  {bird_timers(hold, keepalive)}",
           "  ipv4 { import all; export where source = RTS_BGP; };", "}"]
    for i, ip in enumerate(clients):
        out.append(f"protocol bgp c{i} from rrc {{ neighbor {ip} as {asn}; }}")
    return "\n".join(out) + "\n"


def bird_speaker_conf(router_id: str, rr_ip: str, *, asn: int = 64512, hold: int = 90, keepalive: int = 30,
                      learn_prefix: str = "10.250.0.0/16", install: bool = True) -> str:
    """A BIRD 2 node: learns kernel routes under ``learn_prefix`` (async netlink), announces them to the
    reflector with next hop self, and installs what it learns over BGP into the kernel."""
    export = "where source = RTS_BGP" if install else "none"
    return "\n".join([
        f"router id {router_id};",
        "protocol device { scan time 10; }",
        "protocol direct { ipv4; interface \"eth1\"; }",
        "protocol kernel {",
        "  learn;", "  scan time 60;",
        f"  ipv4 {{ import where net ~ [ {learn_prefix}+ ]; export {export}; }};",
        "}",
        "protocol bgp reflector {",
        f"  local {router_id} as {asn};", f"  neighbor {rr_ip} as {asn};", f"  {bird_timers(hold, keepalive)}",
        f"  ipv4 {{ import all; export where net ~ [ {learn_prefix}+ ]; next hop self; }};",
        "}",
    ]) + "\n"


def start_bird(ws: Workspace, ns: str, conf_text: str, name: str) -> Bird:
    """BIRD in namespace ``ns``, foreground, control socket in scratch; a process the workspace owns."""
    need_binary("bird", "apt-get install bird2")
    need_binary("birdc", "apt-get install bird2")
    d = ws.scratch(f"bird-{name}")
    conf, sock = d / "bird.conf", d / "bird.ctl"
    conf.write_text(conf_text)
    check = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"bird config {conf} invalid: {check.stderr.strip()}\n{conf_text}")
    log = open(d / "bird.log", "wb")  # noqa: SIM115 - handed to the child for its lifetime
    proc = ws.spawn(["bird", "-f", "-c", str(conf), "-s", str(sock)], netns_name=ns, stdout=log, stderr=log)
    ws.on_close(log.close)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"bird {name} did not start: {(d / 'bird.log').read_text()[-500:]}")
        time.sleep(0.02)
    return Bird(proc, sock, conf)


# -- watching a kernel routing table ---------------------------------------------------
class RouteWatch:
    """Stamps (``time.monotonic()``) the first appearance of every route in one namespace's main table.

    Reads ``ip -ts -n NS monitor route`` line-buffered on a daemon thread and uses the time
    ``ip`` printed with each event (``[ISO time]``, taken when ``ip`` read the netlink message),
    converted to the monotonic clock. Two watches in two namespaces thus compare like with like:
    neither stamp carries our reader thread's scheduling delay, only ``ip``'s own wake-up.
    A line without that prefix is stamped when read. :meth:`wait` blocks until a prefix was
    seen. Fails with RuntimeError if the monitor dies.
    """

    def __init__(self, ws: Workspace, ns: str) -> None:
        self.ns = ns
        self.seen: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self._cond = threading.Condition()
        self._proc = ws.spawn(["stdbuf", "-oL", "ip", "-ts", "-n", ns, "monitor", "route"], stdout=subprocess.PIPE,
                              text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name=f"routewatch-{ns}", daemon=True)
        self._thread.start()

    @staticmethod
    def stamp_of(line: str) -> tuple[float | None, str]:
        """The wall-clock time ``ip -ts`` put in front of ``line`` (None without one), and the rest."""
        if not line.startswith("["):
            return None, line
        head, sep, rest = line[1:].partition("] ")
        if not sep:
            return None, line
        try:
            return _dt.datetime.fromisoformat(head).timestamp(), rest  # local time, as ip prints it
        except ValueError:
            return None, line

    @staticmethod
    def prefix_of(line: str) -> tuple[str | None, bool]:
        parts = RouteWatch.stamp_of(line)[1].split()
        deleted = bool(parts) and parts[0] == "Deleted"
        if deleted:
            parts = parts[1:]
        if parts and parts[0] in ROUTE_TYPES:
            parts = parts[1:]
        if not parts or parts[0] in ("default",) or not parts[0][0].isdigit():
            return None, deleted
        dst = parts[0]
        return (dst if "/" in dst else f"{dst}/32"), deleted

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.monotonic()
            wall, _rest = self.stamp_of(line)
            if wall is not None:  # ip's own stamp, moved onto the monotonic clock the callers use
                now = wall + (time.monotonic() - time.time())
            dst, deleted = self.prefix_of(line)
            if dst is None:
                continue
            with self._cond:
                if deleted:
                    self.deleted.setdefault(dst, now)
                else:
                    self.seen.setdefault(dst, now)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait(self, dst: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while dst not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"route {dst} did not appear in {self.ns} within {timeout:.0f}s")
                if self._proc.poll() is not None:
                    raise RuntimeError(f"ip monitor in {self.ns} exited {self._proc.returncode}")
                self._cond.wait(min(left, 0.5))
            return self.seen[dst]


def kernel_route(ns: str, dst: str) -> str:
    return netns.run(ns, ["ip", "route", "show", dst], check=False).stdout.strip()


RTN_BLACKHOLE, RTPROT_STATIC = 6, 4


class NetlinkRoutes:
    """Adds blackhole routes in one namespace over a netlink socket opened there, in this process.

    The floor's origin event without a fork/exec of ``ip``: the route is in the kernel when
    :meth:`add_blackhole` returns (netlink acknowledges after the insert), so the time taken
    just before the call stands for the origin's route, with no reader in between.
    """

    def __init__(self, ws: Workspace, ns: str) -> None:
        from pyroute2 import IPRoute

        with netns.in_netns(ns):  # the socket belongs to the namespace it was opened in, for good
            self._ipr = IPRoute()
        ws.on_close(self._ipr.close)
        seen = {link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}
        ours = netns.run(ns, ["ip", "-o", "link", "show"]).stdout
        expected = {line.split(":")[1].strip().split("@")[0] for line in ours.splitlines() if ":" in line}
        if seen != expected:  # never write a route anywhere but our own namespace
            self._ipr.close()
            raise RuntimeError(f"netlink socket is not inside {ns}: sees {sorted(seen)}, expected {sorted(expected)}")

    def add_blackhole(self, dst: str) -> None:
        self._ipr.route("add", dst=dst, type=RTN_BLACKHOLE, proto=RTPROT_STATIC)


# -- /proc -----------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def proc_tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


CLK_TCK = os.sysconf("SC_CLK_TCK")

"""bench.reflector_scale: an l3net route reflector vs a BIRD route reflector with 50, 100 and 200 clients.

Two namespaces joined by one veth: ``rr`` (the reflector, 10.1.255.254/16) and ``sim`` (the
clients: one address each on one interface). Clients are simulated cheaply: ExaBGP processes with
up to 50 ``neighbor`` blocks each (one per client, each with its own ``local-address`` and
``router-id``), all sharing one API process (:mod:`bench.bgpsim`) that counts what every session
received from ExaBGP's parsed JSON.

One measurement: start the reflector (``l3net route-reflector`` reading its clients from a private
etcd, or BIRD 2 with ``rr client``), start the clients, wait until every session is up with nothing
announced, then tell every client to announce its 64 prefixes at once (one UPDATE per client).
Measured: seconds from that trigger until the last client holds all ``(N-1) x 64`` prefixes of the
others, and the reflector's RSS (its whole process tree: for l3net the Python reflector, its ExaBGP
and bridge helper) at that moment. The client simulator is the same for both reflectors, so its own
cost is in both numbers; the ratio is reported whatever it is (issue 8 sets no target).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.framework import Context, Result, Unavailable, Workspace, interleaved, need_all, need_root
from bench.labrig import bird_rr_conf, proc_tree, rss_bytes, start_bird
from l3net.datastore import connect_from_env
from l3net.etcdserver import EtcdServer
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.documents import load_documents

_log = logging.getLogger(__name__)

NAME = "reflector_scale"
TITLE = "route reflector scale: l3net RR vs BIRD RR, 50/100/200 clients x 64 prefixes"
NEEDS = ["root", "bird", "birdc", "etcd", "exabgp"]
CLIENTS = (50, 100, 200)
PREFIXES_PER_CLIENT = 64
SESSIONS_PER_PROCESS = 50
RR_IP = "10.1.255.254"
HOLD = 90
VARIANTS = ["l3net-rr", "bird-rr"]
MIB = 1024 * 1024


def client_ip(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


def client_prefixes(i: int, count: int) -> list[str]:
    """``count`` /26 prefixes of client ``i`` in 10.128.0.0/9 (distinct across clients)."""
    base = (10 << 24) | (128 << 16)
    return [f"{(base + (i * count + k) * 64) >> 24 & 255}.{(base + (i * count + k) * 64) >> 16 & 255}."
            f"{(base + (i * count + k) * 64) >> 8 & 255}.{(base + (i * count + k) * 64) & 255}/26"
            for k in range(count)]


def _exabgp() -> str:
    exe = Path(sys.executable).parent / "exabgp"
    if not exe.exists():
        raise Unavailable("the exabgp command next to this interpreter", "pip install exabgp==5.0.15")
    return str(exe)


class Rig:
    """The two namespaces, the private etcd and the key prefix; owned by the workspace."""

    def __init__(self, ws: Workspace, max_clients: int) -> None:
        self.ws = ws
        self.rr_ns = ws.netns("rr")
        self.sim_ns = ws.netns("sim")
        a, b = f"{ws.tag}ra", f"{ws.tag}sa"
        _ip(self.rr_ns, "link", "add", a, "type", "veth", "peer", "name", b, "netns", self.sim_ns)
        for ns, dev in ((self.rr_ns, a), (self.sim_ns, b)):
            _ip(ns, "link", "set", dev, "name", "eth1")
            _ip(ns, "link", "set", "eth1", "up")
        _ip(self.rr_ns, "addr", "add", f"{RR_IP}/16", "dev", "eth1")
        batch = [f"addr add {client_ip(i)}/16 dev eth1" for i in range(max_clients)]
        out = subprocess.run(["ip", "-n", self.sim_ns, "-batch", "-"], input="\n".join(batch) + "\n",
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"adding client addresses failed: {out.stderr[:300]}")
        d = ws.scratch("etcd")
        self.etcd = EtcdServer(d, data_dir=d / "data", name=f"{ws.tag}rs")
        self.etcd.start()
        ws.on_close(self.etcd.stop)
        self.generation = 0

    # -- the l3net reflector ------------------------------------------------------
    def start_l3net(self, n: int) -> subprocess.Popen[Any]:
        self.generation += 1
        prefix = f"/{self.ws.tag}-{self.generation}/"
        docs = [
            "apiVersion: l3net.io/v1\nkind: BGPConfiguration\nmetadata: {name: default}\n"
            f"spec: {{nodeToNodeMeshEnabled: false, asNumber: 64512, holdTime: {HOLD}s}}\n",
            "apiVersion: l3net.io/v1\nkind: Node\nmetadata: {name: rr, labels: {route-reflector: 'true'}}\n"
            f"spec: {{bgp: {{ipv4Address: {RR_IP}/16, routeReflectorClusterID: 224.0.0.1}}}}\n",
            "apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: clients}\n"
            "spec: {nodeSelector: \"!has(route-reflector)\", peerSelector: \"route-reflector == 'true'\"}\n",
        ] + [f"apiVersion: l3net.io/v1\nkind: Node\nmetadata: {{name: c{i}}}\n"
             f"spec: {{bgp: {{ipv4Address: {client_ip(i)}/16}}}}\n" for i in range(n)]
        resources = load_documents("---\n".join(docs), "reflector_scale")
        ds = connect_from_env(self.etcd.endpoints)
        try:
            client = ResourceClient(ds, KeyLayout(prefix))
            for k in range(0, len(resources), 100):  # etcd's --max-txn-ops is 128
                client.apply(resources[k:k + 100])
        finally:
            ds.close()
        run_dir = self.ws.scratch(f"rr{self.generation}")
        env = dict(os.environ, L3NET_ETCD_ENDPOINTS=self.etcd.endpoints, L3NET_ETCD_PREFIX=prefix,
                   PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        log = open(run_dir / "rr.log", "wb")  # noqa: SIM115 - handed to the child
        self.ws.on_close(log.close)
        return self.ws.spawn([sys.executable, "-m", "l3net.cli.agent_main", "route-reflector", "--node", "rr",
                              "--run-dir", str(run_dir)], netns_name=self.rr_ns, env=env, stdout=log, stderr=log)

    def start_bird(self, n: int) -> subprocess.Popen[Any]:
        self.generation += 1
        conf = bird_rr_conf(RR_IP, [client_ip(i) for i in range(n)], cluster_id="224.0.0.1", hold=HOLD,
                            keepalive=HOLD // 3)
        return start_bird(self.ws, self.rr_ns, conf, f"rr{self.generation}").proc

    # -- the simulated clients --------------------------------------------------------
    def start_clients(self, n: int, per_client: int) -> tuple[list[subprocess.Popen[Any]], list[Path], Path]:
        d = self.ws.scratch(f"sim{self.generation}")
        status = d / "status"
        status.touch()
        procs, triggers = [], []
        expect = (n - 1) * per_client
        for g, start in enumerate(range(0, n, SESSIONS_PER_PROCESS)):
            ids = list(range(start, min(n, start + SESSIONS_PER_PROCESS)))
            plan = {client_ip(i): client_prefixes(i, per_client) for i in ids}
            (d / f"plan{g}.json").write_text(json.dumps(plan))
            trigger = d / f"trigger{g}"
            os.mkfifo(trigger)
            triggers.append(trigger)
            helper = (f"{sys.executable} -m bench.bgpsim --status {status} --trigger {trigger} "
                      f"--plan {d / f'plan{g}.json'} --peer {RR_IP} --expect {expect}")
            lines = [f"process sim {{\n  run {helper};\n  encoder json;\n}}"]
            for i in ids:
                ip = client_ip(i)
                lines.append(f"neighbor {RR_IP} {{\n  router-id {ip};\n  local-address {ip};\n  local-as 64512;\n"
                             f"  peer-as 64512;\n  hold-time {HOLD};\n  family {{ ipv4 unicast; }}\n"
                             f"  api {{ processes [ sim ]; neighbor-changes; receive {{ parsed; update; }} }}\n}}")
            conf = d / f"exabgp{g}.conf"
            conf.write_text("\n".join(lines) + "\n")
            env = dict(os.environ, exabgp_daemon_user="root", exabgp_api_cli="false", exabgp_api_ack="false",
                       exabgp_log_level="WARNING", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
            log = open(d / f"exabgp{g}.log", "wb")  # noqa: SIM115 - handed to the child
            self.ws.on_close(log.close)
            procs.append(self.ws.spawn([_exabgp(), "server", str(conf)], netns_name=self.sim_ns, env=env,
                                       stdout=log, stderr=log))
        return procs, triggers, status


def _ip(ns: str, *args: str) -> None:
    out = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip -n {ns} {' '.join(args)}: {out.stderr.strip()}")


def _read_status(path: Path) -> tuple[set[str], dict[str, float], float | None]:
    up: set[str] = set()
    done: dict[str, float] = {}
    announced = None
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "up":
            up.add(parts[1])
        elif parts[0] == "down":
            up.discard(parts[1])
        elif parts[0] == "done":
            done[parts[1]] = float(parts[-1])
        elif parts[0] == "announced":
            announced = float(parts[-1])
    return up, done, announced


def _wait(cond: Any, timeout: float, what: str, procs: list[subprocess.Popen[Any]],
          exc: type[Exception] = RuntimeError) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: process {p.args!r} exited {p.returncode}")
        if time.monotonic() > deadline:
            raise exc(f"{what}: not reached in {timeout:.0f}s")
        time.sleep(0.05)


def _stop_tree(proc: subprocess.Popen[Any]) -> None:
    """Stop a process we started and every descendant it left (the l3net reflector's ExaBGP)."""
    import signal

    from bench.framework import stop_process

    tree = [p for p in proc_tree(proc.pid) if p != proc.pid]
    stop_process(proc)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def measure(rig: Rig, variant: str, n: int, per_client: int, timeout: float) -> tuple[float, float]:
    """(seconds until every client holds every route, reflector RSS in MiB)."""
    rr = rig.start_l3net(n) if variant == "l3net-rr" else rig.start_bird(n)
    sims: list[subprocess.Popen[Any]] = []
    try:
        sims, triggers, status = rig.start_clients(n, per_client)
        _wait(lambda: len(_read_status(status)[0]) >= n, 120, f"{variant}: {n} sessions up", [rr, *sims])
        time.sleep(1.0)  # End-of-RIB and the reflector's first full sync pass are over
        t0 = time.monotonic()
        for trig in triggers:
            with open(trig, "w") as fh:
                fh.write("go\n")
        _wait(lambda: len(_read_status(status)[1]) >= n, timeout, f"{variant}: {n} clients x all routes",
              [rr, *sims], exc=TimeoutError)
        _up, done, _ann = _read_status(status)
        converge = max(done.values()) - t0
        rss = sum(_safe_rss(p) for p in proc_tree(rr.pid)) / MIB
        return converge, rss
    finally:
        for p in [*sims, rr]:
            _stop_tree(p)


def _safe_rss(pid: int) -> int:
    try:
        return rss_bytes(pid)
    except OSError:
        return 0


def run(ctx: Context) -> Result:
    need_root()
    need_all(["bird", "birdc", "etcd"])
    _exabgp()
    sizes = ctx.size(CLIENTS, (5,))
    per_client = ctx.size(PREFIXES_PER_CLIENT, 8)
    rounds = ctx.size(1, 1)
    timeout = ctx.size(300.0, 120.0)
    res = Result(NAME, TITLE, ctx.quick)
    res.setup.update({"clients": list(sizes), "prefixes_per_client": per_client, "rounds": rounds,
                      "sessions_per_exabgp": SESSIONS_PER_PROCESS, "timeout_s": timeout, "hold_s": HOLD,
                      "simulator": "ExaBGP 5 (neighbor blocks, one local address each) + bench.bgpsim counting "
                                   "parsed JSON per session",
                      "reflectors": {"l3net-rr": "l3net route-reflector (bgp.reflector + ExaBGP), clients from etcd",
                                     "bird-rr": "BIRD 2, rr client, passive"}})
    rig = Rig(ctx.workspace, max(sizes))
    gave_up: dict[str, int] = {}
    for n in sizes:
        for rnd, variant in interleaved(rounds, VARIANTS):
            if variant in gave_up:
                res.missing(f"{variant} {n} clients", f"not run: it did not converge with {gave_up[variant]} "
                                                      f"clients within {timeout:.0f} s")
                continue
            try:
                converge, rss = measure(rig, variant, n, per_client, timeout)
            except TimeoutError as exc:
                # Not converging in the time limit is a result, not a crash: say so, give no number,
                # and do not try more clients with this reflector.
                gave_up[variant] = n
                res.missing(f"{variant} {n} clients", f"did not converge within {timeout:.0f} s ({exc})")
                continue
            res.sample(f"converge_s_{n}", variant, converge, unit="s", better="lower")
            res.sample(f"rr_rss_mib_{n}", variant, rss, unit="MiB", better="lower")
            res.sample(f"routes_per_s_{n}", variant, n * (n - 1) * per_client / converge, unit="routes/s")
            _log.info("reflector scale round=%d variant=%s clients=%d converge_s=%.2f rss_mib=%.1f", rnd, variant, n,
                      converge, rss)
        res.ratio(f"l3net/BIRD time to converge, {n} clients", f"converge_s_{n}", "l3net-rr", "bird-rr",
                  note="lower is better; no target")
        res.ratio(f"l3net/BIRD RSS, {n} clients", f"rr_rss_mib_{n}", "l3net-rr", "bird-rr", note="no target")
    return res

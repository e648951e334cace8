"""l3net.lab.runtime: containerlab's topology files on network namespaces (``l3net lab up|down|status``).

No container engine runs here, so this runtime stands in for one:

- every node of kind ``linux`` is a network namespace named as containerlab names
  its container (``clab-<lab>-<node>``); kind ``bridge`` is a namespace holding a
  Linux bridge of the node's name; kind ``host`` (and the implicit ``host:`` link
  endpoint) is containerlab's host namespace, which this runtime must never touch,
  so it stands in with one namespace, ``clab-<lab>--host``;
- every link is a veth between two namespaces; the management network is a bridge
  (``br-mgmt``, gateway address) in its own namespace ``clab-<lab>--mgmt`` with each
  linux node's ``eth0`` on it and a default route through it, like containerlab's
  docker network. Nothing is ever added to the root namespace;
- a node with ``binds`` gets a persistent private mount namespace (under the run
  directory) in which the binds are mounted; every process of that node runs in it;
- a node's role (label ``l3net.io/role`` or env ``L3NET_ROLE``) stands in for its
  image's entrypoint: ``l3net agent --node NAME`` or ``l3net route-reflector --node
  NAME``; then its ``cmd`` starts and its ``exec`` lines run, with its ``env``.

``up`` records every namespace and mount before creating it and every process
right after starting it (:mod:`l3net.lab.state`), so ``down`` can undo a lab whose
own process crashed half-way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from l3net import netns
from l3net.constants import HEALTH_PORT
from l3net.datastore import connect_from_env
from l3net.errors import DatastoreError, ValidationError
from l3net.keys import KeyLayout
from l3net.lab import cgroups as cg
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.node import PREFIX_ENV, NodeRuntime, l3net_argv
from l3net.lab.topology import HOST_NODE, MGMT_IFNAME, Endpoint, Node, Topology
from l3net.model.client import ResourceClient
from l3net.model.documents import load_documents

if TYPE_CHECKING:
    from l3net.lab.etcdserver import EtcdServer

_log = logging.getLogger(__name__)

MGMT_BRIDGE = "br-mgmt"
ETCD_ENV = "L3NET_ETCD_ENDPOINTS"
ETCD_MEMBERS_ENV = "L3NET_LAB_ETCD_MEMBERS"

Printer = Callable[[str], None]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ARGS``: every call names its namespace (never the root one); LabError otherwise."""
    if len(args) < 2 or args[0] != "-n" or not args[1]:
        raise LabError(f"ip {' '.join(args)}: refused, the lab runs ip only with -n NAMESPACE first")
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class LabRuntime:
    """Builds, inspects and removes one lab. Runs on the caller's thread; not re-entrant.

    ``up`` is all-or-nothing from the user's point of view: a failure part-way tears
    down what was created (unless ``keep_on_error``). ``down`` is idempotent.
    """

    def __init__(self, topo: Topology, out: Printer = print, etcd_members: int | None = None) -> None:
        self.topo = topo
        self.out = out
        self.state: st.LabState | None = None
        self.etcd_members = etcd_members if etcd_members is not None else etcd_members_from_env()
        if self.etcd_members not in (1, 3, 5):
            raise LabError(f"etcd members: {self.etcd_members}: must be 1, 3 or 5 (an odd quorum)")

    # -- names -----------------------------------------------------------
    def node_netns(self, node: str) -> str:
        return self.topo.node_netns(node)

    # -- up --------------------------------------------------------------
    def up(self, *, wait_bgp: bool = True, timeout: float = 90.0, keep_on_error: bool = False,
           kubernetes: bool = False) -> st.LabState:
        existing = st.LabState.load(self.topo.name)
        if existing is not None:
            raise LabError(f"lab {self.topo.name!r} is already up (state in {existing.dir}); "
                           f"run: l3net lab down {self.topo.path}")
        clash = [n for n in self._all_netns() if netns.exists(n)]
        if clash:
            raise LabError(f"namespaces already exist: {', '.join(clash)}; remove them or run `l3net lab down`")
        self._check_binds()
        self._manifest_files()  # a bad manifest is refused before anything exists
        external = os.environ.get(ETCD_ENV)
        if external:
            check_endpoints(external)
        try:
            group = cg.lab_group(self.topo.name, st.lab_dir(self.topo.name))
        except cg.CgroupError as exc:
            raise LabError(str(exc)) from None
        self.state = st.LabState.new(self.topo.name, self.topo.path)
        self.state.data["base"] = self.topo.base
        # Recorded before it exists, like every namespace and mount: `down` removes it after any crash.
        self.state.data["cgroup"] = str(group)
        self.state.save()
        started = time.monotonic()
        try:
            cg.create(Path(self.state.data["cgroup"]))
            self._build()
            self._start_etcd()
            self._apply_manifests()
            self._start_nodes()
            if kubernetes:
                from l3net.lab.kubelab import start_kube

                start_kube(self.state, self.out)
            self.state.data["phase"] = "running"
            self.state.save()
            if wait_bgp:
                wait_ready(self.state, timeout=timeout, out=self.out)
        except BaseException as exc:
            if not keep_on_error:
                self.out("lab up failed; removing what was created")
                down_state(self.state, out=lambda _m: None)
            if isinstance(exc, cg.CgroupError):
                raise LabError(str(exc)) from exc
            raise
        self.out(f"lab {self.topo.name} up in {time.monotonic() - started:.1f}s")
        return self.state

    def _all_netns(self) -> list[str]:
        names = [self.node_netns(n) for n in self.topo.nodes]
        if any(link_ep.node == HOST_NODE for link in self.topo.links for link_ep in (link.a, link.b)):
            names.append(self.topo.node_netns(HOST_NODE))
        if any(n.has_mgmt for n in self.topo.nodes.values()):
            names.append(self.topo.mgmt_netns)
        return sorted(set(names))

    def _check_binds(self) -> None:
        problems = []
        for node in self.topo.nodes.values():
            for b in node.binds:
                if not Path(b.source).exists():
                    problems.append(f"{node.name}: bind source {b.source} does not exist")
                if not Path(b.target).exists():
                    # The node shares the host's file system: we will not create files there.
                    problems.append(f"{node.name}: bind target {b.target} does not exist on this machine "
                                    "(this runtime shares the host's file system and mounts over existing paths)")
        if problems:
            raise LabError("cannot apply binds:\n  " + "\n  ".join(problems))

    def _create_netns(self, name: str) -> None:
        assert self.state is not None
        self.state.record_netns(name)
        netns.create(name)

    def _build(self) -> None:
        assert self.state is not None
        topo = self.topo
        (self.state.dir / "logs").mkdir(exist_ok=True)
        mgmt_addrs = topo.mgmt_addresses()
        for name in self._all_netns():
            self._create_netns(name)
        if mgmt_addrs:
            mg = topo.mgmt_netns
            plen = topo.mgmt.ipv4_subnet.split("/")[1]
            _ip("-n", mg, "link", "add", MGMT_BRIDGE, "type", "bridge")
            _ip("-n", mg, "addr", "add", f"{topo.mgmt.ipv4_gw}/{plen}", "dev", MGMT_BRIDGE)
            _ip("-n", mg, "link", "set", MGMT_BRIDGE, "up")
        for node in topo.nodes.values():
            if node.kind == "bridge":
                _ip("-n", self.node_netns(node.name), "link", "add", node.name, "type", "bridge")
                _ip("-n", self.node_netns(node.name), "link", "set", node.name, "up")
        for i, node in enumerate(n for n in topo.nodes.values() if n.name in mgmt_addrs):
            ns, port = self.node_netns(node.name), f"mg{i}"
            _ip("-n", ns, "link", "add", MGMT_IFNAME, "type", "veth", "peer", "name", port, "netns", topo.mgmt_netns)
            _ip("-n", topo.mgmt_netns, "link", "set", port, "master", MGMT_BRIDGE, "up")
            if topo.mgmt.mtu:
                _ip("-n", ns, "link", "set", MGMT_IFNAME, "mtu", str(topo.mgmt.mtu))
                _ip("-n", topo.mgmt_netns, "link", "set", port, "mtu", str(topo.mgmt.mtu))
            _ip("-n", ns, "addr", "add", mgmt_addrs[node.name], "dev", MGMT_IFNAME)
            _ip("-n", ns, "link", "set", MGMT_IFNAME, "up")
            # containerlab's docker network gives each container its default route.
            _ip("-n", ns, "route", "add", "default", "via", topo.mgmt.ipv4_gw, "dev", MGMT_IFNAME)
        for link in topo.links:
            self._create_link(link.a, link.b, link.mtu)
        for node in topo.nodes.values():
            for key, value in node.sysctls.items():
                netns.write_sysctl(key, value, self.node_netns(node.name))
        self._record_nodes(mgmt_addrs)

    def _create_link(self, a: Endpoint, b: Endpoint, mtu: int | None) -> None:
        ns_a, ns_b = self.node_netns(a.node), self.node_netns(b.node)
        _ip("-n", ns_a, "link", "add", a.iface, "type", "veth", "peer", "name", b.iface, "netns", ns_b)
        for ep, ns in ((a, ns_a), (b, ns_b)):
            spec = self.topo.nodes.get(ep.node)
            if mtu:
                _ip("-n", ns, "link", "set", ep.iface, "mtu", str(mtu))
            if ep.mac:
                _ip("-n", ns, "link", "set", ep.iface, "address", ep.mac)
            if spec is not None and spec.kind == "bridge":
                _ip("-n", ns, "link", "set", ep.iface, "master", spec.name)
            for addr in (ep.ipv4, ep.ipv6):
                if addr:
                    _ip("-n", ns, "addr", "add", addr, "dev", ep.iface)
            _ip("-n", ns, "link", "set", ep.iface, "up")

    def _record_nodes(self, mgmt_addrs: dict[str, str]) -> None:
        assert self.state is not None
        for node in self.topo.nodes.values():
            cwd = self.state.dir / "nodes" / node.name
            cwd.mkdir(parents=True, exist_ok=True)
            rec = {"netns": self.node_netns(node.name), "kind": node.kind, "role": node.role,
                   "mgmt": mgmt_addrs.get(node.name), "cwd": str(cwd), "mntns": None,
                   "env": self._node_env(node, cwd), "start": self._start_commands(node, cwd),
                   "cgroup": str(Path(self.state.data["cgroup"]) / node.name)}
            self.state.data["nodes"][node.name] = rec
            self.state.save()
            if node.binds:
                rec["mntns"] = self._mount_namespace(node)
                self.state.save()

    @staticmethod
    def _start_commands(node: Node, cwd: Path) -> list[list[Any]]:
        """``[what, argv]`` of the processes a node runs as its entrypoint (what `node start` runs again)."""
        cmds: list[list[Any]] = []
        if node.role == "node":
            cmds.append(["agent", l3net_argv("agent", "--node", node.name)])
        elif node.role == "route-reflector":
            cmds.append(["route-reflector", l3net_argv("route-reflector", "--node", node.name,
                                                       "--run-dir", str(cwd / "rr"))])
        if node.cmd:
            cmds.append(["cmd", shlex.split(node.cmd)])
        return cmds

    def _node_env(self, node: Node, cwd: Path) -> dict[str, str]:
        # What containerlab puts in a container's labels, as environment for its processes.
        env = {"CLAB_LABEL_CONTAINERLAB": self.topo.name, "CLAB_LABEL_CLAB_NODE_NAME": node.name,
               "CLAB_LABEL_CLAB_NODE_KIND": node.kind, "CLAB_LABEL_CLAB_NODE_LAB_DIR": str(cwd),
               "CLAB_LABEL_CLAB_TOPO_FILE": self.topo.path,
               "CLAB_INTFS": str(sum(1 for li in self.topo.links for ep in (li.a, li.b) if ep.node == node.name)),
               "L3NET_NODENAME": node.name}
        env.update(node.env)
        return env

    def _mount_namespace(self, node: Node) -> str:
        """A persistent mount namespace for ``node`` with its binds mounted (slave: sees new host mounts)."""
        assert self.state is not None
        mnt_dir = self.state.dir / "mnt"
        if str(mnt_dir) not in self.state.data["mounts"]:
            mnt_dir.mkdir(exist_ok=True)
            self.state.record_mount(str(mnt_dir))
            # A namespace file can only be bound on a private mount: make mnt/ one (as ip netns does).
            subprocess.run(["mount", "--bind", str(mnt_dir), str(mnt_dir)], check=True)
            subprocess.run(["mount", "--make-private", str(mnt_dir)], check=True)
        ns_file = mnt_dir / node.name
        ns_file.touch()
        self.state.record_mount(str(ns_file))
        subprocess.run(["unshare", f"--mount={ns_file}", "--propagation", "slave", "true"], check=True)
        for b in node.binds:
            subprocess.run(["nsenter", f"--mount={ns_file}", "mount", "--bind", b.source, b.target], check=True)
            if b.read_only:
                subprocess.run(["nsenter", f"--mount={ns_file}", "mount", "-o", "remount,bind,ro", b.target],
                               check=True)
        return str(ns_file)

    # -- etcd and manifests -------------------------------------------------
    def _start_etcd(self) -> None:
        assert self.state is not None
        external = os.environ.get(ETCD_ENV)
        if external:
            self.state.data["etcd"] = {"endpoints": external, "own": False}
            self.state.save()
            self.out(f"etcd: using {external} ({ETCD_ENV})")
            return
        from l3net.lab.etcdserver import SOCKET_NAME, free_port

        shm = Path("/dev/shm")
        data_base = (shm if shm.is_dir() else self.state.dir) / f"l3net-lab-{self.topo.name}-etcd"
        shutil.rmtree(data_base, ignore_errors=True)
        names = [f"e{i + 1}" for i in range(self.etcd_members)]
        members: dict[str, dict[str, Any]] = {}
        for m in names:
            # One member keeps the run dir itself (etcd.sock:0, etcd.pid there, as tools expect).
            run_dir = self.state.dir if len(names) == 1 else self.state.dir / f"etcd-{m}"
            members[m] = {"run_dir": str(run_dir), "data_dir": str(data_base / m), "peer_port": free_port(),
                          "socket": str(run_dir / SOCKET_NAME),
                          "cgroup": str(Path(self.state.data["cgroup"]) / f"etcd.{m}")}
        cluster = {m: f"http://127.0.0.1:{rec['peer_port']}" for m, rec in members.items()}
        self.state.data["etcd"] = {"endpoints": ",".join(f"unix://{r['socket']}" for r in members.values()),
                                   "own": True, "data_dir": str(data_base), "members": members,
                                   "cluster": cluster}
        self.state.save()
        servers = [start_etcd_member(self.state, m, wait=False) for m in names]
        for m, server in zip(names, servers, strict=True):
            wait_etcd_member(self.state, m, server)
        if len(names) > 1:
            self.out(f"etcd: {len(names)} members ({', '.join(names)})")

    def _manifest_files(self) -> list[Path]:
        """The topology's manifests, each parsed and validated; LabError naming the file and field."""
        files = sorted(self.topo.manifests_dir.glob("*.yaml")) if self.topo.manifests_dir.is_dir() else []
        for f in files:
            try:
                load_documents(f.read_text(), str(f))
            except ValidationError as exc:
                raise LabError(f"manifest {f}: {exc}") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise LabError(f"manifest {f}: cannot read it: {exc}") from None
        return files

    def _apply_manifests(self) -> None:
        assert self.state is not None
        files = self._manifest_files()
        if files:
            apply_manifest_files(self.state.etcd_endpoints, files, self.out)

    # -- processes ---------------------------------------------------------
    def _start_nodes(self) -> None:
        assert self.state is not None
        env_common = {ETCD_ENV: self.state.etcd_endpoints}
        if os.environ.get(PREFIX_ENV):
            env_common[PREFIX_ENV] = os.environ[PREFIX_ENV]
        failures = []
        for node in self.topo.nodes.values():
            rec = self.state.data["nodes"][node.name]
            rec["env"].update(env_common)
            if node.role == "node":
                # The agent's runtime files (ExaBGP config, sockets) under the node's own directory:
                # two labs with a node of the same name never share them, and `down` removes them.
                rec["env"].setdefault("L3NET_RUN_DIR", rec["cwd"])
            self.state.save()
            start_node_processes(self.state, node.name)
        for node in self.topo.nodes.values():
            rt = NodeRuntime.from_state(node.name, self.state.data["nodes"][node.name])
            group = Path(self.state.data["nodes"][node.name]["cgroup"])
            for line in node.exec:
                # In the node's cgroup: whatever the line leaves running (`nohup ... &`) belongs to the node.
                proc = subprocess.run(rt.argv(shlex.split(line)), env=rt.full_env(), cwd=rt.cwd,
                                      capture_output=True, text=True, timeout=60, preexec_fn=cg.enter_fn(group))
                text = (proc.stdout + proc.stderr).strip()
                log = self.state.dir / "logs" / f"{node.name}.exec.log"
                with open(log, "a") as fh:
                    fh.write(f"$ {line}\n{text}\n[exit {proc.returncode}]\n")
                if proc.returncode != 0:
                    failures.append(f"{node.name}: exec {line!r} exited {proc.returncode}: {text[-300:]}")
        for f in failures:
            self.out(f"warning: {f}")


def endpoint_problem(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the etcd ``endpoint`` cannot serve the lab, in a sentence; None when it answers a read."""
    url = urlparse(endpoint)
    if url.scheme == "unix":
        path = url.netloc + url.path
        if not path:
            return "no socket path after unix://"
        if not Path(path).exists():
            return f"the socket file {path} does not exist (is etcd running, with that --listen-client-urls?)"
        if not stat.S_ISSOCK(Path(path).stat().st_mode):
            return f"{path} is not a socket"
    elif url.scheme in ("http", "https"):
        if not url.hostname:
            return "no host in the URL"
        try:
            port = url.port or 2379
        except ValueError:
            return "the port is not a number"
        try:
            with socket.create_connection((url.hostname, port), timeout=timeout):
                pass
        except OSError as exc:
            return f"cannot connect to {url.hostname}:{port}: {exc.strerror or exc}"
    else:
        return "the scheme must be unix://, http:// or https://"
    try:
        ds = connect_from_env(endpoint)
    except (DatastoreError, ValueError, OSError) as exc:
        return str(exc)
    try:
        ds.get("/l3net-lab-probe")
    except (DatastoreError, OSError) as exc:
        return f"not answering as etcd: {exc}"
    finally:
        ds.close()
    return None


def check_endpoints(endpoints: str) -> None:
    """LabError unless at least one endpoint of ``$L3NET_ETCD_ENDPOINTS`` answers; each failure named."""
    eps = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not eps:
        raise LabError(f"{ETCD_ENV} is set but empty: unset it to let the lab run its own etcd")
    problems = {ep: endpoint_problem(ep) for ep in eps}
    bad = [f"{ep}: {why}" for ep, why in problems.items() if why]
    if len(bad) == len(eps):
        raise LabError(f"{ETCD_ENV} is set, so the lab uses that etcd, but no endpoint answers:\n  "
                       + "\n  ".join(bad) + f"\nfix it, or unset {ETCD_ENV} to let the lab run its own etcd")
    for line in bad:
        _log.warning("etcd endpoint unusable, the others answer: %s", line)


def etcd_members_from_env() -> int:
    raw = os.environ.get(ETCD_MEMBERS_ENV) or "1"
    try:
        return int(raw)
    except ValueError:
        raise LabError(f"{ETCD_MEMBERS_ENV}={raw!r}: must be a number (1, 3 or 5)") from None


def _etcd_server(state: st.LabState, member: str) -> EtcdServer:
    from l3net.lab.etcdserver import EtcdServer

    etcd = state.data["etcd"]
    rec = etcd["members"][member]
    return EtcdServer(rec["run_dir"], data_dir=rec["data_dir"], name=member, peer_port=int(rec["peer_port"]),
                      cluster=etcd["cluster"])


def start_etcd_member(state: st.LabState, member: str, wait: bool = True) -> EtcdServer:
    """Start the lab's etcd member ``member`` in its cgroup (again after a stop: same ports, same data)."""
    rec = state.data["etcd"]["members"][member]
    group = Path(rec["cgroup"])
    cg.create(group)
    server = _etcd_server(state, member)
    try:
        server.start(wait=False, preexec_fn=cg.enter_fn(group))
    except (RuntimeError, OSError) as exc:
        raise LabError(f"etcd member {member}: {exc}") from exc
    # The server outlives this process (its own session and cgroup); `down` ends it through both.
    if wait:
        wait_etcd_member(state, member, server)
    return server


def wait_etcd_member(state: st.LabState, member: str, server: EtcdServer, timeout: float = 30.0) -> None:
    """Wait until ``member`` is healthy; a LabError names the member and the reason (a port in use, say)."""
    try:
        server.wait_healthy(timeout)
    except RuntimeError as exc:
        log = Path(server.run_dir) / "etcd.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if "address already in use" in text:
            raise LabError(f"etcd member {member}: its peer port 127.0.0.1:{server.peer_port} is already in use "
                           f"by another program; run `l3net lab up` again (a new port is picked), log {log}") \
                from None
        raise LabError(f"etcd member {member} did not start: {str(exc).splitlines()[0]} (log {log})") from None
    finally:
        server.proc = None


def start_node_processes(state: st.LabState, node: str) -> list[int]:
    """Start ``node``'s entrypoint processes (its role's daemon, then its ``cmd``) in its cgroup.

    The node's earlier process records are replaced, so ``lab status`` shows the PIDs that run now.
    """
    rec = state.data["nodes"][node]
    group = Path(rec["cgroup"])
    cg.create(group)
    rt = NodeRuntime.from_state(node, rec)
    state.data["processes"] = [p for p in state.data["processes"] if p["node"] != node]
    return [spawn(state, rt, str(what), list(cmd), group) for what, cmd in rec.get("start", [])]


def spawn(state: st.LabState, rt: NodeRuntime, what: str, cmd: list[str], group: Path) -> int:
    """Start ``cmd`` in the node (namespaces, env, cwd) and in cgroup ``group``; record it; return its PID."""
    argv = rt.argv(cmd)
    log = state.dir / "logs" / f"{rt.name}.{what}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=rt.full_env(), cwd=rt.cwd, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=cg.enter_fn(group))
    state.record_process(rt.name, what, proc.pid, cmd, str(log))
    _log.info("started node=%s what=%s pid=%d", rt.name, what, proc.pid)
    return proc.pid


# -- manifests ----------------------------------------------------------------

def apply_manifest_files(endpoints: str, files: list[Path], out: Printer = print) -> None:
    """Apply l3net manifests to the lab's etcd (all files in one transaction per file)."""
    ds = connect_from_env(endpoints)
    try:
        client = ResourceClient(ds, KeyLayout(os.environ.get(PREFIX_ENV) or KeyLayout().prefix))
        for f in files:
            try:
                resources = load_documents(f.read_text(), str(f))
                client.apply(resources)
            except ValidationError as exc:
                raise LabError(f"manifest {f}: {exc}") from None
            except DatastoreError as exc:
                raise LabError(f"manifest {f}: etcd at {endpoints} refused or did not answer: {exc}") from None
            out(f"applied {f.name}: " + ", ".join(r.ref for r in resources))
    finally:
        ds.close()


# -- readiness ------------------------------------------------------------------

def http_get_in_netns(ns: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH from inside namespace ``ns`` (a socket made there stays there)."""
    with netns.in_netns(ns):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def bgp_table(state: st.LabState, node: str) -> list[dict[str, Any]] | None:
    """The peer table ``node`` publishes at ``status/<node>/bgp``, or None if absent/unreadable."""
    try:
        ds = connect_from_env(state.etcd_endpoints)
    except (DatastoreError, OSError, ValueError) as exc:  # status must not die on a dead etcd
        _log.debug("etcd unreachable: %s", exc)
        return None
    try:
        kv = ds.get(KeyLayout(os.environ.get(PREFIX_ENV) or KeyLayout().prefix).node_status(node, "bgp"))
    except (DatastoreError, OSError) as exc:
        _log.debug("etcd read failed: %s", exc)
        return None
    finally:
        ds.close()
    if kv is None:
        return None
    try:
        value = json.loads(kv.value)
    except ValueError:
        return None
    peers = value.get("peers", value) if isinstance(value, dict) else value
    if isinstance(peers, dict):
        peers = [dict(p, peer=k) if isinstance(p, dict) else {"peer": k, "state": p} for k, p in peers.items()]
    return peers if isinstance(peers, list) else None


def _peer_established(peer: dict[str, Any]) -> bool:
    state = str(peer.get("state") or peer.get("State") or "").lower()
    return state in ("established", "up")


def wait_ready(state: st.LabState, timeout: float = 90.0, out: Printer = print) -> bool:
    """Wait until every l3net node's agent is ready and every BGP session it reports is established."""
    role_nodes = {n: r for n, r in state.data["nodes"].items() if r.get("role")}
    if not role_nodes:
        return True
    deadline = time.monotonic() + timeout
    pending = dict(role_nodes)
    last: dict[str, str] = {}
    failed: list[str] = []
    while pending and time.monotonic() < deadline:
        for name, rec in list(pending.items()):
            procs = [p for p in state.data["processes"] if p["node"] == name and p["what"] != "cmd"]
            if procs and not any(st.is_alive(p) for p in procs):
                tail = _log_tail(procs[0]["log"])
                out(f"warning: {name}: {procs[0]['what']} exited (log {procs[0]['log']}):\n{tail}")
                del pending[name]
                failed.append(name)
                continue
            peers = bgp_table(state, name)
            if peers is not None and peers:
                down = [p for p in peers if not _peer_established(p)]
                last[name] = ", ".join(f"{p.get('peer') or p.get('address')}={p.get('state')}" for p in down)
                if not down:
                    del pending[name]
                continue
            if rec.get("role") == "node":
                try:
                    code, body = http_get_in_netns(rec["netns"], HEALTH_PORT, "/readiness")
                except OSError as exc:
                    last[name] = f"agent not answering on :{HEALTH_PORT} ({exc.__class__.__name__})"
                    continue
                last[name] = f"readiness {code} {body.strip()[:80]}"
                if code == 200 and peers is None and time.monotonic() > deadline - timeout / 2:
                    # Ready, but publishes no BGP table: nothing more to wait for.
                    del pending[name]
            else:
                last[name] = "no BGP peer table published yet"
        time.sleep(0.3)
    if pending:
        for name in pending:
            out(f"warning: {name} not ready after {timeout:.0f}s: {last.get(name, 'no status')}")
    if pending or failed:
        return False
    out("BGP: every session established")
    return True


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:])


# -- down -----------------------------------------------------------------------

def down_state(state: st.LabState, out: Printer = print) -> list[str]:
    """Undo everything ``state`` records; returns what could not be removed (empty on success)."""
    leftovers: list[str] = []
    data = state.data
    cgroup = Path(data["cgroup"]) if data.get("cgroup") else None
    if cgroup is not None:
        _thaw_lab(cgroup)
    pods = data.get("pods", {})
    if pods and not data.get("etcd", {}).get("own", True):
        _release_pods(state, pods, out)
    for proc in reversed(data.get("processes", [])):
        if st.stop_process(proc):
            out(f"stopped {proc['node']} {proc['what']} (pid {proc['pid']})")
    if cgroup is not None:
        _kill_cgroup(cgroup, out)
    all_ns = list(data.get("netns", [])) + [p["netns"] for p in pods.values() if p.get("netns")]
    _stop_netns_processes(all_ns)
    _unmount(data.get("mounts", []))
    for name in reversed(all_ns):
        netns.delete(name)
        if netns.exists(name):
            leftovers.append(f"namespace {name}")
    _remove_own_etcd(state, data.get("etcd", {}))
    if cgroup is not None:
        try:
            cg.remove(cgroup)
        except cg.CgroupError as exc:
            leftovers.append(f"cgroup {data['cgroup']} ({exc})")
    if not leftovers:
        shutil.rmtree(state.dir, ignore_errors=True)
    return leftovers


def _thaw_lab(cgroup: Path) -> None:
    # A paused node or etcd would ignore SIGTERM and hold `down` up: thaw everything first.
    for group in cg.groups(cgroup):
        with contextlib.suppress(cg.CgroupError):
            cg.freeze(group, False)


def _release_pods(state: st.LabState, pods: dict[str, Any], out: Printer) -> None:
    # An external etcd outlives the lab: release the pods' addresses there first.
    from l3net.lab.pods import cni_del_recorded

    for key, pod in list(pods.items()):
        try:
            cni_del_recorded(state, key, pod, timeout=10)
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            out(f"warning: pod {key}: {exc}")


def _kill_cgroup(cgroup: Path, out: Printer) -> None:
    # Whatever the nodes' processes left behind (double forks, other namespaces) and etcd: the
    # cgroup holds them all, paused ones included.
    try:
        ended = cg.kill(cgroup)
    except cg.CgroupError as exc:
        out(f"warning: {exc}")
        return
    if ended:
        out(f"ended {ended} more processes of the lab's cgroup")


def _stop_netns_processes(names: list[str]) -> None:
    # Anything else still running inside the lab's namespaces was started in them by the lab
    # (or through `lab exec`): end it by PID so that the namespaces really go away.
    for name in names:
        for pid in st.pids_in_netns(str(netns.netns_path(name))):
            st.stop_process({"pid": pid, "starttime": st.starttime(pid)}, grace=1.0)


def _unmount(mounts: list[str]) -> None:
    for mount in reversed(mounts):
        if os.path.ismount(mount) or _is_nsfs_mount(mount):
            r = subprocess.run(["umount", mount], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", mount], capture_output=True, text=True)


def _remove_own_etcd(state: st.LabState, etcd: dict[str, Any]) -> None:
    # Only an etcd the lab started is the lab's to end and delete.
    if not etcd.get("own"):
        return
    from l3net.lab.etcdserver import kill_recorded

    for rec in etcd.get("members", {}).values():
        kill_recorded(rec["run_dir"])
    kill_recorded(state.dir)  # a record from before members existed
    if etcd.get("data_dir"):
        shutil.rmtree(etcd["data_dir"], ignore_errors=True)


def _is_nsfs_mount(path: str) -> bool:
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)
    return False


def down(name: str, topo: Topology | None = None, out: Printer = print) -> list[str]:
    """Remove lab ``name`` from its recorded state; with ``topo`` also sweep its namespaces by name."""
    state = st.LabState.load(name)
    leftovers: list[str] = []
    if state is not None:
        leftovers = down_state(state, out)
    elif topo is None:
        out(f"lab {name}: no state in {st.lab_dir(name)}; nothing to do")
    if topo is not None:
        # No (or a partial) record: namespaces named for this lab's nodes are the lab's.
        rt = LabRuntime(topo, out)
        for ns_name in rt._all_netns():
            if netns.exists(ns_name):
                for pid in st.pids_in_netns(netns.netns_path(ns_name)):
                    st.stop_process({"pid": pid, "starttime": st.starttime(pid)}, grace=1.0)
                netns.delete(ns_name)
                if netns.exists(ns_name):
                    leftovers.append(f"namespace {ns_name}")
    return leftovers


# -- status ---------------------------------------------------------------------

def status_lines(state: st.LabState) -> list[str]:
    data = state.data
    lines = [f"lab {state.name} ({data.get('phase')}), topology {data.get('topology')}",
             f"  run dir: {state.dir}", f"  etcd: {state.etcd_endpoints or '-'}"]
    for member, rec in sorted(data.get("etcd", {}).get("members", {}).items()):
        group = Path(rec["cgroup"])
        run = "stopped" if not cg.populated(group) else "paused" if cg.is_frozen(group) else "running"
        lines.append(f"    etcd {member}: {run} {','.join(map(str, cg.pids(group))) or ''}".rstrip())
    for name, rec in data["nodes"].items():
        procs = [p for p in data["processes"] if p["node"] == name]
        ptxt = ", ".join(f"{p['what']}:{p['pid']}:{'up' if st.is_alive(p) else 'DEAD'}" for p in procs) or "-"
        if rec.get("cgroup") and rec.get("kind") == "linux":
            group = Path(rec["cgroup"])
            count = len(cg.pids(group))
            ptxt += f" [{'paused, ' if count and cg.is_frozen(group) else ''}{count} in cgroup]"
        ns_ok = "ok" if netns.exists(rec["netns"]) else "MISSING"
        lines.append(f"  {name:<12} {rec['kind']:<7} {rec.get('role') or '-':<16} {rec.get('mgmt') or '-':<18} "
                     f"netns {rec['netns']} ({ns_ok})  processes {ptxt}")
        if rec.get("role"):
            peers = bgp_table(state, name)
            if peers is None:
                lines.append("               bgp: no peer table published")
            for p in peers or []:
                since = p.get("since")
                when = time.strftime("since %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) \
                    and since else ""
                lines.append(f"               bgp {p.get('peer') or p.get('address')}: {p.get('state')} "
                             f"{p.get('peerType') or p.get('type') or ''} {p.get('info') or ''} {when}".rstrip())
    kube = data.get("kube")
    if kube:
        procs = [p for p in data["processes"] if p["node"] == "kube"]
        ptxt = ", ".join(f"{p['what']}:{p['pid']}:{'up' if st.is_alive(p) else 'DEAD'}" for p in procs) or "-"
        lines.append(f"  kubernetes   http://127.0.0.1:{kube['port']}  KUBECONFIG={kube['kubeconfig']}  "
                     f"processes {ptxt}")
    for key, pod in sorted(data.get("pods", {}).items()):
        lines.append(f"  pod {key:<24} node {pod['node']:<10} {pod.get('ip') or '-':<18} netns {pod['netns']}")
    return lines

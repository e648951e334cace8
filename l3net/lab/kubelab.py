"""``l3net lab up --kubernetes``: the lab's Kubernetes stand-in, its kube-controller, and kubelets.

``lab up --kubernetes`` starts two recorded processes in the lab's cgroup (``lab down``
ends them like every other): ``l3net lab kube-serve LAB``, which serves the API
stand-in (:mod:`l3net.lab.kubeapi`) on ``127.0.0.1:<port>`` in the root namespace
*and* in every node's namespace (one listening socket made in each, all on one
store, so ``kubectl``, the controller and each node's CNI plugin use the same
kubeconfig), registers a Node per lab node and runs one kubelet per node; and
``l3net kube-controller``. The kubeconfig is ``<lab dir>/kubeconfig``.

A kubelet here does what kubelet does for networking: it watches the pods bound to
its node (``spec.nodeName``), creates each one's network namespace and runs the
CNI ADD with ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` in ``CNI_ARGS``
(:func:`l3net.lab.pods.add_pod`), reports ``status.podIP``, and runs DEL when the
pod is deleted (or re-created under the same name with a new uid). It is
level-triggered: a failed ADD is retried on the next tick.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from l3net import netns
from l3net.lab import cgroups as cg
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.node import l3net_argv

_log = logging.getLogger(__name__)

__all__ = ["Kubelet", "serve", "start_kube"]

KUBE_NODE = "kube"  # the process records' node name for the lab's Kubernetes processes
BOOKMARK_INTERVAL = 5.0


def _free_port() -> int:
    from l3net.lab.etcdserver import free_port

    return free_port()


def start_kube(state: st.LabState, out: Any = print, timeout: float = 30.0) -> str:
    """Start the API stand-in (+ kubelets) and the controller; returns the kubeconfig path."""
    group = Path(state.data["cgroup"]) / KUBE_NODE
    cg.create(group)
    kubeconfig = state.dir / "kubeconfig"
    state.data["kube"] = {"port": _free_port(), "kubeconfig": str(kubeconfig), "cgroup": str(group)}
    state.save()
    _spawn(state, "kube-api", l3net_argv("lab", "kube-serve", state.name), group)
    deadline = time.monotonic() + timeout
    while not kubeconfig.exists() or not _ready(state.data["kube"]["port"]):
        if time.monotonic() > deadline:
            raise LabError(f"the lab's Kubernetes API stand-in did not come up in {timeout:.0f}s "
                           f"(log: {state.dir / 'logs' / 'kube.kube-api.log'})")
        time.sleep(0.1)
    start_controller(state)
    out(f"kubernetes: API stand-in at http://127.0.0.1:{state.data['kube']['port']}, kube-controller running")
    out(f"export KUBECONFIG={kubeconfig}")
    return str(kubeconfig)


def start_controller(state: st.LabState) -> int:
    """(Re)start the lab's kube-controller process (also what a restart drill calls)."""
    kube = state.data["kube"]
    argv = l3net_argv("kube-controller", "--kubeconfig", kube["kubeconfig"], "--etcd-endpoints",
                      state.etcd_endpoints, "--identity", f"{state.name}-controller", "--resync-interval", "60")
    return _spawn(state, "kube-controller", argv, Path(kube["cgroup"]))


def _spawn(state: st.LabState, what: str, argv: list[str], group: Path) -> int:
    log = state.dir / "logs" / f"{KUBE_NODE}.{what}.log"
    log.parent.mkdir(exist_ok=True)
    env = dict(os.environ)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=env, cwd=state.dir, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=cg.enter_fn(group))
    with state.locked():
        # a restart replaces the record, so `lab status` shows the process that runs now
        state.data["processes"] = [p for p in state.data["processes"]
                                   if not (p["node"] == KUBE_NODE and p["what"] == what)]
        state.record_process(KUBE_NODE, what, proc.pid, argv, str(log))
    _log.info("started what=%s pid=%d", what, proc.pid)
    return proc.pid


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def agent_nodes(state: st.LabState) -> list[str]:
    return sorted(n for n, rec in state.data["nodes"].items() if rec.get("role") == "node")


# -- the kube-serve process ------------------------------------------------------

def serve(lab: str) -> int:
    """Serve the lab's API stand-in in the root and every node namespace; run the kubelets."""
    from l3net.kube.api import KubeAPI
    from l3net.lab.kubeapi import KubeAPIServer, Store

    state = st.LabState.load(lab)
    if state is None or "kube" not in state.data:
        raise LabError(f"lab {lab!r} is not up with --kubernetes")
    port = int(state.data["kube"]["port"])
    store = Store()
    servers = [KubeAPIServer("127.0.0.1", port, store=store, bookmark_interval=BOOKMARK_INTERVAL).start()]
    for node in agent_nodes(state):
        with netns.in_netns(state.data["nodes"][node]["netns"]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        servers.append(KubeAPIServer(store=store, bookmark_interval=BOOKMARK_INTERVAL, sock=sock).start())
    rtype = store.rtype("nodes")
    for node in agent_nodes(state):
        store.create(rtype, "", {"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    path = state.data["kube"]["kubeconfig"]
    servers[0].kubeconfig(path + ".tmp")
    os.replace(path + ".tmp", path)
    kubelets = [Kubelet(KubeAPI(path), lab, node).start() for node in agent_nodes(state)]
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    _log.info("kube-serve up lab=%s port=%d nodes=%d", lab, port, len(kubelets))
    done.wait()
    for k in kubelets:
        k.stop()
    for s in servers:
        s.stop()
    return 0


class Kubelet:
    """The networking half of kubelet for one lab node; owns the lab pods it created (``kube: true``).

    Runs a Pod reflector (``spec.nodeName=<node>``) and one sync thread. Idempotent:
    each tick compares the API's pods with the lab's records and adds or deletes the
    difference; failures are logged and retried on the next tick, never raised.
    """

    def __init__(self, api: Any, lab: str, node: str, tick: float = 1.0):
        from l3net.kube.reflector import Reflector

        self.api, self.lab, self.node, self.tick = api, lab, node, tick
        self._lock = threading.Condition()
        self._pods: dict[str, dict[str, Any]] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # pod -> (next attempt, delay), as kubelet backs off
        self._stop = threading.Event()
        self.reflector = Reflector(api, "Pod", self, field_selector=f"spec.nodeName={node}")
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{node}", daemon=True)

    def start(self) -> Kubelet:
        self.reflector.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.reflector.stop()
        with self._lock:
            self._lock.notify_all()

    # Sink
    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pods = {self._ref(p): p for p in items}
            self._lock.notify_all()

    def event(self, kind: str, etype: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if etype == "DELETED":
                self._pods.pop(self._ref(obj), None)
            else:
                self._pods[self._ref(obj)] = obj
            self._lock.notify_all()

    @staticmethod
    def _ref(pod: dict[str, Any]) -> str:
        meta = pod.get("metadata") or {}
        return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._lock.wait(self.tick)
                if not self.reflector.synced.is_set():
                    continue
                wanted = dict(self._pods)
            try:
                self.sync(wanted)
            except (LabError, OSError, subprocess.SubprocessError) as exc:
                _log.warning("kubelet sync failed node=%s: %s (retrying)", self.node, exc)

    def sync(self, wanted: dict[str, dict[str, Any]]) -> None:
        from l3net.kube.api import ApiError, ApiUnavailable
        from l3net.lab.pods import add_pod, del_pod

        state = st.LabState.load(self.lab)
        if state is None:
            return
        self._backoff = {k: v for k, v in self._backoff.items() if k in wanted}
        mine = {k: p for k, p in state.data["pods"].items() if p.get("kube") and p.get("node") == self.node}
        for key, rec in mine.items():
            pod = wanted.get(key)
            if pod is None or pod["metadata"].get("uid") != rec.get("uid"):
                _log.info("kubelet DEL node=%s pod=%s", self.node, key)
                del_pod(state, key)
        state = st.LabState.load(self.lab) or state
        for key, pod in wanted.items():
            if key in state.data["pods"]:
                continue  # running, or still held by a record another node has not deleted yet
            when, delay = self._backoff.get(key, (0.0, 0.0))
            if time.monotonic() < when:
                continue
            _log.info("kubelet ADD node=%s pod=%s", self.node, key)
            try:
                rec = add_pod(state, self.node, key)
            except LabError as exc:
                delay = min(max(delay * 2, 1.0), 30.0)
                self._backoff[key] = (time.monotonic() + delay, delay)
                _log.warning("kubelet ADD failed node=%s pod=%s: %s (retrying in %.0fs)", self.node, key, exc, delay)
                continue
            self._backoff.pop(key, None)
            with state.locked(pods=[key]):
                state.data["pods"][key]["kube"] = True
                state.data["pods"][key]["uid"] = pod["metadata"].get("uid")
            ns, name = key.split("/", 1)
            try:
                self.api.patch_status("Pod", name, ns, {"phase": "Running", "podIP": rec.get("ip"),
                                                        "podIPs": [{"ip": rec.get("ip")}]})
            except (ApiError, ApiUnavailable) as exc:  # status is informative; the pod is wired either way
                _log.warning("kubelet could not report status pod=%s: %s", key, exc)

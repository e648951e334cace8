"""l3net.lab.pods: workloads in the lab, wired by the real ``l3net-cni`` exactly as a container runtime does.

A pod is a network namespace (``<lab base>--<namespace>.<name>``). ``add`` runs the
plugin with the CNI environment (``CNI_COMMAND=ADD``, ``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH``, ``CNI_ARGS`` with ``K8S_POD_NAMESPACE``
and ``K8S_POD_NAME``) and the network configuration on stdin, inside the node's
namespace so the host-side veth lands in the node. Labels and requested addresses
travel in ``args.cni.labels`` / ``args.cni.ips`` (CNI conventions). A failed ADD is
followed by a DEL, as the spec asks of runtimes, and the pod namespace is removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path
from typing import Any

from l3net import netns
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.node import PREFIX_ENV, NodeRuntime

_log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
NETWORK_NAME = "l3net"
POD_IFNAME = "eth0"
POLICY_SETUP_TIMEOUT = 10  # s; the netconf's policy_setup_timeout_seconds
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def cni_binary() -> Path:
    """The ``l3net-cni`` entry point installed next to this interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / "l3net-cni"
    if candidate.exists():
        return candidate
    raise LabError(f"l3net-cni not found at {candidate}: install the package (make setup)")


def cni_wrapper_text() -> str:
    """The lab's ``l3net-cni``, made as ``deploy/install-cni.sh`` makes a node's: ``python3 -S`` with the code on
    its path. The venv's console script would start the interpreter with ``site``, which in a development
    venv runs the editable install's finder (pathlib, importlib.util, urllib.parse: ~50 ms per exec on this
    machine) that no node pays; the shim is stdlib-only, and the in-process fallback finds its packages
    in the venv's site-packages, named here."""
    cni_binary()  # the package is installed (its entry point exists)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the l3net package
    paths = [root, sysconfig.get_paths()["purelib"]]
    return (f"#!{sys.executable} -S\n"
            "# l3net-cni for the lab's runtime (l3net.lab.pods), like deploy/install-cni.sh's: python3 -S.\n"
            f"import sys\nsys.path[:0] = {paths!r}\n"
            "from l3net.cni.shim import main\nsys.exit(main())\n")


@functools.cache  # once per process: install_cni runs on every pod's ADD
def compile_shim() -> None:
    """Bytecode for the modules the shim imports, as a node's pip-installed copy has (install-cni.sh copies it).

    Without it a tree run with PYTHONDONTWRITEBYTECODE compiles the shim from source on every ADD (~4 ms
    that no node pays). A tree the lab cannot write to is left as it is.
    """
    import py_compile

    root = Path(__file__).resolve().parents[1]
    for rel in ("__init__.py", "constants.py", "cni/__init__.py", "cni/errors.py", "cni/shim.py"):
        try:
            py_compile.compile(str(root / rel), doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            _log.info("shim bytecode not written (it compiles on each start) file=%s error=%s", rel, exc)


def install_cni(state: st.LabState) -> Path:
    """``<lab dir>/cni-bin/l3net-cni`` (the lab's CNI_PATH), written when missing or different; idempotent."""
    path = Path(state.dir) / "cni-bin" / "l3net-cni"
    compile_shim()
    text = cni_wrapper_text()
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary name per writer: pods are added from several threads at once (bench footprint), and
    # a shared name let one writer's rename take the file another was about to rename.
    fd, tmp_name = tempfile.mkstemp(prefix=".l3net-cni.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as tmp:
            tmp.write(text)
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, path)  # a runtime never runs half a file
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def parse_pod_ref(ref: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` with Kubernetes name rules (a pod without a namespace is in ``default``)."""
    ns, _, name = ref.rpartition("/")
    ns = ns or "default"
    if not _DNS_LABEL.match(ns) or len(ns) > 63:
        raise LabError(f"pod namespace {ns!r}: lower-case letters, digits and '-' (at most 63)")
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise LabError(f"pod name {name!r}: lower-case letters, digits, '-' and '.'")
    return ns, name


def pod_netns_name(lab_base: str, ns: str, name: str) -> str:
    full = f"{lab_base}--{ns}.{name}"
    if len(full) > 200:  # a file name under /run/netns
        full = f"{lab_base}--pod-{hashlib.sha1(f'{ns}.{name}'.encode()).hexdigest()[:16]}"
    return full


def agent_socket(state: st.LabState, node: str) -> str | None:
    """Where the node's agent serves CNI requests (``<run dir>/cni.sock``; the lab runs it in the node's dir).

    None for a node without an agent: the plugin's own default then applies (and it falls back to
    running in-process when nothing listens there).
    """
    rec = state.data["nodes"].get(node)
    if rec is None or rec.get("role") != "node":
        return None
    env = rec.get("env", {})
    if env.get("L3NET_CNI_SOCKET"):
        return None if env["L3NET_CNI_SOCKET"] == "none" else str(env["L3NET_CNI_SOCKET"])
    return str(Path(env.get("L3NET_RUN_DIR") or rec["cwd"]) / "cni.sock")


def network_config(state: st.LabState, node: str, labels: dict[str, str], ips: list[str]) -> dict[str, Any]:
    """The network configuration a runtime would read from /etc/cni/net.d for this node."""
    conf: dict[str, Any] = {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "type": "l3net-cni",
        "etcd_endpoints": state.etcd_endpoints,
        "nodename": node,
        "log_level": "info",
        "ipam": {"type": "l3net-ipam"},
    }
    if os.environ.get(PREFIX_ENV):
        conf["etcd_prefix"] = os.environ[PREFIX_ENV]
    kube = state.data.get("kube")
    if kube:
        # as Calico's CNI: ADD reads the pod (labels, ports, IPAM annotations) from the API
        conf["kubernetes"] = {"kubeconfig": kube["kubeconfig"]}
    sock = agent_socket(state, node)
    if sock:
        conf["agentSocket"] = sock
        # `lab pod add` returns a pod that already passes traffic, as the CNI does for kubelet.
        conf["policy_setup_timeout_seconds"] = POLICY_SETUP_TIMEOUT
    cni_args: dict[str, Any] = {}
    if labels:
        cni_args["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
    if ips:
        cni_args["ips"] = list(ips)
    if cni_args:
        conf["args"] = {"cni": cni_args}
    return conf


def _invoke(state: st.LabState, node: str, command: str, container_id: str, pod_netns: str, ns: str,
            name: str, conf: dict[str, Any], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    rec = state.data["nodes"].get(node)
    if rec is None:
        raise LabError(f"no node {node!r} in lab {state.name} (nodes: {', '.join(state.data['nodes'])})")
    binary = install_cni(state)
    env = dict(os.environ)
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns.netns_path(pod_netns),
        "CNI_IFNAME": POD_IFNAME,
        "CNI_PATH": str(binary.parent),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                    f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
        # Two labs may both have a node called n1: keep each node's IPAM lock in its own run dir.
        "L3NET_CNI_LOCK_DIR": str(rec["cwd"]),
    })
    # Network namespace only (no node mount namespace): the runtime runs plugins on the host's
    # file system, and CNI_NETNS must resolve to the pod's namespace file. The plugin is spawned from
    # this thread switched into the node's namespace (a child starts in its parent thread's namespaces),
    # as a runtime in the node would exec it: no `nsenter` exec in front of it on the ADD's clock.
    rt = NodeRuntime(node, rec["netns"], rec["cwd"])
    _log.info("cni %s node=%s pod=%s/%s container=%s", command, node, ns, name, container_id[:12])
    with netns.in_netns(rt.netns):
        return subprocess.run([str(binary)], input=json.dumps(conf), env=env, capture_output=True, text=True,
                              timeout=timeout)


def _error_text(proc: subprocess.CompletedProcess[str]) -> str:
    try:
        err = json.loads(proc.stdout)
        return f"CNI error {err.get('code')}: {err.get('msg')} {err.get('details') or ''}".strip()
    except ValueError:
        return (proc.stdout + proc.stderr).strip()[-800:] or f"exit {proc.returncode}"


def add_pod(state: st.LabState, node: str, ref: str, labels: dict[str, str] | None = None,
            ips: list[str] | None = None) -> dict[str, Any]:
    """Create pod ``ref`` on ``node`` through the CNI plugin; returns its record (with ``ip``)."""
    ns, name = parse_pod_ref(ref)
    key = f"{ns}/{name}"
    labels = dict(labels or {})
    base = state.data.get("base") or f"clab-{state.name}"
    with state.locked(pods=[key]):
        if key in state.data["pods"]:
            raise LabError(f"pod {key} already exists on node {state.data['pods'][key]['node']}")
        if node not in state.data["nodes"]:
            raise LabError(f"no node {node!r} in lab {state.name} (nodes: {', '.join(state.data['nodes'])})")
        pod_ns = pod_netns_name(base, ns, name)
        container_id = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        record = {"node": node, "netns": pod_ns, "container_id": container_id, "labels": labels,
                  "ips_requested": list(ips or []), "ip": None}
        state.data["pods"][key] = record  # saved as the lock is left: before the namespace exists, so `down`
        # removes it even if we die now (a line in the pod journal, not a rewrite of every pod's record)
    netns.create(pod_ns)
    conf = network_config(state, node, labels, list(ips or []))
    proc = _invoke(state, node, "ADD", container_id, pod_ns, ns, name, conf)
    if proc.returncode != 0:
        message = _error_text(proc)
        _invoke(state, node, "DEL", container_id, pod_ns, ns, name, conf)
        netns.delete(pod_ns)
        with state.locked(pods=[key]):
            state.data["pods"].pop(key, None)
        raise LabError(f"pod {key} on {node}: {message}")
    result = json.loads(proc.stdout)
    addrs = [ip["address"] for ip in result.get("ips", [])]
    with state.locked(pods=[key]):
        rec = state.data["pods"][key]
        rec["ip"] = addrs[0].split("/")[0] if addrs else None
        rec["addresses"] = addrs
        record = rec
    return record


def cni_del_recorded(state: st.LabState, key: str, pod: dict[str, Any], timeout: float = 60) -> None:
    ns, name = key.split("/", 1)
    conf = network_config(state, pod["node"], pod.get("labels", {}), pod.get("ips_requested", []))
    proc = _invoke(state, pod["node"], "DEL", pod["container_id"], pod["netns"], ns, name, conf, timeout)
    if proc.returncode != 0:
        raise LabError(f"pod {key}: DEL failed: {_error_text(proc)}")


def del_pod(state: st.LabState, ref: str) -> None:
    ns, name = parse_pod_ref(ref)
    key = f"{ns}/{name}"
    pod = state.data["pods"].get(key)
    if pod is None:
        raise LabError(f"no pod {key} in lab {state.name}")
    cni_del_recorded(state, key, pod)
    for pid in st.pids_in_netns(netns.netns_path(pod["netns"])):
        st.stop_process({"pid": pid, "starttime": st.starttime(pid)}, grace=1.0)
    netns.delete(pod["netns"])
    with state.locked(pods=[key]):
        state.data["pods"].pop(key, None)


def exec_argv(state: st.LabState, target: str, cmd: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    """argv, env and cwd that run ``cmd`` in node ``target`` or pod ``NAMESPACE/NAME``."""
    if target in state.data["nodes"]:
        rt = NodeRuntime.from_state(target, state.data["nodes"][target])
        return rt.argv(cmd), rt.full_env(), rt.cwd
    if "/" in target:
        key = "/".join(parse_pod_ref(target))
        pod = state.data["pods"].get(key)
        if pod is not None:
            return ["nsenter", f"--net={netns.netns_path(pod['netns'])}", "--", *cmd], dict(os.environ), None
    raise LabError(f"{target!r} is neither a node ({', '.join(state.data['nodes'])}) "
                   f"nor a pod ({', '.join(state.data['pods']) or 'none'}) of lab {state.name}")

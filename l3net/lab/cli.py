"""l3net.lab.cli: the ``l3net lab ...`` command line (registered by :mod:`l3net.cli.agent_main`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from l3net.errors import DatastoreError
from l3net.lab import state as st
from l3net.lab.cgroups import CgroupError, enter_fn, is_frozen
from l3net.lab.errors import LabError
from l3net.lab.runtime import down, status_lines
from l3net.lab.topology import Topology, TopologyError, load_topology


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lab = subparsers.add_parser("lab", help="containerlab topologies on network namespaces, and the demo",
                                description="Run containerlab topology files (*.clab.yml) on network namespaces.")
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    lab.set_defaults(func=lambda _a: (lab.print_help(), 1)[1])

    p = sub.add_parser("up", help="create every namespace, link and process of a topology")
    p.add_argument("topology", help="a *.clab.yml file")
    p.add_argument("--name", help="override the lab name from the file")
    p.add_argument("--no-wait", action="store_true", help="do not wait for agents and BGP sessions")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for BGP (default 90)")
    p.add_argument("--keep-on-error", action="store_true", help="leave a half-built lab for debugging")
    p.add_argument("--etcd-members", type=int, default=None, choices=(1, 3, 5),
                   help="members of the lab's own etcd cluster (default 1, or $L3NET_LAB_ETCD_MEMBERS)")
    p.add_argument("--kubernetes", action="store_true",
                   help="also run a Kubernetes API stand-in, the kube-controller and a kubelet per node; "
                        "prints the KUBECONFIG")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("kube-serve", help=argparse.SUPPRESS)  # started by `lab up --kubernetes`
    p.add_argument("lab")
    p.set_defaults(func=_cmd_kube_serve)

    p = sub.add_parser("down", help="remove everything a lab created (works after a crash too)")
    p.add_argument("lab", help="a *.clab.yml file or a lab name")
    p.add_argument("--name", help="the lab name, if it was overridden at up")
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="nodes, processes and BGP state of running labs")
    p.add_argument("lab", nargs="?", help="a *.clab.yml file or a lab name (default: every running lab)")
    p.set_defaults(func=_cmd_status)

    _add_fault_parsers(sub)

    p = sub.add_parser("validate", help="check a topology file without creating anything")
    p.add_argument("topology")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("exec", help="run a command in a node or a pod: exec NODE|NS/NAME -- CMD...")
    p.add_argument("--lab", help="lab name or file (default: the only running lab)")
    p.add_argument("target")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_exec)

    pod = sub.add_parser("pod", help="workloads wired by the l3net-cni plugin")
    psub = pod.add_subparsers(dest="pod_command", metavar="POD_COMMAND")
    pod.set_defaults(func=lambda _a: (pod.print_help(), 1)[1])
    p = psub.add_parser("add", help="add NODE NAMESPACE/NAME")
    p.add_argument("--lab")
    p.add_argument("node")
    p.add_argument("pod")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--ip", action="append", default=[], help="request this address (CNI args.cni.ips)")
    p.set_defaults(func=_cmd_pod_add)
    p = psub.add_parser("del", help="del NAMESPACE/NAME")
    p.add_argument("--lab")
    p.add_argument("pod")
    p.set_defaults(func=_cmd_pod_del)
    p = psub.add_parser("list", help="list the lab's pods")
    p.add_argument("--lab")
    p.set_defaults(func=_cmd_pod_list)

    ns = sub.add_parser("namespace", help="Kubernetes namespace labels (for NetworkPolicy namespaceSelector)")
    nsub = ns.add_subparsers(dest="ns_command", metavar="NS_COMMAND")
    ns.set_defaults(func=lambda _a: (ns.print_help(), 1)[1])
    p = nsub.add_parser("label", help="label NAMESPACE k=v... (k- removes k)")
    p.add_argument("--lab")
    p.add_argument("namespace")
    p.add_argument("labels", nargs="+")
    p.set_defaults(func=_cmd_ns_label)

    p = sub.add_parser("demo", help="bring up two-node-rr and show pure-L3 pod networking and policy")
    p.add_argument("--topology", default=None, help="default: topologies/two-node-rr.clab.yml")
    p.set_defaults(func=_cmd_demo)


def _add_fault_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    node = sub.add_parser("node", help="break a node: stop|start|restart|pause|unpause NODE",
                          description="Act on every process of a node (its cgroup), as docker stop/start/pause do.")
    node.add_argument("action", choices=("stop", "start", "restart", "pause", "unpause"))
    node.add_argument("node")
    node.add_argument("--lab", help="lab name or file (default: the only running lab)")
    node.add_argument("--grace", type=float, default=0.0,
                      help="stop/restart: seconds between SIGTERM and SIGKILL (default 0: SIGKILL, a crash)")
    node.set_defaults(func=_cmd_node)

    link = sub.add_parser("link", help="link set NODE:IF down|up")
    link.add_argument("verb", choices=("set",))
    link.add_argument("endpoint", metavar="NODE:IF")
    link.add_argument("state", choices=("down", "up"))
    link.add_argument("--lab")
    link.set_defaults(func=_cmd_link)

    p = sub.add_parser("netem", help="impair what NODE:IF sends: --delay MS --jitter MS --loss PCT, or --clear")
    p.add_argument("endpoint", metavar="NODE:IF")
    p.add_argument("--delay", type=float, default=0.0, metavar="MS")
    p.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    p.add_argument("--loss", type=float, default=0.0, metavar="PCT")
    p.add_argument("--clear", action="store_true", help="remove the impairment")
    p.add_argument("--lab")
    p.set_defaults(func=_cmd_netem)

    p = sub.add_parser("etcd", help="the lab's etcd: stop|start|pause|unpause [MEMBER], leader, status")
    p.add_argument("action", choices=("stop", "start", "pause", "unpause", "leader", "status"))
    p.add_argument("member", nargs="?", help="e1, e2, ... (default: every member)")
    p.add_argument("--lab")
    p.add_argument("--grace", type=float, default=0.0, help="stop: seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=_cmd_etcd)


# -- helpers ------------------------------------------------------------------

def _fail(msg: str) -> int:
    print(f"l3net lab: {msg}", file=sys.stderr)
    return 1


def _load(path: str, name: str | None = None) -> Topology:
    topo = load_topology(path)
    return dataclasses.replace(topo, name=name) if name else topo


def _looks_like_file(arg: str) -> bool:
    return arg.endswith((".yml", ".yaml")) or os.sep in arg


def _state(lab: str | None) -> st.LabState:
    if lab is None:
        labs = st.running_labs()
        if len(labs) != 1:
            raise LabError("no lab is running" if not labs else f"several labs run ({', '.join(labs)}): use --lab")
        lab = labs[0]
    name = _load(lab).name if _looks_like_file(lab) else lab
    state = st.LabState.load(name)
    if state is None:
        raise LabError(f"lab {name!r} is not running (no state in {st.lab_dir(name)})")
    return state


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise LabError(f"expected key=value, got {item!r}")
        out[k] = v
    return out


def _guard(fn):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except TopologyError as exc:
            return _fail(str(exc))
        except (LabError, CgroupError, DatastoreError) as exc:
            return _fail(str(exc))
    run.__name__ = fn.__name__
    return run


def _check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("needs root (network namespaces, veths, mounts): run it with sudo")


# -- commands -----------------------------------------------------------------

@_guard
def _cmd_validate(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    print(f"{args.topology}: ok: lab {topo.name}, {len(topo.nodes)} nodes, {len(topo.links)} links")
    return 0


@_guard
def _cmd_up(args: argparse.Namespace) -> int:
    from l3net.lab.runtime import LabRuntime
    from l3net.lab.summary import print_summary

    topo = _load(args.topology, args.name)  # all checks happen here, before anything is created
    _check_root()
    state = LabRuntime(topo, etcd_members=args.etcd_members).up(wait_bgp=not args.no_wait, timeout=args.timeout,
                                                                keep_on_error=args.keep_on_error,
                                                                kubernetes=args.kubernetes)
    print_summary(state, topo)
    return 0


@_guard
def _cmd_kube_serve(args: argparse.Namespace) -> int:
    from l3net.lab.kubelab import serve

    return serve(args.lab)


@_guard
def _cmd_down(args: argparse.Namespace) -> int:
    _check_root()
    topo = None
    if _looks_like_file(args.lab) and Path(args.lab).exists():
        topo = _load(args.lab, args.name)
        name = topo.name
    else:
        name = args.name or args.lab
    leftovers = down(name, topo)
    if leftovers:
        return _fail("could not remove: " + ", ".join(leftovers))
    print(f"lab {name} is down")
    return 0


@_guard
def _cmd_status(args: argparse.Namespace) -> int:
    names = [(_load(args.lab).name if _looks_like_file(args.lab) else args.lab)] if args.lab else st.running_labs()
    if not names:
        print(f"no lab is running (run dir {st.run_base()})")
        return 0
    for name in names:
        state = st.LabState.load(name)
        if state is None:
            return _fail(f"lab {name!r} is not running")
        print("\n".join(status_lines(state)))
    return 0


@_guard
def _cmd_exec(args: argparse.Namespace) -> int:
    from l3net.lab.pods import exec_argv

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("usage: l3net lab exec NODE|NAMESPACE/NAME -- CMD...")
    state = _state(args.lab)
    argv, env, cwd = exec_argv(state, args.target, cmd)
    group = state.data["nodes"].get(args.target, {}).get("cgroup")
    if group and is_frozen(Path(group)):
        raise LabError(f"node {args.target} is paused: run `l3net lab node unpause {args.target}` first")
    # In a node, as `docker exec` is: the node's cgroup, so pause and stop reach it and `down` ends it.
    preexec = enter_fn(Path(group)) if group and os.geteuid() == 0 else None
    return subprocess.run(argv, env=env, cwd=cwd, preexec_fn=preexec).returncode


@_guard
def _cmd_pod_add(args: argparse.Namespace) -> int:
    from l3net.lab.pods import add_pod

    _check_root()
    rec = add_pod(_state(args.lab), args.node, args.pod, _kv(args.label), args.ip)
    print(f"{args.pod} on {args.node}: {rec['ip']} (netns {rec['netns']})")
    return 0


@_guard
def _cmd_pod_del(args: argparse.Namespace) -> int:
    from l3net.lab.pods import del_pod

    _check_root()
    del_pod(_state(args.lab), args.pod)
    print(f"{args.pod} deleted")
    return 0


@_guard
def _cmd_pod_list(args: argparse.Namespace) -> int:
    state = _state(args.lab)
    print(f"{'POD':<28} {'NODE':<12} {'IP':<18} LABELS")
    for key, pod in sorted(state.data["pods"].items()):
        labels = ",".join(f"{k}={v}" for k, v in pod.get("labels", {}).items())
        print(f"{key:<28} {pod['node']:<12} {pod.get('ip') or '-':<18} {labels}")
    return 0


@_guard
def _cmd_ns_label(args: argparse.Namespace) -> int:
    from l3net.lab.namespaces import label_namespace

    state = _state(args.lab)
    labels = label_namespace(state.etcd_endpoints, args.namespace, args.labels)
    print(f"namespace {args.namespace}: " + (",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"))
    return 0


@_guard
def _cmd_demo(args: argparse.Namespace) -> int:
    from l3net.lab.demo import run_demo

    _check_root()
    return run_demo(args.topology)


@_guard
def _cmd_node(args: argparse.Namespace) -> int:
    from l3net.lab import faults

    _check_root()
    state = _state(args.lab)
    if args.action == "stop":
        n = faults.node_stop(state, args.node, grace=args.grace)
        print(f"node {args.node}: stopped ({n} processes ended)")
    elif args.action in ("start", "restart"):
        if args.action == "restart":
            faults.node_stop(state, args.node, grace=args.grace)
        pids = faults.node_start(state, args.node)
        print(f"node {args.node}: started (pid {', '.join(map(str, pids))})")
    elif args.action == "pause":
        faults.node_pause(state, args.node)
        print(f"node {args.node}: paused ({len(faults.node_pids(state, args.node))} processes frozen)")
    else:
        faults.node_unpause(state, args.node)
        print(f"node {args.node}: running")
    return 0


@_guard
def _cmd_link(args: argparse.Namespace) -> int:
    from l3net.lab import faults

    _check_root()
    faults.link_set(_state(args.lab), args.endpoint, up=args.state == "up")
    print(f"{args.endpoint}: {args.state}")
    return 0


@_guard
def _cmd_netem(args: argparse.Namespace) -> int:
    from l3net.lab import faults

    _check_root()
    state = _state(args.lab)
    if args.clear:
        if args.delay or args.jitter or args.loss:
            raise LabError("--clear takes no --delay, --jitter or --loss")
        faults.netem_clear(state, args.endpoint)
        print(f"{args.endpoint}: no impairment")
        return 0
    if not (args.delay or args.jitter or args.loss):
        raise LabError("give --delay MS, --jitter MS and/or --loss PCT (or --clear)")
    faults.netem(state, args.endpoint, delay_ms=args.delay, jitter_ms=args.jitter, loss_pct=args.loss)
    print(f"{args.endpoint}: delay {args.delay:g}ms jitter {args.jitter:g}ms loss {args.loss:g}%")
    return 0


@_guard
def _cmd_etcd(args: argparse.Namespace) -> int:
    from l3net.lab import faults

    _check_root()
    state = _state(args.lab)
    if args.action == "leader":
        if args.member:
            raise LabError("etcd leader takes no member")
        print(faults.etcd_leader(state))
        return 0
    if args.action == "status":
        for m in faults.etcd_members(state) if args.member is None else [args.member]:
            print(f"{m}: {faults.etcd_member_state(state, m)}")
        return 0
    verb = {"stop": lambda: faults.etcd_stop(state, args.member, grace=args.grace),
            "start": lambda: faults.etcd_start(state, args.member),
            "pause": lambda: faults.etcd_pause(state, args.member),
            "unpause": lambda: faults.etcd_unpause(state, args.member)}[args.action]
    names = verb()
    done = {"stop": "stopped", "start": "started", "pause": "paused", "unpause": "running"}[args.action]
    print(f"etcd {', '.join(names) or '(nothing to do)'}: {done}")
    return 0

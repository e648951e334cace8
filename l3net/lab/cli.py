"""l3net.lab.cli: the ``l3net lab ...`` command line (registered by :mod:`l3net.cli.agent_main`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from l3net.lab import state as st
from l3net.lab.runtime import LabError, down, status_lines
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
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="remove everything a lab created (works after a crash too)")
    p.add_argument("lab", help="a *.clab.yml file or a lab name")
    p.add_argument("--name", help="the lab name, if it was overridden at up")
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("status", help="nodes, processes and BGP state of running labs")
    p.add_argument("lab", nargs="?", help="a *.clab.yml file or a lab name (default: every running lab)")
    p.set_defaults(func=_cmd_status)

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
        except LabError as exc:
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
    state = LabRuntime(topo).up(wait_bgp=not args.no_wait, timeout=args.timeout, keep_on_error=args.keep_on_error)
    print_summary(state, topo)
    return 0


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
    argv, env, cwd = exec_argv(_state(args.lab), args.target, cmd)
    return subprocess.run(argv, env=env, cwd=cwd).returncode


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

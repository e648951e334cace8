"""bench.footprint: RSS and CPU of one node's agent + ExaBGP at 100 and 500 workloads, next to BIRD and etcd.

A real two-node lab (``l3net lab`` runtime: etcd, ``l3net agent`` on n1 and n2, ``l3net
route-reflector`` on rr1) gets 100 pods per node through ``l3net-cni``, then 500; a BIRD 2 speaker on
b1 peers with the same reflector, learns every block and installs them in its kernel (what BIRD does
on a Calico node). At each size, once the routes are everywhere and a settle time has passed, each
process tree is sampled over idle windows, then over churn windows during which n1 gets one new pod
per second (the pods stay: n1 ends a size's churn with that many more): RSS (VmRSS, summed over the
tree) at the end of the window and CPU as utime+stime from /proc/PID/stat over the window, in % of
one core. "agent+ExaBGP" is the agent's process tree: the Python agent, its ExaBGP child and
ExaBGP's bridge helper. Targets (issue 18, at 100 pods): <= 100 MiB and <= 1 % of a core when idle
(issue 8 had 150 MiB, 2 %); the 500-pod and churn figures are reported without a target.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import threading
import time
from typing import Any

from bench.addstages import declare_stages, endpoint_ms, find_trace, stage_ms
from bench.framework import Context, Result, need_all, need_root, percentile
from bench.labrig import (
    CLK_TCK,
    BenchLab,
    RouteWatch,
    bird_speaker_conf,
    cmdline,
    cpu_ticks,
    proc_tree,
    rss_bytes,
    start_bird,
)

_log = logging.getLogger(__name__)

NAME = "footprint"
TITLE = "footprint: RSS and CPU of agent + ExaBGP (100 and 500 workloads, idle and one pod/s) vs BIRD and etcd"
NEEDS = ["root", "bird", "birdc", "etcd", "stdbuf"]
WORKLOADS = 100          # the size issue 18's RSS and CPU targets are set at
SIZES = (10, WORKLOADS, 500)  # workloads per node, grown in this order
IDLE_WINDOWS, CHURN_WINDOWS, WINDOW_S = 10, 10, 10.0
# Churn pods take a static address in a fresh /26 from here up, so each ADD claims a block for n1 and the
# block is announced (a pod in an existing block makes no BGP update); its DEL empties and releases it.
CHURN_BLOCK_BASE = (10 << 24) | (244 << 16) | (128 << 8)   # 10.244.128.0, far above the sizes' own blocks
ROUTE_WAIT_S = 10.0
TARGET_FLAT = 1.2        # issue 18: ADD -> remote route p50 with 500 pods on the node <= 1.2 x with 10
TARGET_RSS_MIB = 100.0  # issue 18 (issue 8: 150)
TARGET_CPU_PCT = 1.0   # issue 18 (issue 8: 2)
MIB = 1024 * 1024

TOPOLOGY = """\
name: fp
mgmt:
  ipv4-subnet: 172.31.248.0/24
topology:
  kinds:
    linux:
      env:
        L3NET_IP_AUTODETECTION_METHOD: interface=eth1
      sysctls:
        net.ipv4.ip_forward: 1
  nodes:
    fabric: {kind: bridge}
    rr1: {kind: linux, labels: {l3net.io/role: route-reflector}}
    n1: {kind: linux, labels: {l3net.io/role: node}}
    n2: {kind: linux, labels: {l3net.io/role: node}}
    b1: {kind: linux}
  links:
    - {endpoints: ["rr1:eth1", "fabric:rr1"], ipv4: ["10.0.0.2/24"]}
    - {endpoints: ["n1:eth1", "fabric:n1"], ipv4: ["10.0.0.11/24"]}
    - {endpoints: ["n2:eth1", "fabric:n2"], ipv4: ["10.0.0.12/24"]}
    - {endpoints: ["b1:eth1", "fabric:b1"], ipv4: ["10.0.0.21/24"]}
"""

MANIFESTS = {
    "10-ippool.yaml": "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: bench-pool}\n"
                      "spec: {cidr: 10.244.0.0/16, blockSize: 26, nodeSelector: all()}\n",
    "20-bgp.yaml": "---\n".join([
        "apiVersion: l3net.io/v1\nkind: BGPConfiguration\nmetadata: {name: default}\n"
        "spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}\n",
        "apiVersion: l3net.io/v1\nkind: Node\nmetadata: {name: rr1, labels: {route-reflector: 'true'}}\n"
        "spec: {bgp: {ipv4Address: 10.0.0.2/24, routeReflectorClusterID: 224.0.0.1}}\n",
        "apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: to-rr}\n"
        "spec: {nodeSelector: \"!has(route-reflector)\", peerSelector: \"route-reflector == 'true'\"}\n",
        # BIRD on b1 is an ordinary iBGP peer of the reflector, as a BIRD-based node would be.
        "apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: rr-to-bird}\n"
        "spec: {node: rr1, peerIP: 10.0.0.21, asNumber: 64512}\n",
    ]),
}


def _tree_usage(pid: int) -> tuple[list[int], int, int]:
    pids = proc_tree(pid)
    rss = ticks = 0
    for p in pids:
        try:
            rss += rss_bytes(p)
            ticks += cpu_ticks(p)
        except OSError:
            continue  # exited between listing and reading
    return pids, rss, ticks


def metric(name: str, size: int, first: int = WORKLOADS) -> str:
    """The metric of ``name`` at ``size`` workloads per node: the run's first size (the target size in a
    full run) keeps the plain name, the targets' metric."""
    return name if size == first else f"{name}_{size}pods"


def run(ctx: Context) -> Result:
    need_root()
    need_all(["bird", "birdc", "etcd", "stdbuf"])
    sizes = ctx.size(SIZES, (4, 8))
    idle_windows, churn_windows = ctx.size(IDLE_WINDOWS, 1), ctx.size(CHURN_WINDOWS, 1)
    window_s = ctx.size(WINDOW_S, 3.0)
    settle_s = ctx.size(10.0, 2.0)
    ws = ctx.workspace
    res = Result(NAME, TITLE, ctx.quick)
    res.setup.update({"workloads_per_node": list(sizes), "idle_windows": idle_windows,
                      "churn_windows": churn_windows, "window_s": window_s, "settle_s": settle_s,
                      "churn": "during each churn window n1 gets one new pod per second through l3net-cni, with a "
                               "static address in a fresh /26 (so n1 claims and announces the block), timed from "
                               "before the ADD to the block's route in n2's kernel (ip -ts monitor route), then "
                               "deleted (its block is released and withdrawn): the node stays at its size",
                      "nodes": "n1, n2 (l3net agent + ExaBGP), rr1 (l3net route-reflector), b1 (BIRD 2 speaker)",
                      "cpu": "utime+stime over the window / wall time, % of one core; RSS = VmRSS summed over "
                             "the process tree"})
    lab = BenchLab(ws, "fp", TOPOLOGY, MANIFESTS)
    lab.up()
    bird = start_bird(ws, lab.ns("b1"), bird_speaker_conf("10.0.0.21", "10.0.0.2", learn_prefix="10.250.0.0/16"),
                      "b1")
    lab.wait_bgp()
    bird.wait_established(1)
    grown_to = 0   # pods per node so far (both nodes grow together)
    churned = 0
    base = WORKLOADS if WORKLOADS in sizes else sizes[0]
    watch = RouteWatch(ws, lab.ns("n2"))
    trees: dict[str, int | None] = {}
    stage_samples: dict[str, list[dict[str, Any]]] = {f"{size} pods": [] for size in sizes}
    for size in sizes:
        t0 = time.monotonic()
        jobs = [(node, f"fp-{node}-{i:03d}") for i in range(grown_to, size) for node in ("n1", "n2")]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            recs = list(pool.map(lambda job: lab.add_pod(job[0], job[1]), jobs))
        grown_to = size
        res.setup[f"pods_added_s_{size}"] = round(time.monotonic() - t0, 1)
        res.setup[f"blocks_{size}"] = _wait_blocks_everywhere(lab, recs, timeout=60.0 + size * 0.2)
        time.sleep(settle_s)
        trees = {
            "n1 agent+ExaBGP": _pid(lab, "n1", "agent"),
            "n2 agent+ExaBGP": _pid(lab, "n2", "agent"),
            "l3net RR (rr1)": _pid(lab, "rr1", "route-reflector"),
            "BIRD (b1)": bird.proc.pid,
            "etcd": lab.etcd_pid(),
        }
        missing = [k for k, v in trees.items() if v is None]
        if missing:
            raise RuntimeError(f"no running process for: {', '.join(missing)}")
        for w in range(idle_windows):
            _window(res, trees, window_s, metric("rss_mib", size, base), metric("idle_cpu_pct", size, base))
            _log.info("footprint size=%d idle window=%d done", size, w)
        for w in range(churn_windows):
            route_ms, staged = _churn_window(res, lab, watch, trees, window_s, churned,
                                             metric("churn_rss_mib", size, base), metric("churn_cpu_pct", size, base))
            stage_samples[f"{size} pods"] += staged
            churned += len(route_ms)
            for ms in route_ms:
                res.sample("add_to_remote_route_ms", f"{size} pods", ms, unit="ms", better="lower")
            if route_ms:
                res.sample("add_to_remote_route_p50_ms", f"{size} pods", percentile(route_ms, 50), unit="ms",
                           better="lower")
            _log.info("footprint size=%d churn window=%d done pods=%d add_to_remote_route_ms=%s", size, w,
                      len(route_ms), [round(x) for x in route_ms])
        res.setup[f"churn_pods_after_{size}"] = churned
    res.setup["processes"] = {k: [cmdline(p)[:120] for p in proc_tree(v)] for k, v in trees.items() if v}
    res.setup["stages"] = ("stage_samples: each churn ADD's stages from n1's /debug/traces, per node size: the "
                           "stages of bench.control_plane (lab_exec ... remote_install; see bench/README.md)")
    declare(res)
    declare_stages(res, stage_samples)
    return res


def churn_block(k: int) -> tuple[str, str]:
    """The k-th churn pod's static address and its /26."""
    net = ipaddress.IPv4Address(CHURN_BLOCK_BASE + 64 * k)
    return str(net + 1), f"{net}/26"


def _churn_window(res: Result, lab: BenchLab, watch: RouteWatch, trees: dict[str, int | None], window_s: float,
                  first: int, rss_name: str, cpu_name: str) -> tuple[list[float], list[dict[str, Any]]]:
    """One churn window: n1 gets a new pod in a fresh block every second meanwhile, each deleted once its
    block is routed in n2; returns each ADD's milliseconds from before the ADD to that route, and the stage
    samples of those whose trace n1's agent still holds (read after the window, off the timed path)."""
    stop = threading.Event()
    route_ms: list[float] = []
    adds: list[tuple[str, float, float]] = []  # container ID, bench clock start, route seen in n2
    errors: list[BaseException] = []

    def churn() -> None:
        k = first
        try:
            while not stop.is_set():
                ip, block = churn_block(k)
                name = f"fp-n1-churn-{k:04d}"
                t0 = time.monotonic()
                rec = lab.add_pod("n1", name, ips=[ip])
                seen = watch.wait(block, ROUTE_WAIT_S)
                route_ms.append((seen - t0) * 1000.0)
                adds.append((str(rec.get("container_id") or ""), t0, seen))
                lab.del_pod(name)
                k += 1
                stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))
        except BaseException as exc:   # reported by the window, never lost on the thread
            errors.append(exc)

    thread = threading.Thread(target=churn, name="fp-churn", daemon=True)
    thread.start()
    try:
        _window(res, trees, window_s, rss_name, cpu_name)
    finally:
        stop.set()
        thread.join(timeout=60)
    if errors:
        raise RuntimeError(f"churn failed: {errors[0]!r}") from errors[0]
    return route_ms, _stage_samples(lab.add_traces("n1"), adds)


def _stage_samples(doc: dict[str, Any], adds: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """The stage samples (``bench.addstages``) of ``adds`` found in n1's ``/debug/traces`` document."""
    out = []
    for cid, t0, seen in adds:
        trace = find_trace(doc, cid)
        if trace is None:
            continue
        out.append({"container_id": cid, "add_to_route_ms": round((seen - t0) * 1000, 3),
                    "stages_ms": {k: round(v, 3) for k, v in stage_ms(trace, t0, seen).items()},
                    "endpoint_stages_ms": {k: round(v, 3) for k, v in endpoint_ms(trace).items()}})
    return out


def _window(res: Result, trees: dict[str, int | None], window_s: float, rss_name: str, cpu_name: str) -> None:
    """One window over every tree: RSS at its end and CPU over it, as samples of ``rss_name`` and ``cpu_name``."""
    start = {k: _tree_usage(v) for k, v in trees.items() if v}
    split_start = _split(trees["n1 agent+ExaBGP"])
    w0 = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - w0
    for k, (_pids, _rss, ticks0) in start.items():
        _pids1, rss1, ticks1 = _tree_usage(trees[k])  # type: ignore[arg-type]
        res.sample(rss_name, k, rss1 / MIB, unit="MiB", better="lower")
        res.sample(cpu_name, k, cpu_pct(ticks1 - ticks0, elapsed), unit="% of a core", better="lower")
    split_end = _split(trees["n1 agent+ExaBGP"])
    for part in ("agent", "ExaBGP+helper"):
        res.sample(rss_name, f"n1 {part}", split_end[part][0] / MIB, unit="MiB", better="lower")
        res.sample(cpu_name, f"n1 {part}", cpu_pct(split_end[part][1] - split_start[part][1], elapsed),
                   unit="% of a core", better="lower")


def cpu_pct(ticks: int, elapsed: float) -> float:
    """CPU ticks (utime+stime, 1/CLK_TCK s each) used over ``elapsed`` wall seconds, in % of one core."""
    return 100.0 * ticks / CLK_TCK / elapsed


def declare(res: Result) -> None:
    """The targets and ratios, from the samples in ``res`` (pure: unit-tested with synthetic samples)."""
    for node in ("n1", "n2"):
        k = f"{node} agent+ExaBGP"
        rss, cpu = res.metrics["rss_mib"].samples[k], res.metrics["idle_cpu_pct"].samples[k]
        res.target(f"{k} RSS", res.median("rss_mib", k), unit="MiB", op="<=", threshold=TARGET_RSS_MIB,
                   rounds=len(rss), spread=rss)
        res.target(f"{k} idle CPU", res.median("idle_cpu_pct", k), unit="% of a core", op="<=",
                   threshold=TARGET_CPU_PCT, rounds=len(cpu), spread=cpu)
    res.ratio("agent+ExaBGP/BIRD RSS", "rss_mib", "n1 agent+ExaBGP", "BIRD (b1)")
    res.ratio("agent+ExaBGP/etcd RSS", "rss_mib", "n1 agent+ExaBGP", "etcd")
    res.ratio("agent+ExaBGP/BIRD idle CPU", "idle_cpu_pct", "n1 agent+ExaBGP", "BIRD (b1)")
    res.ratio("l3net RR/BIRD RSS", "rss_mib", "l3net RR (rr1)", "BIRD (b1)")
    p50 = res.metrics.get("add_to_remote_route_p50_ms")
    sizes = sorted(int(v.split()[0]) for v in p50.samples) if p50 is not None else []
    if len(sizes) >= 2:
        # one churn window at the largest size paired with the same window at the smallest: median of the
        # per-window p50 ratios (issue 18: flat in the node's size)
        res.ratio(f"ADD -> remote route p50, {sizes[-1]} vs {sizes[0]} pods on the node",
                  "add_to_remote_route_p50_ms", f"{sizes[-1]} pods", f"{sizes[0]} pods", op="<=",
                  threshold=TARGET_FLAT, note="per churn window, paired by window index; lower is better")


def _pid(lab: BenchLab, node: str, what: str) -> int | None:
    procs = [p for p in lab.processes(node) if p["what"] == what]
    return int(procs[0]["pid"]) if procs else None


def _split(agent_pid: int | None) -> dict[str, tuple[int, int]]:
    """(rss, ticks) of the agent process itself and of its ExaBGP subtree."""
    assert agent_pid is not None
    out = {"agent": (rss_bytes(agent_pid), cpu_ticks(agent_pid)), "ExaBGP+helper": (0, 0)}
    for p in proc_tree(agent_pid):
        if p == agent_pid:
            continue
        try:
            rss, ticks = out["ExaBGP+helper"]
            out["ExaBGP+helper"] = (rss + rss_bytes(p), ticks + cpu_ticks(p))
        except OSError:
            continue
    return out


def _wait_blocks_everywhere(lab: BenchLab, recs: list[dict[str, object]], timeout: float = 60.0) -> int:
    """Every pod's /26 block reachable from the other node and from BIRD: the control plane is done."""
    from l3net import netns

    blocks = {(str(r["node"]), str(ipaddress.ip_network(f"{r['ip']}/26", strict=False))) for r in recs}
    deadline = time.monotonic() + timeout
    pending = set(blocks)
    while pending and time.monotonic() < deadline:
        for node, blk in list(pending):
            other = "n2" if node == "n1" else "n1"
            ok = all(" via " in netns.run(lab.ns(obs), ["ip", "route", "show", blk], check=False).stdout
                     for obs in (other, "b1"))
            if ok:
                pending.discard((node, blk))
        time.sleep(0.3)
    if pending:
        raise RuntimeError(f"blocks not routed after {timeout:.0f}s: {sorted(pending)[:5]}")
    return len(blocks)

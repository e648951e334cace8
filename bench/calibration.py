"""bench.calibration: how fast this host runs user-space work now, recorded beside every result.

On a shared VM the same code gives 75 ms one morning and 190 ms that evening: issue 18's absolute
time targets (ADD p99, a policy change, idle CPU, routes/s) pass or fail with the host's state.
So every benchmark's JSON carries three baselines that contain no l3net logic, measured right
before the benchmark and right after it (``"host": {"before": ..., "after": ...}``):

  interpreter_start_ms  fork, exec and start of this interpreter without ``site`` (``-S -c pass``, as
                        a node's and the lab's ``l3net-cni`` start it): what every CNI call pays before
                        the shim runs; median of several starts
  python_work_ms        a fixed pure-Python job (encode and decode a Calico-shaped /26 block, as IPAM
                        and the agent do): the host's speed for the interpreter's own work; median
  etcd_txn_per_s        single-key create transactions per second against a private etcd on tmpfs,
                        through l3net's etcd client (ipam's floor); median of rounds

Two runs of a benchmark compare only when these agree; a miss that moves with them is the host's.
The verdicts stay on the absolute targets: this explains a result, it does not grade one.
A part that cannot be measured (no etcd binary) is recorded as the reason, never as a number,
and never stops the benchmark.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

_log = logging.getLogger(__name__)

FIELDS = ("interpreter_start_ms", "python_work_ms", "etcd_txn_per_s")
UNITS = {"interpreter_start_ms": "ms", "python_work_ms": "ms", "etcd_txn_per_s": "txn/s"}
LABELS = {"interpreter_start_ms": "interpreter start", "python_work_ms": "Python work",
          "etcd_txn_per_s": "etcd single-key txn"}


def _median_ms(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def interpreter_start_ms(repeats: int) -> float:
    """Median wall time of ``<this interpreter> -S -c pass``."""
    return _median_ms(lambda: subprocess.run([sys.executable, "-S", "-c", "pass"], check=True), repeats)


def _block_document() -> dict[str, Any]:
    """A /26 block as IPAM stores it, half full (the work is fixed: the same document on every host)."""
    used = range(0, 64, 2)
    return {
        "cidr": "10.200.0.0/26", "affinity": "host:node-a",
        "allocations": [i // 2 if i in used else None for i in range(64)],
        "unallocated": [i for i in range(64) if i not in used],
        "attributes": [{"handle_id": f"k8s-pod-network.{i:016x}",
                        "secondary": {"node": "node-a", "pod": f"pod-{i}", "namespace": "bench"}} for i in used],
        "sequenceNumber": 64, "sequenceNumberForAllocation": {str(i): i for i in used}, "deleted": False,
    }


def python_work_ms(repeats: int, loops: int = 200) -> float:
    """Median time of ``loops`` JSON encode + decode round trips of one block document."""
    doc = _block_document()

    def job() -> None:
        for _ in range(loops):
            json.loads(json.dumps(doc, separators=(",", ":")))

    return _median_ms(job, repeats)


def etcd_txn_per_s(rounds: int, per_round: int) -> float:
    """Median over ``rounds`` of single-key create transactions per second on a private etcd (data on tmpfs)."""
    from l3net.datastore import EtcdDatastore
    from l3net.lab.etcdserver import EtcdServer

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    run_dir = tempfile.mkdtemp(prefix="l3net-calibration-", dir=base)
    server = EtcdServer(run_dir, name=f"calib-{uuid.uuid4().hex[:6]}")
    try:
        server.start()
        ds = EtcdDatastore(server.endpoints)
        try:
            rates = []
            for rnd in range(rounds):
                keys = [f"/calibration/{rnd}/{i}" for i in range(per_round)]
                t0 = time.perf_counter()
                for key in keys:
                    ds.create(key, b'{"calibration": true}')
                rates.append(per_round / (time.perf_counter() - t0))
            return statistics.median(rates)
        finally:
            ds.close()
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def measure(*, quick: bool) -> dict[str, Any]:
    """The three baselines now; a part that fails is recorded under ``unavailable`` with its reason."""
    out: dict[str, Any] = {"unavailable": {}}
    parts: dict[str, Callable[[], float]] = {
        "interpreter_start_ms": lambda: interpreter_start_ms(5 if quick else 11),
        "python_work_ms": lambda: python_work_ms(3 if quick else 7),
        "etcd_txn_per_s": lambda: etcd_txn_per_s(1 if quick else 3, 50 if quick else 200),
    }
    for name, fn in parts.items():
        if name == "etcd_txn_per_s" and shutil.which("etcd") is None:
            out["unavailable"][name] = "needs the etcd binary: not available"
            continue
        try:
            out[name] = round(fn(), 3)
        except Exception as exc:  # a baseline that cannot be taken must not cost the benchmark its run
            _log.warning("host calibration: %s failed: %s", name, exc)
            out["unavailable"][name] = f"{type(exc).__name__}: {exc}"
    return out


def describe(host: Mapping[str, Any] | None) -> str:
    """One line for a report: each baseline before -> after (or why it is missing)."""
    if not host:
        return "not recorded (a run from before host calibration)"
    before, after = host.get("before") or {}, host.get("after") or {}
    parts = []
    for name in FIELDS:
        b, a = before.get(name), after.get(name)
        if b is None and a is None:
            why = (before.get("unavailable") or {}).get(name) or (after.get("unavailable") or {}).get(name)
            parts.append(f"{LABELS[name]} not measured ({why or 'no value'})")
            continue
        fmt = "{:,.0f}" if UNITS[name] == "txn/s" else "{:.1f}"
        shown = " -> ".join(fmt.format(v) if v is not None else "?" for v in (b, a))
        parts.append(f"{LABELS[name]} {shown} {UNITS[name]}")
    return "; ".join(parts)


def brief(host: Mapping[str, Any] | None) -> str:
    """The summary table's cell: etcd txn/s and interpreter start before the benchmark, or a dash."""
    before = (host or {}).get("before") or {}
    etcd, start = before.get("etcd_txn_per_s"), before.get("interpreter_start_ms")
    if etcd is None and start is None:
        return "-"
    return " / ".join([f"{etcd:,.0f} txn/s" if etcd is not None else "? txn/s",
                       f"{start:.1f} ms" if start is not None else "? ms"])

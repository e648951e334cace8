"""bench.framework: what every benchmark shares.

A benchmark collects raw samples into a :class:`Result` (metric -> variant ->
samples, measured in interleaved rounds), declares ratios between variants of
the same run and the targets they are held to, and returns it. :func:`execute`
prints the table, writes ``<results>/<name>.json`` and ``<name>.png``, and turns
a missing external piece (:class:`Unavailable`: root, or a tool such as iperf3,
bird or etcd) into a loud, non-zero failure instead of a number. l3net's own
modules are imported plainly: one missing is a packaging bug and raises.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from bench import calibration, stats
from l3net import netns

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
T = TypeVar("T")

_NUM_OR_NULL = {"type": ["number", "null"]}
_SPREAD = {"oneOf": [{"type": "null"}, {"type": "object", "required": ["min", "q1", "q3", "max", "iqr"],
                                         "additionalProperties": {"type": "number"}}]}
_VERDICT = {"enum": [*stats.VERDICTS, None]}  # None: a ratio reported without a target
# JSON Schema of bench/results/<name>.json (the smoke test and bench.report rely on it).
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "benchmark", "title", "status", "error", "unavailable", "command", "quick", "machine",
                 "date", "duration_s", "setup", "metrics", "ratios", "targets", "passed"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "benchmark": {"type": "string"},
        "status": {"enum": ["ok", "partial", "unavailable", "error"]},
        "error": {"type": ["string", "null"]},
        "unavailable": {"type": "array", "items": {"type": "string"}},
        "command": {"type": "string", "pattern": "bench "},
        "quick": {"type": "boolean"},
        "machine": {"type": "object", "required": ["kernel", "cores", "cpu_model"]},
        "date": {"type": "string"},
        "metrics": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["unit", "better", "variants"],
            "properties": {"better": {"enum": ["higher", "lower"]}, "variants": {
                "type": "object", "minProperties": 1, "additionalProperties": {
                    "type": "object", "required": ["samples", "n", "median", "min", "max"],
                    "properties": {"samples": {"type": "array", "minItems": 1, "items": {"type": "number"}},
                                   "median": {"type": "number"}}}}}}},
        "ratios": {"type": "array", "items": {
            "type": "object", "required": ["name", "metric", "numerator", "denominator", "value", "median", "spread",
                                           "rounds", "paired", "method", "target", "verdict", "pass"],
            "properties": {"value": _NUM_OR_NULL, "median": _NUM_OR_NULL, "spread": _SPREAD,
                           "rounds": {"type": "integer", "minimum": 0},
                           "paired": {"type": "array", "items": {"type": "number"}},
                           "verdict": _VERDICT, "pass": {"type": ["boolean", "null"]}}}},
        "targets": {"type": "array", "items": {
            "type": "object", "required": ["name", "value", "unit", "op", "threshold", "rounds", "spread", "verdict",
                                           "pass"],
            "properties": {"op": {"enum": [">=", "<="]}, "value": _NUM_OR_NULL, "spread": _SPREAD,
                           "rounds": {"type": ["integer", "null"], "minimum": 0},
                           "verdict": {"enum": list(stats.VERDICTS)}, "pass": {"type": ["boolean", "null"]}}}},
        "passed": {"type": ["boolean", "null"]},
        "host": {"type": "object", "required": ["before", "after"], "additionalProperties": {
            "type": "object", "required": ["unavailable"],
            "properties": {**{f: {"type": "number"} for f in calibration.FIELDS},
                           "unavailable": {"type": "object", "additionalProperties": {"type": "string"}}}}},
    },
}


# -- failing loudly ----------------------------------------------------------
class Unavailable(RuntimeError):
    """An external piece the benchmark needs (root, a binary) is not on this machine.

    The message reads ``needs X: not available (...)``. Never raised for l3net's own modules.
    """

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"needs {what}: not available" + (f" ({hint})" if hint else ""))


def need_binary(name: str, hint: str = "") -> str:
    """The full path of ``name`` on PATH, or :class:`Unavailable`."""
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"the {name} binary", hint or "not on PATH; `make setup` installs it")
    return path


def need_all(binaries: Sequence[str], hint: str = "") -> list[str]:
    """The full paths of every binary, or one :class:`Unavailable` naming *all* the missing ones."""
    paths = {b: shutil.which(b) for b in binaries}
    missing = [f"the {b} binary" for b, path in paths.items() if path is None]
    if missing:
        raise Unavailable(", ".join(missing), hint or "not on PATH; `make setup` installs them")
    return [path for path in paths.values() if path is not None]


def need_root() -> None:
    if os.geteuid() != 0:
        raise Unavailable("root", "network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN; run as root")


# -- statistics ----------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100] (one implementation: :func:`bench.stats.quantile`)."""
    if not values:
        raise ValueError("percentile of no values")
    return stats.quantile(values, q)


def interleaved(rounds: int, variants: Sequence[T]) -> Iterator[tuple[int, T]]:
    """Yield ``(round, variant)`` for every variant in every round, rotating the order each round.

    Rotation puts each variant in each position equally often, so slow drift of
    the machine (thermal, other tenants) lands on every variant alike.
    """
    items = list(variants)
    for r in range(rounds):
        k = r % len(items) if items else 0
        for v in items[k:] + items[:k]:
            yield r, v


# -- the result of one benchmark ---------------------------------------------
@dataclass
class Metric:
    unit: str
    better: str  # "higher" or "lower"
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, variant: str) -> float | None:
        vals = self.samples.get(variant)
        return float(statistics.median(vals)) if vals else None


class Result:
    """Raw samples, ratios and targets of one benchmark run. Plain data; one thread.

    ``sample()`` records; ``ratio()`` and ``target()`` are called once all
    samples are in. ``missing()`` records a part that could not be measured: the
    run is then ``partial`` and exits non-zero.
    """

    def __init__(self, name: str, title: str, quick: bool) -> None:
        self.name = name
        self.title = title
        self.quick = quick
        self.setup: dict[str, Any] = {}
        self.metrics: dict[str, Metric] = {}
        self.ratios: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.unavailable: list[str] = []
        # More per-sample data under its own top-level JSON key (e.g. control_plane's stage timings).
        self.extra: dict[str, Any] = {}
        # Extra human tables printed after the main one: {"title", "columns", "rows"} (rows of strings).
        self.tables: list[dict[str, Any]] = []

    def sample(self, metric: str, variant: str, value: float, *, unit: str, better: str = "higher") -> None:
        if better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
        m = self.metrics.setdefault(metric, Metric(unit=unit, better=better))
        if m.unit != unit:
            raise ValueError(f"metric {metric}: unit {unit!r} differs from {m.unit!r}")
        m.samples.setdefault(variant, []).append(float(value))

    def median(self, metric: str, variant: str) -> float | None:
        m = self.metrics.get(metric)
        return m.median(variant) if m else None

    def missing(self, part: str, exc: Unavailable | str) -> None:
        msg = f"{part}: {exc}"
        _log.error("benchmark part not measured bench=%s part=%s reason=%s", self.name, part, exc)
        self.unavailable.append(msg)

    def ratio(self, name: str, metric: str, numerator: str, denominator: str, *,
              op: str | None = None, threshold: float | None = None, note: str = "",
              quantile: float | None = None) -> float | None:
        """The median of per-round paired ratios numerator/denominator of ``metric`` (see :mod:`bench.stats`).

        With ``quantile`` (e.g. 99) it is instead the ratio of that quantile over all rounds,
        its spread taken over interleaved groups of rounds. With ``op``/``threshold`` the
        ratio is also a target; its verdict needs at least ``stats.MIN_ROUNDS`` paired rounds.
        """
        m = self.metrics.get(metric)
        num = m.samples.get(numerator, []) if m else []
        den = m.samples.get(denominator, []) if m else []
        st = stats.ratio_stats(num, den) if quantile is None else stats.quantile_ratio_stats(num, den, quantile)
        entry: dict[str, Any] = {
            "name": name, "metric": metric, "numerator": numerator, "denominator": denominator,
            "value": st.value, "median": float(statistics.median(st.paired)) if st.paired else st.value,
            "spread": st.spread.to_json() if st.spread else None, "rounds": st.rounds, "paired": list(st.paired),
            "method": st.method, "note": note, "target": None, "verdict": None, "pass": None}
        if op is not None and threshold is not None:
            entry["target"] = {"op": op, "threshold": threshold}
            entry["verdict"] = stats.verdict(st.value, op, threshold, st.rounds)
            entry["pass"] = stats.passed(entry["verdict"])
            self.targets.append({"name": name, "value": st.value, "unit": "ratio", "op": op, "threshold": threshold,
                                 "rounds": st.rounds, "spread": entry["spread"], "verdict": entry["verdict"],
                                 "pass": entry["pass"]})
        self.ratios.append(entry)
        return st.value

    def target(self, name: str, value: float | None, *, unit: str, op: str, threshold: float,
               rounds: int | None = None, spread: Sequence[float] = (), note: str = "") -> bool | None:
        """An absolute target (for example p99 <= 1000 ms).

        ``rounds`` is how many independent samples the value stands on (None: unknown, so no
        verdict); ``spread`` the per-round values to show beside it. Returns True/False only
        for a verdict, None for "insufficient rounds" or "not measured".
        """
        v = stats.verdict(value, op, threshold, rounds)
        sp = stats.spread(spread)
        self.targets.append({"name": name, "value": value, "unit": unit, "op": op, "threshold": threshold,
                             "rounds": rounds, "spread": sp.to_json() if sp else None, "verdict": v,
                             "pass": stats.passed(v), "note": note})
        return stats.passed(v)

    @property
    def status(self) -> str:
        return "partial" if self.unavailable else "ok"

    def to_json(self, *, command: str, machine: dict[str, Any], started: float, duration: float) -> dict[str, Any]:
        metrics = {}
        for mname, m in self.metrics.items():
            variants = {}
            for v, vals in m.samples.items():
                variants[v] = {"samples": vals, "n": len(vals), "median": m.median(v),
                               "min": min(vals), "max": max(vals)}
            metrics[mname] = {"unit": m.unit, "better": m.better, "variants": variants}
        verdicts = [t["verdict"] for t in self.targets]
        return {
            "schema": SCHEMA_VERSION,
            "benchmark": self.name,
            "title": self.title,
            "status": self.status,
            "error": None,
            "unavailable": self.unavailable,
            "command": command,
            "quick": self.quick,
            "machine": machine,
            "date": _iso(started),
            "duration_s": round(duration, 3),
            "setup": self.setup,
            "metrics": metrics,
            "ratios": self.ratios,
            "targets": self.targets,
            "passed": overall(verdicts),
            **({"tables": self.tables} if self.tables else {}),
            **self.extra,
        }


def overall(verdicts: Sequence[str]) -> bool | None:
    """False if any target failed, True if every one passed, else None (none, or some without a verdict)."""
    if stats.FAIL in verdicts:
        return False
    if verdicts and all(v == stats.PASS for v in verdicts):
        return True
    return None


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    """Where the numbers came from: kernel, cores, CPU model, memory, Python."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {"kernel": platform.release(), "cores": os.cpu_count(), "cpu_model": cpu, "mem_gib": mem_gib,
            "python": platform.python_version(), "machine": platform.machine()}


def tool_version(cmd: Sequence[str]) -> str:
    """First line of a tool's version output (recorded next to the numbers it produced)."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


# -- scratch namespaces and processes ------------------------------------------
class Workspace:
    """Owns every namespace, process and scratch directory one benchmark run makes.

    Names start with a unique tag (``bn`` + 4 hex, so interface names stay short);
    ``close()`` kills our processes by PID and deletes our namespaces even when
    the benchmark failed half-way. Not thread-safe.
    """

    def __init__(self, tag: str | None = None) -> None:
        # L3NET_BENCH_TAG lets a caller (the smoke tests) tell this run's namespaces from a concurrent run's
        tag = tag or os.environ.get("L3NET_BENCH_TAG") or "bn" + uuid.uuid4().hex[:4]
        if not re.fullmatch(r"bn[0-9a-f]{4}", tag):
            raise ValueError(f"bench tag {tag!r} (L3NET_BENCH_TAG) must be 'bn' + 4 hex digits, to keep names short")
        self.tag = tag
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.dirs: list[Path] = []
        self.cleanups: list[Callable[[], None]] = []

    def netns(self, suffix: str) -> str:
        name = f"{self.tag}{suffix}"
        netns.delete(name)
        netns.create(name)
        self.namespaces.append(name)
        return name

    def drop_netns(self, name: str) -> None:
        netns.delete(name)
        if name in self.namespaces:
            self.namespaces.remove(name)

    def scratch(self, suffix: str = "") -> Path:
        """A fresh directory on tmpfs (etcd and BIRD state go here)."""
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
        d = base / f"l3net-{self.tag}{suffix}-{len(self.dirs)}"
        d.mkdir(parents=True, exist_ok=False)
        self.dirs.append(d)
        return d

    def spawn(self, cmd: Sequence[str], *, netns_name: str | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process we own (inside ``netns_name`` via nsenter, which keeps /sys as is)."""
        full = netns.nsenter_cmd(netns_name, cmd) if netns_name else list(cmd)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(full, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def on_close(self, fn: Callable[[], None]) -> None:
        self.cleanups.append(fn)

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:  # cleanup must go on: log and continue with the next one
                _log.exception("bench cleanup step failed tag=%s", self.tag)
        for proc in self.procs:
            stop_process(proc)
        for name in reversed(self.namespaces):
            netns.delete(name)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.cleanups.clear()
        self.procs.clear()
        self.namespaces.clear()
        self.dirs.clear()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, this one process (by PID, never by name)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


# -- context handed to each benchmark -------------------------------------------
@dataclass
class Context:
    """What a benchmark run gets: size (quick or full), where to write, and its scratch workspace."""

    quick: bool
    results_dir: Path
    workspace: Workspace

    def size(self, full: T, quick: T) -> T:
        return quick if self.quick else full


# -- printing, writing, plotting ----------------------------------------------------
def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_spread(sp: dict[str, float] | None) -> str:
    """``min..max (IQR x)`` of the per-round values behind a number; ``-`` without rounds."""
    if not sp:
        return "-"
    return f"{_fmt(sp['min'])}..{_fmt(sp['max'])} (IQR {_fmt(sp['iqr'])})"


def format_verdict(verdict: str | None, rounds: int | None) -> str:
    if verdict == stats.INSUFFICIENT:
        return f"insufficient rounds ({rounds or 0} < {stats.MIN_ROUNDS})"
    return {stats.PASS: "PASS", stats.FAIL: "FAIL", stats.NOT_MEASURED: "not measured"}.get(verdict or "", "")


def format_table(doc: dict[str, Any]) -> str:
    """The human table: medians per metric and variant, then every ratio and target with spread and verdict."""
    lines = [f"== {doc['benchmark']}: {doc['title']}  [{doc['status']}]"]
    rows = [("metric", "variant", "n", "median", "min", "max", "unit")]
    for mname, m in doc["metrics"].items():
        for v, s in m["variants"].items():
            rows.append((mname, v, str(s["n"]), _fmt(s["median"]), _fmt(s["min"]), _fmt(s["max"]), m["unit"]))
    lines += _columns(rows)
    if doc["targets"] or doc["ratios"]:
        lines.append("")
        rows = [("check", "value", "spread (per round)", "rounds", "target", "verdict")]
        seen = set()
        for r in doc["ratios"]:
            tgt = r["target"]
            rows.append((r["name"], _fmt(r["value"]), format_spread(r["spread"]), str(r["rounds"]),
                         f"{tgt['op']} {tgt['threshold']}" if tgt else "", format_verdict(r["verdict"], r["rounds"])))
            seen.add(r["name"])
        for t in doc["targets"]:
            if t["name"] in seen:
                continue
            rows.append((t["name"], f"{_fmt(t['value'])} {t['unit']}", format_spread(t["spread"]),
                         "-" if t["rounds"] is None else str(t["rounds"]), f"{t['op']} {t['threshold']}",
                         format_verdict(t["verdict"], t["rounds"])))
        lines += _columns(rows)
    for table in doc.get("tables") or []:
        lines += ["", table["title"], *_columns([tuple(table["columns"]), *map(tuple, table["rows"])])]
    for u in doc["unavailable"]:
        lines.append(f"NOT MEASURED: {u}")
    if "host" in doc:
        lines.append(f"host (before -> after): {calibration.describe(doc['host'])}")
    return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def write_plot(doc: dict[str, Any], path: Path) -> None:
    """One panel per metric (a bar per variant at its median, every raw sample a dot), then the ratios.

    The ratio panel draws each ratio as a bar with its target as a red tick, so
    pass and fail read at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(doc["metrics"].items())
    ratios = [r for r in doc["ratios"] if r["value"] is not None]
    n = max(1, len(metrics))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    ratio_h = 0.28 * len(ratios) + 0.8 if ratios else 0
    fig = plt.figure(figsize=(4.6 * cols, 3.2 * rows + ratio_h + 1.0))
    grid = fig.add_gridspec(rows + (1 if ratios else 0), cols,
                            height_ratios=[3.2] * rows + ([ratio_h] if ratios else []))
    for i, (mname, m) in enumerate(metrics):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        names = list(m["variants"])
        meds = [m["variants"][v]["median"] for v in names]
        xs = list(range(len(names)))
        ax.bar(xs, meds, color="#9ecae1", edgecolor="#3182bd")
        for j, v in enumerate(names):
            pts = m["variants"][v]["samples"]
            jitter = [j + (k - (len(pts) - 1) / 2) * 0.06 for k in range(len(pts))]
            ax.plot(jitter, pts, "o", color="#08519c", markersize=3)
            ax.annotate(_fmt(meds[j]), (j, meds[j]), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{mname} ({m['better']} is better)", fontsize=9)
        ax.set_ylabel(m["unit"], fontsize=8)
    if ratios:
        ax = fig.add_subplot(grid[rows, :])
        ys = list(range(len(ratios)))[::-1]
        colors = ["#74c476" if r["pass"] is True else "#fb6a4a" if r["pass"] is False else "#bdbdbd"
                  for r in ratios]
        ax.barh(ys, [r["value"] for r in ratios], color=colors)
        for y, r in zip(ys, ratios, strict=True):
            if r["spread"]:  # the per-round spread as a whisker: a bar alone would hide how stable it is
                ax.plot([r["spread"]["min"], r["spread"]["max"]], [y, y], color="#252525", linewidth=1)
            ax.annotate(f" {_fmt(r['value'])}", (r["value"], y), va="center", fontsize=7)
            if r["target"]:
                ax.plot([r["target"]["threshold"]] * 2, [y - 0.4, y + 0.4], color="#a50f15", linewidth=2)
        ax.axvline(1.0, color="#636363", linewidth=0.8, linestyle="--")
        vals = [r["value"] for r in ratios if r["value"] > 0]
        if vals and max(vals) / min(vals) > 30:  # a 0.03 next to a 25 would vanish on a linear axis
            ax.set_xscale("log")
        ax.set_yticks(ys)
        ax.set_yticklabels([r["name"] for r in ratios], fontsize=7)
        ax.set_title("ratios (median of paired rounds, whisker = min..max; green pass, red fail, grey no verdict; "
                     "red tick = target)", fontsize=9)
    mach = doc["machine"]
    fig.suptitle(f"{doc['benchmark']}: {doc['title']}\n{mach.get('cpu_model')}, {mach.get('cores')} cores, "
                 f"kernel {mach.get('kernel')}, {doc['date']}" + ("  [quick]" if doc.get("quick") else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(doc: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def failure_doc(name: str, title: str, *, status: str, error: str, command: str, quick: bool,
                started: float, duration: float) -> dict[str, Any]:
    """The JSON written when a benchmark could not produce numbers: no numbers, the reason instead."""
    return {"schema": SCHEMA_VERSION, "benchmark": name, "title": title, "status": status, "error": error,
            "unavailable": [error] if status == "unavailable" else [], "command": command, "quick": quick,
            "machine": machine_info(), "date": _iso(started), "duration_s": round(duration, 3), "setup": {},
            "metrics": {}, "ratios": [], "targets": [], "passed": None}


# -- running one benchmark -------------------------------------------------------
def load(name: str) -> ModuleType:
    from bench import BENCHMARKS

    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from: {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"bench.{name}")


def execute(name: str, *, quick: bool, results_dir: Path, command: str,
            out: Callable[[str], None] = print) -> int:
    """Run one benchmark end to end. Returns 0 (measured), 2 (partial or unavailable) or 1 (error)."""
    module = load(name)
    title = getattr(module, "TITLE", name)
    results_dir.mkdir(parents=True, exist_ok=True)
    out(f"\n### {name}: {title}\n### re-run just this one: {command}")
    before = calibration.measure(quick=quick)
    started, t0 = time.time(), time.monotonic()
    json_path, png_path = results_dir / f"{name}.json", results_dir / f"{name}.png"
    ws = Workspace()
    try:
        with ws:
            result: Result = module.run(Context(quick=quick, results_dir=results_dir, workspace=ws))
    except Unavailable as exc:
        doc = failure_doc(name, title, status="unavailable", error=str(exc), command=command, quick=quick,
                          started=started, duration=time.monotonic() - t0)
        _write_with_host(doc, before, quick, json_path)
        png_path.unlink(missing_ok=True)  # a stale plot would show numbers this run did not measure
        out(f"FAILED {name}: {exc}")
        return 2
    except Exception as exc:
        doc = failure_doc(name, title, status="error", error=f"{type(exc).__name__}: {exc}", command=command,
                          quick=quick, started=started, duration=time.monotonic() - t0)
        _write_with_host(doc, before, quick, json_path)
        png_path.unlink(missing_ok=True)
        out(f"ERROR {name}: {type(exc).__name__}: {exc}")
        out(traceback.format_exc())
        return 1
    doc = result.to_json(command=command, machine=machine_info(), started=started,
                         duration=time.monotonic() - t0)
    _write_with_host(doc, before, quick, json_path)
    write_plot(doc, png_path)
    out(format_table(doc))
    out(f"wrote {json_path} and {png_path} ({doc['duration_s']:.0f} s)")
    if result.unavailable:
        out(f"FAILED {name}: part of it was not measured (see NOT MEASURED above)")
        return 2
    return 0


def _write_with_host(doc: dict[str, Any], before: dict[str, Any], quick: bool, path: Path) -> None:
    """Write ``doc`` with the host's calibration (bench.calibration) taken before the benchmark and now.

    Outside ``duration_s``: the benchmark's own time does not include its calibration."""
    doc["host"] = {"before": before, "after": calibration.measure(quick=quick)}
    write_json(doc, path)


def python_exe() -> str:
    """The interpreter running us (helper processes inside namespaces reuse it)."""
    return sys.executable

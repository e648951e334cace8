"""Smoke test: every benchmark at --quick size through the real `l3net bench` command.

No timing is asserted. A benchmark either measures (JSON with samples, ratios,
targets and a PNG) or, when an external piece it needs (root, a tool such as
iperf3, bird or etcd) is missing on this machine, fails loudly: exit code 2,
status "unavailable"/"partial" and a "needs X: not available" reason, never a
number it did not measure. l3net's own modules are never "unavailable": a missing
one is a crash. An "error" status (a crash) fails the test.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bench import BENCHMARKS
from bench.framework import RESULT_SCHEMA

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

L3NET = Path(sys.executable).parent / "l3net"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OWN_MODULE = re.compile(r"needs (l3net|felix|bgp|policy)\.")


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _check_ratio(doc: dict[str, Any], r: dict[str, Any]) -> None:
    """A ratio is the median of its per-round paired ratios, recomputed here from the raw samples."""
    variants = doc["metrics"][r["metric"]]["variants"] if r["metric"] in doc["metrics"] else {}
    num = variants.get(r["numerator"], {}).get("samples", [])
    den = variants.get(r["denominator"], {}).get("samples", [])
    if r["value"] is None:
        assert r["verdict"] in (None, "not measured")
        return
    if r["method"].startswith("median of paired"):
        paired = [a / b for a, b in zip(num, den, strict=True) if b]
        assert r["paired"] == pytest.approx(paired)
        assert r["value"] == pytest.approx(statistics.median(paired))
        assert r["rounds"] == len(paired)
        assert r["spread"]["min"] == pytest.approx(min(paired)) and r["spread"]["max"] == pytest.approx(max(paired))
    elif r["method"].startswith("median / median"):
        assert r["rounds"] == 0 and r["value"] == pytest.approx(statistics.median(num) / statistics.median(den))
    if r["target"] is not None:
        assert r["verdict"] in ("insufficient rounds", "not measured"), r


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_run_writes_honest_json(name: str, tmp_path: Path) -> None:
    before = _namespaces()
    tag = "bn" + uuid.uuid4().hex[:4]  # only this run's namespaces count: other runs may be going on
    proc = subprocess.run([str(L3NET), "bench", name, "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "L3NET_BENCH_TAG": tag})
    output = proc.stdout + proc.stderr
    assert f"re-run just this one: {L3NET} bench {name} --quick --results-dir {tmp_path}" in output
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    jsonschema.validate(doc, RESULT_SCHEMA)
    assert doc["benchmark"] == name and doc["quick"] is True
    assert doc["status"] != "error", doc["error"]
    assert proc.returncode != 1, output[-3000:]
    reasons = [doc["error"] or "", *doc["unavailable"]]
    for when in ("before", "after"):  # the host's baselines, whatever the benchmark did (etcd is here)
        host = doc["host"][when]
        assert host["unavailable"] == {}, host
        assert host["interpreter_start_ms"] > 0 and host["python_work_ms"] > 0 and host["etcd_txn_per_s"] > 0
    assert "host (before -> after): interpreter start " in output
    assert not [r for r in reasons if OWN_MODULE.search(r)], "l3net's own modules are not optional"
    if doc["status"] == "unavailable":
        assert proc.returncode == 2
        assert re.search(r"needs .+: not available", doc["error"])
        assert doc["metrics"] == {} and doc["ratios"] == []
        assert not (tmp_path / f"{name}.png").exists()
        assert f"FAILED {name}: needs" in output
    else:
        assert doc["metrics"], "a measured benchmark must carry its raw samples"
        assert doc["ratios"], "a measured benchmark must report ratios measured in the same run"
        for r in doc["ratios"]:
            _check_ratio(doc, r)
        for t in doc["targets"]:
            # --quick runs too few rounds for any verdict: it must say so, never pass
            assert t["verdict"] in ("insufficient rounds", "not measured"), t
            assert t["pass"] is None
        assert doc["passed"] is None
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert doc["machine"]["cores"] >= 1
        if doc["status"] == "partial":
            assert proc.returncode == 2 and all("not available" in u for u in doc["unavailable"])
        else:
            assert proc.returncode == 0
    leaked = {n for n in _namespaces() - before if n.startswith(tag)}
    assert not leaked, f"benchmark left namespaces behind: {leaked}"

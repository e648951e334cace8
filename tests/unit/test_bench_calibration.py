"""bench.calibration: the host baselines recorded beside every result, and how reports show them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import calibration, report

pytestmark = pytest.mark.unit

BEFORE = {"interpreter_start_ms": 13.4, "python_work_ms": 31.25, "etcd_txn_per_s": 1910.2, "unavailable": {}}
AFTER = {"interpreter_start_ms": 29.8, "python_work_ms": 60.0, "etcd_txn_per_s": 645.0, "unavailable": {}}


def test_describe_shows_each_baseline_before_and_after() -> None:
    text = calibration.describe({"before": BEFORE, "after": AFTER})
    assert text == ("interpreter start 13.4 -> 29.8 ms; Python work 31.2 -> 60.0 ms; "
                    "etcd single-key txn 1,910 -> 645 txn/s")


def test_describe_names_a_missing_part_and_a_run_without_calibration() -> None:
    no_etcd = {"interpreter_start_ms": 9.0, "python_work_ms": 20.0,
               "unavailable": {"etcd_txn_per_s": "needs the etcd binary: not available"}}
    text = calibration.describe({"before": no_etcd, "after": AFTER})
    assert "etcd single-key txn ? -> 645 txn/s" in text
    text = calibration.describe({"before": no_etcd, "after": no_etcd})
    assert text.endswith("etcd single-key txn not measured (needs the etcd binary: not available)")
    assert calibration.describe(None) == "not recorded (a run from before host calibration)"


def test_brief_is_the_summary_cell() -> None:
    assert calibration.brief({"before": BEFORE, "after": AFTER}) == "1,910 txn/s / 13.4 ms"
    assert calibration.brief(None) == "-"
    assert calibration.brief({"before": {"interpreter_start_ms": 9.0, "unavailable": {}}}) == "? txn/s / 9.0 ms"


def test_report_carries_the_calibration(tmp_path: Path) -> None:
    doc = {"schema": 2, "benchmark": "ipam", "title": "t", "status": "ok", "error": None, "unavailable": [],
           "command": "l3net bench ipam", "quick": False, "machine": {"cpu_model": "x", "cores": 2, "kernel": "k"},
           "date": "d", "duration_s": 1.0, "setup": {}, "metrics": {}, "ratios": [], "targets": [], "passed": None,
           "host": {"before": BEFORE, "after": AFTER}}
    text = report.render([doc], tmp_path)
    assert "| 1,910 txn/s / 13.4 ms | full |" in text
    assert "Host (before -> after, bench.calibration): interpreter start 13.4 -> 29.8 ms;" in text


def test_measure_without_etcd_records_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no etcd (and nothing else) on PATH
    host = calibration.measure(quick=True)
    assert host["unavailable"] == {"etcd_txn_per_s": "needs the etcd binary: not available"}
    assert "etcd_txn_per_s" not in host
    assert host["interpreter_start_ms"] > 0 and host["python_work_ms"] > 0


def test_a_failing_part_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the unit rung starts no etcd

    def broken(_repeats: int) -> float:
        raise OSError("no fork today")

    monkeypatch.setattr(calibration, "interpreter_start_ms", broken)
    host = calibration.measure(quick=True)
    assert host["unavailable"]["interpreter_start_ms"] == "OSError: no fork today"
    assert "interpreter_start_ms" not in host and host["python_work_ms"] > 0


def test_python_work_is_the_same_fixed_job() -> None:
    doc = calibration._block_document()
    assert len(doc["allocations"]) == 64 and len(doc["attributes"]) == 32 == len(doc["unallocated"])
    assert calibration.python_work_ms(1, loops=2) > 0

"""bench.calibration's etcd baseline against a real etcd server: a rate, and nothing left behind."""

from __future__ import annotations

import glob

import pytest

from bench import calibration

pytestmark = pytest.mark.integration


def test_etcd_rate_is_measured_on_a_private_server_that_is_gone_afterwards() -> None:
    left_before = set(glob.glob("/dev/shm/l3net-calibration-*"))
    rate = calibration.etcd_txn_per_s(2, 20)
    assert rate > 0
    assert set(glob.glob("/dev/shm/l3net-calibration-*")) == left_before


def test_measure_takes_every_baseline_when_etcd_is_there() -> None:
    host = calibration.measure(quick=True)
    assert host["unavailable"] == {}
    assert all(host[name] > 0 for name in calibration.FIELDS)

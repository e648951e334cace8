"""l3net.datastore.probe: a hung datastore is reported after N missed probes, its return after one answer."""

from __future__ import annotations

import pytest

from l3net.datastore.memory import MemoryDatastore
from l3net.datastore.probe import DatastoreProbe

pytestmark = pytest.mark.unit


def test_verdicts_follow_the_store_with_hysteresis() -> None:
    store = MemoryDatastore()
    seen: list[tuple[bool, str]] = []
    probe = DatastoreProbe(store, lambda ok, why: seen.append((ok, why)), failures_to_down=2, timeout=0.5)
    assert probe.probe_once() is True and seen == [(True, "")]
    store.hung = True
    assert probe.probe_once() is None  # one miss is not an outage
    assert probe.probe_once() is False
    assert seen[-1][0] is False and "0.5s" in seen[-1][1] and "2 probes" in seen[-1][1]
    assert probe.probe_once() is None  # reported once
    store.hung = False
    assert probe.probe_once() is True
    store.set_down(True)  # refused connections are misses too
    probe.probe_once()
    probe.probe_once()
    assert [ok for ok, _ in seen] == [True, False, True, False]


def test_a_failing_consumer_does_not_stop_the_probe() -> None:
    store = MemoryDatastore()
    calls = []

    def consumer(ok: bool, why: str) -> None:
        calls.append(ok)
        raise RuntimeError("consumer bug")

    probe = DatastoreProbe(store, consumer, failures_to_down=1)
    assert probe.probe_once() is True
    store.hung = True
    assert probe.probe_once() is False
    assert calls == [True, False] and probe.reachable is False


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DatastoreProbe(MemoryDatastore(), lambda ok, why: None, interval=0)

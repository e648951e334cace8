"""l3net.lab.state.LabState.locked: the record is re-read only when another writer replaced it."""

from __future__ import annotations

from pathlib import Path

import pytest

from l3net.lab import state as st

pytestmark = pytest.mark.unit


def test_locked_rereads_only_a_record_another_writer_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.RUN_BASE_ENV, str(tmp_path))
    first = st.LabState.new("lab1", "topo")
    first.save()
    second = st.LabState.load("lab1")
    assert second is not None
    reads: list[str] = []
    real_load = st.LabState.load.__func__   # type: ignore[attr-defined]

    def counting_load(cls: type[st.LabState], name: str) -> st.LabState | None:
        reads.append(name)
        return real_load(cls, name)

    monkeypatch.setattr(st.LabState, "load", classmethod(counting_load))
    with first.locked():
        first.data["pods"]["ns/a"] = {"node": "n1"}
    assert reads == []                       # its own last write: nothing to read
    with second.locked():                    # the other writer sees the pod, then adds one
        assert "ns/a" in second.data["pods"]
        second.data["pods"]["ns/b"] = {"node": "n2"}
    assert reads == ["lab1"]
    with first.locked():
        assert set(first.data["pods"]) == {"ns/a", "ns/b"}
    assert reads == ["lab1", "lab1"]
    with first.locked():
        pass
    assert reads == ["lab1", "lab1"]
    assert set(st.LabState.load("lab1").data["pods"]) == {"ns/a", "ns/b"}   # type: ignore[union-attr]


def _stamp(path: Path) -> tuple[int, int]:
    s = path.stat()
    return s.st_ino, s.st_mtime_ns


def test_a_pod_change_is_a_journal_line_that_every_reader_replays(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.RUN_BASE_ENV, str(tmp_path))
    first = st.LabState.new("lab1", "topo")
    first.data["pods"]["ns/old"] = {"node": "n1"}
    first.save()
    record = tmp_path / "lab1" / st.STATE_FILE
    before = _stamp(record)
    with first.locked(pods=["ns/a"]):
        first.data["pods"]["ns/a"] = {"node": "n1", "ip": None}
    with first.locked(pods=["ns/a"]):
        first.data["pods"]["ns/a"]["ip"] = "10.0.0.5"
    with first.locked(pods=["ns/old"]):
        del first.data["pods"]["ns/old"]
    assert _stamp(record) == before          # three pod changes, the record itself not rewritten
    assert len((tmp_path / "lab1" / st.POD_JOURNAL).read_text().split()) == 3
    loaded = st.LabState.load("lab1")
    assert loaded is not None and loaded.data["pods"] == {"ns/a": {"node": "n1", "ip": "10.0.0.5"}}
    second = st.LabState.load("lab1")
    assert second is not None
    with first.locked(pods=["ns/b"]):        # another writer's journal line is seen by the next transaction
        first.data["pods"]["ns/b"] = {"node": "n2"}
    with second.locked(pods=["ns/c"]):
        assert set(second.data["pods"]) == {"ns/a", "ns/b"}
        second.data["pods"]["ns/c"] = {"node": "n2"}
    with first.locked():                     # a whole-record save folds the journal in and starts a new epoch
        assert set(first.data["pods"]) == {"ns/a", "ns/b", "ns/c"}
    assert not (tmp_path / "lab1" / st.POD_JOURNAL).exists()
    assert set(st.LabState.load("lab1").data["pods"]) == {"ns/a", "ns/b", "ns/c"}  # type: ignore[union-attr]


def test_the_journal_is_folded_into_the_record_once_it_is_long(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.RUN_BASE_ENV, str(tmp_path))
    monkeypatch.setattr(st, "JOURNAL_MAX_LINES", 3)
    state = st.LabState.new("lab1", "topo")
    state.save()
    journal = tmp_path / "lab1" / st.POD_JOURNAL
    lengths = []
    for i in range(7):
        with state.locked(pods=[f"ns/p{i}"]):
            state.data["pods"][f"ns/p{i}"] = {"node": "n1"}
        lengths.append(len(journal.read_text().split()) if journal.exists() else 0)
    assert lengths == [1, 2, 3, 0, 1, 2, 3]
    assert len(st.LabState.load("lab1").data["pods"]) == 7  # type: ignore[union-attr]


def test_a_stale_or_torn_journal_line_is_not_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.RUN_BASE_ENV, str(tmp_path))
    state = st.LabState.new("lab1", "topo")
    with state.locked(pods=["ns/a"]):
        state.data["pods"]["ns/a"] = {"node": "n1", "ip": None}
    with state.locked(pods=["ns/a"]):
        state.data["pods"]["ns/a"]["ip"] = "10.0.0.5"
    journal = tmp_path / "lab1" / st.POD_JOURNAL
    lines = journal.read_text()
    state.save()                             # the record holds the pod with its address now
    # A writer that died between writing the record and removing the journal left lines of the epoch before:
    # replaying them would bring back the pod without its address.
    journal.write_text(lines.replace('"ip":"10.0.0.5"', '"ip":null'))
    assert st.LabState.load("lab1").data["pods"]["ns/a"]["ip"] == "10.0.0.5"  # type: ignore[union-attr]
    journal.unlink()
    fresh = st.LabState.load("lab1")
    assert fresh is not None
    with fresh.locked(pods=["ns/b"]):
        fresh.data["pods"]["ns/b"] = {"node": "n1"}
    with open(journal, "a") as fh:
        fh.write('\n{"epoch":')              # a writer killed half-way through its append (entries open a line)
    with fresh.locked(pods=["ns/c"]):
        fresh.data["pods"]["ns/c"] = {"node": "n2"}
    assert set(st.LabState.load("lab1").data["pods"]) == {"ns/a", "ns/b", "ns/c"}  # type: ignore[union-attr]

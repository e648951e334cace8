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

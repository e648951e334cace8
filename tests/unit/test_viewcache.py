"""l3net.viewcache: the last good view on disk: round trip, atomic writes, and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l3net.viewcache import CacheWriter, ViewCache, decode, encode
from tests.waiting import wait_for

pytestmark = pytest.mark.unit

P = "/vc/"
ENTRIES = {P + "a": (b'{"x": 1}', 4), P + "b": (b"\xff\x00 not utf-8", 7)}


def test_round_trip_keeps_bytes_revisions_and_age(tmp_path: Path) -> None:
    now = [1000.0]
    cache = ViewCache(tmp_path / "c" / "view.json", P, max_age=60, clock=lambda: now[0])
    cache.save(ENTRIES, 9)
    now[0] = 1030.0
    view = cache.load()
    assert view is not None
    assert view.entries == ENTRIES and view.revision == 9 and view.age(now[0]) == 30.0
    assert [p.name for p in cache.path.parent.iterdir()] == ["view.json"]  # no temporary file left behind


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d[:-5], "checksum"),
    (lambda d: d.replace(b'"revision":9', b'"revision":8'), "checksum"),
    (lambda d: d.replace(b"l3net-view-cache 1", b"l3net-view-cache 2"), "version"),
    (lambda d: b"garbage", "header"),
    (lambda d: b"", "header"),
])
def test_corrupt_files_are_refused(tmp_path: Path, mangle, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    cache = ViewCache(tmp_path / "view.json", P, max_age=60)
    cache.save(ENTRIES, 9)
    cache.path.write_bytes(mangle(cache.path.read_bytes()))
    assert cache.load() is None
    assert "view cache refused" in caplog.text and reason in caplog.text
    assert cache.path.exists()  # refused, never deleted: an operator may want to look at it


def test_stale_future_and_foreign_caches_are_refused(tmp_path: Path) -> None:
    now = [1000.0]
    cache = ViewCache(tmp_path / "view.json", P, max_age=60, clock=lambda: now[0])
    cache.save(ENTRIES, 9)
    now[0] = 1061.0
    assert cache.load() is None  # older than max_age
    now[0] = 1060.0
    assert cache.load() is not None
    now[0] = 600.0
    assert cache.load() is None  # saved "in the future"
    now[0] = 1000.0
    assert ViewCache(cache.path, "/other/", max_age=60, clock=lambda: now[0]).load() is None


def test_missing_file_is_no_view(tmp_path: Path) -> None:
    assert ViewCache(tmp_path / "none.json", P, max_age=60).load() is None
    with pytest.raises(ValueError):
        ViewCache(tmp_path / "x", P, max_age=0)


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ViewCache(tmp_path / "view.json", P, max_age=60)
    cache.save(ENTRIES, 9)
    good = cache.path.read_bytes()

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        cache.save({P + "c": (b"1", 10)}, 10)
    assert cache.path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.json"]


def test_encode_decode_are_pure_inverses() -> None:
    data = encode(P, 3, ENTRIES, 5.0)
    assert encode(P, 3, ENTRIES, 5.0) == data
    view = decode(data, P)
    assert (view.entries, view.revision, view.saved_at) == (ENTRIES, 3, 5.0)


def test_writer_coalesces_and_writes_the_newest_view(tmp_path: Path) -> None:
    cache = ViewCache(tmp_path / "view.json", P, max_age=60)
    writer = CacheWriter(cache, min_interval=0.3)
    try:
        for rev in range(1, 50):
            writer.submit({P + "k": (str(rev).encode(), rev)}, rev)
        wait_for(lambda: (v := cache.load()) is not None and v.revision == 49, 5, "the newest view on disk")
    finally:
        writer.stop()
    view = cache.load()
    assert view is not None and view.revision == 49 and view.entries == {P + "k": (b"49", 49)}
    assert 1 <= writer.writes <= 3, f"{writer.writes} writes for 49 submissions within ~0.3 s"

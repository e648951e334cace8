"""l3net.viewcache: the last good view of one datastore prefix, cached on local disk.

An agent or reflector that (re)starts while the datastore is down starts from this
file instead of from nothing (DESIGN §7, autonomy): its pods stay routed and its BGP
sessions come back with the same view. The file holds the raw key values the syncer
last reported while in sync, the datastore revision they reflect and when they were
saved.

Format (version 1): one header line ``l3net-view-cache 1 sha256=<hex of the body>``,
then a JSON body ``{"prefix", "revision", "savedAt", "entries": [[key, base64 value,
mod revision], ...]}``. Writes are atomic (temporary file in the same directory,
fsync, rename, fsync of the directory): a crash leaves the old file or the new one,
never half of one. A file is refused (logged, then ignored, never deleted) when it is
unreadable, its checksum or version does not match, it holds another prefix, its
clock is in the future, or it is older than ``max_age`` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from l3net import metrics

_log = logging.getLogger(__name__)

MAGIC = "l3net-view-cache"
VERSION = 1
# Clock skew tolerated between the saving and the loading process (same host: only NTP steps).
_FUTURE_SLACK = 300.0


class CacheRefused(ValueError):
    """The cache file exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class CachedView:
    """A loaded cache: ``entries`` is key -> (raw value, mod revision), as the syncer reported them."""

    prefix: str
    revision: int
    saved_at: float
    entries: dict[str, tuple[bytes, int]]

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.saved_at


def encode(prefix: str, revision: int, entries: Mapping[str, tuple[bytes, int]], saved_at: float) -> bytes:
    """The file's bytes (pure)."""
    body = json.dumps({"prefix": prefix, "revision": revision, "savedAt": saved_at,
                       "entries": [[k, base64.b64encode(v).decode(), r] for k, (v, r) in sorted(entries.items())]},
                      separators=(",", ":")).encode()
    return f"{MAGIC} {VERSION} sha256={hashlib.sha256(body).hexdigest()}\n".encode() + body


def decode(data: bytes, prefix: str) -> CachedView:
    """Parse a cache file for ``prefix`` (pure); :class:`CacheRefused` naming the reason when it is not usable."""
    header, sep, body = data.partition(b"\n")
    if not sep:
        raise CacheRefused("no header line")
    parts = header.decode("ascii", errors="replace").split(" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[2].startswith("sha256="):
        raise CacheRefused(f"not a view cache (header {header[:60]!r})")
    if parts[1] != str(VERSION):
        raise CacheRefused(f"format version {parts[1]!r}, this build reads {VERSION}")
    if hashlib.sha256(body).hexdigest() != parts[2][len("sha256="):]:
        raise CacheRefused("checksum mismatch (truncated or corrupt)")
    try:
        doc = json.loads(body)
        if doc["prefix"] != prefix:
            raise CacheRefused(f"holds prefix {doc['prefix']!r}, not {prefix!r}")
        entries = {str(k): (base64.b64decode(v, validate=True), int(r)) for k, v, r in doc["entries"]}
        return CachedView(prefix=prefix, revision=int(doc["revision"]), saved_at=float(doc["savedAt"]),
                          entries=entries)
    except CacheRefused:
        raise
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise CacheRefused(f"malformed body: {type(exc).__name__}: {exc}") from None


class ViewCache:
    """Owns one cache file (``path``) for one prefix. Stateless apart from its settings; thread-safe.

    ``max_age`` (seconds, > 0) is how stale a cache may be and still be used: past it the
    view is refused, because pods may have moved and addresses been reused meanwhile.
    """

    def __init__(self, path: str | Path, prefix: str, *, max_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        if max_age <= 0:
            raise ValueError(f"view cache max_age={max_age}: must be positive (disable the cache instead)")
        self.path = Path(path)
        self.prefix = prefix
        self.max_age = max_age
        self._clock = clock

    def load(self) -> CachedView | None:
        """The cached view, or None when there is none or it is refused (the reason is logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            _log.info("no view cache path=%s", self.path)
            return None
        except OSError as exc:
            _log.warning("view cache refused path=%s reason=unreadable: %s", self.path, exc)
            return None
        try:
            view = decode(data, self.prefix)
            age = view.age(self._clock())
            if age < -_FUTURE_SLACK:
                raise CacheRefused(f"saved {-age:.0f}s in the future (clock stepped back?)")
            if age > self.max_age:
                raise CacheRefused(f"{age:.0f}s old, older than the {self.max_age:.0f}s allowed")
        except CacheRefused as exc:
            _log.warning("view cache refused path=%s reason=%s", self.path, exc)
            return None
        _log.info("view cache loaded path=%s prefix=%s revision=%d keys=%d age=%.1fs", self.path, self.prefix,
                  view.revision, len(view.entries), age)
        return view

    def save(self, entries: Mapping[str, tuple[bytes, int]], revision: int) -> None:
        """Write atomically; OSError when the disk refuses (the old file is then intact)."""
        data = encode(self.prefix, revision, entries, self._clock())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        metrics.VIEW_CACHE_WRITES.inc()


class CacheWriter:
    """Writes the latest submitted view to a :class:`ViewCache`, on its own daemon thread.

    Coalescing: :meth:`submit` only replaces the pending view (safe from any thread, never
    blocks on the disk); the thread writes the newest one at most every ``min_interval``
    seconds. A failed write is logged and retried with the next submission; it never raises
    into the caller. :meth:`stop` writes what is pending, then ends the thread.
    """

    def __init__(self, cache: ViewCache, *, min_interval: float = 2.0) -> None:
        self.cache = cache
        self.min_interval = min_interval
        self._pending: tuple[Mapping[str, tuple[bytes, int]], int] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.writes = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="l3net-viewcache", daemon=True)
        self._thread.start()

    def submit(self, entries: Mapping[str, tuple[bytes, int]], revision: int) -> None:
        """Mark ``entries`` (the caller's live mapping, not copied here) as the view at ``revision``.

        The copy is taken when the thread writes, at most every ``min_interval``: copying the cluster's
        every key on each watch batch held the GIL on the syncer's thread for nothing. The mapping may have
        moved past ``revision`` by then, which is safe: a restart replays the watch from ``revision``, and
        every event carries the whole value, so the replay ends where the datastore is.
        """
        with self._lock:
            self._pending = (entries, revision)
        self._wake.set()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        # A dict of str keys is copied in C without releasing the GIL: a consistent snapshot even while the
        # syncer's thread keeps applying updates to it.
        entries, revision = dict(pending[0]), pending[1]
        try:
            self.cache.save(entries, revision)
            self.writes += 1
        except OSError as exc:
            self.failures += 1
            _log.warning("view cache not written (the previous file stays) path=%s error=%s", self.cache.path, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._flush()
            self._stop.wait(self.min_interval)
        self._flush()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

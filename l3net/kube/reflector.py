"""List-then-watch of one Kubernetes kind, as client-go's reflector does.

A full list (in ``continue`` pages) hands the sink the whole set; then a watch
runs from the list's resourceVersion. The version is advanced by every event and
by bookmarks, so a dropped stream resumes where it stopped without a relist; a
``410 Gone`` (an HTTP 410, or an ERROR event carrying one) throws the version
away and lists again. Outages back off with jitter and never end the thread.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

from l3net.kube.api import ApiError, ApiUnavailable, KubeAPI

_log = logging.getLogger(__name__)

__all__ = ["Reflector", "Sink"]


class Sink(Protocol):
    def replace(self, kind: str, items: list[dict[str, Any]]) -> None: ...

    def event(self, kind: str, etype: str, obj: dict[str, Any]) -> None: ...


class Reflector:
    """Owns one kind's list-then-watch loop on its own daemon thread.

    Counters: ``lists`` (full lists done), ``relists_gone`` (lists caused by 410),
    ``watches`` (streams opened), ``bookmarks``, ``errors``. ``stop()`` ends it
    within the watch's poll; the sink must not raise.
    """

    def __init__(self, api: KubeAPI, kind: str, sink: Sink, *, on_gone: Callable[[], None] | None = None,
                 page_size: int = 500, watch_timeout: int = 300,
                 retry_initial: float = 0.2, retry_max: float = 10.0, field_selector: str | None = None,
                 sleep: Callable[[float], bool] | None = None):
        self.field_selector = field_selector
        self.on_gone = on_gone
        self.api = api
        self.kind = kind
        self.sink = sink
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self.resource_version = ""
        self.lists = self.relists_gone = self.watches = self.bookmarks = self.errors = 0
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reflector-{kind}", daemon=True)

    def start(self) -> Reflector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.retry_initial
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                delay = self.retry_initial
            except ApiError as exc:
                if exc.status == 410:
                    self._gone(str(exc))
                    continue
                self._failed(exc, delay)
                delay = min(delay * 2, self.retry_max)
            except ApiUnavailable as exc:
                self._failed(exc, delay)
                delay = min(delay * 2, self.retry_max)

    def _failed(self, exc: Exception, delay: float) -> None:
        self.errors += 1
        _log.warning("kube %s list/watch failed, retrying kind=%s rv=%s in=%.1fs: %s", "watch" if
                     self.resource_version else "list", self.kind, self.resource_version or "-", delay, exc)
        self._sleep(delay * random.uniform(0.8, 1.2))

    def _gone(self, why: str) -> None:
        self.relists_gone += 1
        if self.on_gone is not None:
            self.on_gone()
        _log.info("resourceVersion expired, listing again kind=%s rv=%s why=%s", self.kind, self.resource_version, why)
        self.resource_version = ""

    def _list(self) -> None:
        items, rv = self.api.list(self.kind, limit=self.page_size, field_selector=self.field_selector)
        self.lists += 1
        self.sink.replace(self.kind, items)
        self.resource_version = rv
        self.synced.set()
        _log.info("listed kind=%s items=%d rv=%s", self.kind, len(items), rv)

    def _watch(self) -> None:
        self.watches += 1
        for ev in self.api.watch(self.kind, self.resource_version, self.watch_timeout, self.field_selector):
            if self._stop.is_set():
                return
            etype = ev.get("type")
            obj = ev.get("object") or {}
            if etype == "ERROR":
                code = int(obj.get("code") or 0)
                raise ApiError(code, str(obj.get("message") or "watch error"))
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if etype == "BOOKMARK":
                self.bookmarks += 1
            elif etype in ("ADDED", "MODIFIED", "DELETED"):
                self.sink.event(self.kind, etype, obj)
            else:
                _log.warning("unknown watch event type kind=%s type=%r (ignored)", self.kind, etype)
                continue
            if rv:
                self.resource_version = rv

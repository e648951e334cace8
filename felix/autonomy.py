"""felix.autonomy: the agent's side of datastore outages: the cached start and the hang probe.

- :func:`view_cache` builds the agent's :class:`l3net.viewcache.ViewCache` from its settings
  (``view_cache_dir``, ``view_cache_max_age``; 0 disables it).
- :class:`CachedStartSink` sits between the syncer and the sync loop. When the agent starts
  from a cached view, it hands that view to the loop as if in sync (so the dataplane and BGP
  are programmed from the last good view: no route flap, pods stay reachable), keeps the
  agent not ready (``datastore-view``) and hides the syncer's ``resync``/``down`` reports
  until the first real in-sync; from then on it forwards everything unchanged.
- :func:`probe_reporter` turns the :class:`l3net.datastore.probe.DatastoreProbe` verdicts
  into readiness (``datastore-probe``) and a restart of the syncer's silent watch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from felix.config import AgentConfig
from l3net import metrics
from l3net.health import HealthState
from l3net.keys import KeyLayout
from l3net.syncer import KeyUpdate, SyncSink
from l3net.viewcache import CachedView, ViewCache

_log = logging.getLogger(__name__)

CACHE_FILE = "view-cache.json"


def view_cache(cfg: AgentConfig, keys: KeyLayout) -> ViewCache | None:
    """The agent's cache file (None when ``view_cache_max_age`` is 0)."""
    if cfg.view_cache_max_age <= 0:
        return None
    directory = Path(cfg.view_cache_dir) if cfg.view_cache_dir else Path(cfg.run_dir) / cfg.node
    return ViewCache(directory / CACHE_FILE, keys.prefix, max_age=cfg.view_cache_max_age)


class CachedStartSink:
    """The syncer's sink while the agent may be running from a cached view (see the module doc).

    Called on the syncer's thread (after :meth:`start_from`, which runs before the syncer starts);
    forwards to ``target`` (a ``ThreadSafeSink``). Never raises on its own.
    """

    def __init__(self, target: SyncSink, health: HealthState, on_live: Callable[[], None] | None = None) -> None:
        self.target = target
        self.health = health
        self.on_live = on_live  # after each in-sync with the live datastore (never the cached view's)
        self.from_cache = False

    def start_from(self, view: CachedView) -> None:
        age = view.age()
        self.from_cache = True
        metrics.VIEW_CACHE_AGE.set(round(age, 1))
        self.health.set_ready("datastore-view", False,
                              f"running from the cached view of revision {view.revision} ({age:.0f}s old); "
                              "the datastore has not been reached yet")
        self.target.on_updates([KeyUpdate(k, v, r) for k, (v, r) in sorted(view.entries.items())])
        self.target.on_in_sync()
        _log.warning("starting from the cached view revision=%d keys=%d age=%.0fs", view.revision,
                     len(view.entries), age)

    def on_updates(self, updates: list[KeyUpdate]) -> None:
        self.target.on_updates(updates)

    def on_in_sync(self) -> None:
        if self.from_cache:
            self.from_cache = False
            _log.info("datastore reached: the cached view is replaced by the live one")
        self.health.set_ready("datastore-view", True)
        self.target.on_in_sync()
        if self.on_live is not None:
            self.on_live()

    def on_status(self, status: str) -> None:
        if self.from_cache:
            # Still on the cached view: the loop keeps applying it; readiness already says why.
            _log.info("datastore status=%s while running from the cached view", status)
            return
        self.target.on_status(status)


def probe_reporter(health: HealthState, restart_watches: Iterable[Callable[[str], None]]
                   ) -> Callable[[bool, str], None]:
    """The probe's ``on_change``: readiness follows it; a hung datastore also restarts the (silent) watches."""
    restarts = list(restart_watches)

    def on_change(reachable: bool, reason: str) -> None:
        health.set_ready("datastore-probe", reachable, reason or "datastore unreachable")
        if not reachable:
            for restart in restarts:
                restart(reason)
    return on_change


def config_from_view(view: CachedView | None, prefix: str) -> dict[str, Any]:
    """The datastore ``config/`` keys of a cached view (used at start when the datastore cannot be read)."""
    if view is None:
        return {}
    return {k: v for k, (v, _) in view.entries.items() if k.startswith(prefix)}

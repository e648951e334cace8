"""felix.loop: the agent's one asyncio loop: inputs mark dirty, one throttled apply does the work.

Inputs (datastore updates, in-sync and status from the syncer, link snapshots,
learned BGP routes) only update the model and set ``dirty``. :meth:`SyncLoop.run`
applies when the datastore is in sync, something is dirty and the throttle admits
(at most one apply per ``min_interval``; a full refresh every ``refresh_interval``
re-reads the kernel and heals drift). A failed apply is retried with exponential
backoff and jitter; after ``max_failures`` in a row the loop raises
:class:`FatalApplyError` with diagnostics and the agent exits (crash-only: a fresh
process adopts the kernel state again). A route the kernel refuses (e.g. a BGP
peer's next hop that is not on any link) is not a failed apply: the route driver
skips it, logs it once, counts it (``l3net_routes_refused``) and retries it when
the links change or on the next refresh; the readiness body lists it under
``warnings`` while the node stays ready.

Nothing is written before the first in-sync. Learned routes that disappear are
kept until BGP has converged or the startup sweep delay has passed, so a
restarted agent does not withdraw routes its peers are about to re-send.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from felix.calc import Builder, KeyUpdateLike, Link, Model, compute
from felix.dataplane import Dataplane
from felix.desired import DesiredState
from felix.health import HealthState
from l3net import metrics

_log = logging.getLogger(__name__)


class FatalApplyError(RuntimeError):
    """The dataplane could not be programmed after the bounded number of retries."""


@dataclass(frozen=True)
class LoopConfig:
    min_interval: float = 0.05
    refresh_interval: float = 90.0
    startup_sweep_delay: float = 30.0
    retry_base: float = 0.1
    retry_max: float = 10.0
    max_failures: int = 10
    jitter: float = 0.2


class SyncLoop:
    """Owns the model, the links and learned routes, and when the dataplane is applied.

    Every ``on_*`` input must be called on the loop's own event-loop thread (use
    :class:`ThreadSafeSink` from other threads). Kernel work runs on ``io_executor``
    (one thread, so drivers never race).
    """

    def __init__(self, model: Model, node: str, dataplane: Dataplane, *, config: LoopConfig = LoopConfig(),
                 health: HealthState | None = None, node_ips: Iterable[str] = (),
                 policy_builder: Builder | None = None, bgp_builder: Builder | None = None,
                 on_applied: Callable[[DesiredState], None] | None = None,
                 on_config: Callable[[Mapping[str, bytes]], None] | None = None,
                 io_executor: concurrent.futures.Executor | None = None,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        self.model = model
        self.node = node
        self.dataplane = dataplane
        self.config = config
        self.health = health or HealthState()
        self.node_ips = tuple(node_ips)
        self.policy_builder = policy_builder
        self.bgp_builder = bgp_builder
        self.on_applied = on_applied
        self.on_config = on_config
        self.io = io_executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="l3net-kernel")
        self.clock = clock
        self.rand = rand
        self.links: dict[str, Link] = {}
        self.learned: dict[str, tuple[str, ...]] = {}
        self.in_sync = False
        self.ever_in_sync = False
        self.bgp_converged = False
        self.dirty = True
        self.failures = 0
        self.applies = 0
        self.last_desired: DesiredState | None = None
        self.applied_revision = 0  # the model revision the last successful apply was computed from
        self.last_writes = 0
        self._pending_updates = 0
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._started = clock()
        self._last_apply = float("-inf")
        self._next_refresh = self._started + config.refresh_interval
        self._retry_at = 0.0
        self._grace_over = config.startup_sweep_delay <= 0
        self._warned: set[str] = set()

    # -- inputs (event-loop thread) --------------------------------------------
    def _mark(self) -> None:
        self.dirty = True
        if self._wake is not None:
            self._wake.set()

    def on_updates(self, updates: Sequence[KeyUpdateLike]) -> None:
        n = self.model.apply(updates)
        self._pending_updates += n
        if self.on_config is not None and any(u.key.startswith(self.model.config_prefix) for u in updates):
            self.on_config(dict(self.model.config))
        self._mark()

    def set_config(self, config: LoopConfig) -> None:
        """New timing (datastore configuration changed): used from the next wakeup on."""
        if config.refresh_interval != self.config.refresh_interval:
            self._next_refresh = min(self._next_refresh, self.clock() + config.refresh_interval)
        self.config = config
        self._mark()

    def on_in_sync(self) -> None:
        if not self.in_sync:
            _log.info("datastore in sync revision=%d", self.model.revision)
        self.in_sync = True
        self.ever_in_sync = True
        metrics.DATASTORE_IN_SYNC.set(1)
        self.health.set_ready("datastore", True)
        self._mark()

    def on_status(self, status: str) -> None:
        """``resync`` or ``down`` from the syncer: hold the dataplane exactly as it is."""
        log = _log.warning if self.ever_in_sync else _log.info
        log("datastore status=%s: dataplane held as is until in sync again", status)
        if status in ("resync", "down"):
            self.in_sync = False
            metrics.DATASTORE_IN_SYNC.set(0)
            self.health.set_ready("datastore", False, f"datastore {status}")
            if status == "resync":
                metrics.RESYNCS_STARTED.inc()

    def on_links(self, links: Mapping[str, Link]) -> None:
        if dict(links) != self.links:
            self.links = dict(links)
            self._mark()

    def on_learned_routes(self, routes: Mapping[str, Sequence[str]]) -> None:
        new = {p: tuple(sorted(h)) for p, h in routes.items()}
        metrics.BGP_LEARNED_ROUTES.set(len(new))
        if new != self.learned:
            self.learned = new
            self._mark()

    def on_bgp_converged(self) -> None:
        """BGP has seen End-of-RIB from its peers: stale learned routes may be swept now."""
        if not self.bgp_converged:
            _log.info("BGP converged: stale learned routes may be swept")
        self.bgp_converged = True
        self._mark()

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    # -- the loop ----------------------------------------------------------------
    def desired(self) -> DesiredState:
        with metrics.CALC_TIME.time():
            return compute(self.model, self.node, self.links, self.learned, node_ips=self.node_ips,
                           policy_builder=self.policy_builder, bgp_builder=self.bgp_builder)

    def _next_deadline(self, now: float) -> float:
        deadlines = [self._next_refresh]
        if not self._grace_over:
            deadlines.append(self._started + self.config.startup_sweep_delay)
        if self.dirty and self.in_sync:
            due = self._last_apply + self.config.min_interval
            if self.failures:
                due = max(due, self._retry_at)
            deadlines.append(due)
        return max(now, min(deadlines))

    async def run(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.io, self.dataplane.start)
        while not self._stopping:
            self.health.beat()
            now = self.clock()
            timeout = self._next_deadline(now) - now
            if timeout > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._stopping:
                break
            await self._maybe_apply(loop)

    async def _maybe_apply(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self.clock()
        if not self._grace_over and (self.bgp_converged or now >= self._started + self.config.startup_sweep_delay):
            self._grace_over = True
            self.dirty = True
        refresh = now >= self._next_refresh
        if refresh:
            self._next_refresh = now + self.config.refresh_interval
            if self.in_sync:
                self.dirty = True
                await loop.run_in_executor(self.io, self.dataplane.refresh, "periodic refresh")
        if not self.in_sync or not self.dirty:
            return
        if now < self._last_apply + self.config.min_interval:
            return
        if self.failures and now < self._retry_at:
            return
        await self.apply_once(loop)

    async def apply_once(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """One calculation and apply (the retry/backoff bookkeeping included)."""
        loop = loop or asyncio.get_running_loop()
        self.dirty = False
        self._last_apply = self.clock()
        if self._pending_updates:
            metrics.MSG_BATCH_SIZE.observe(self._pending_updates)
            self._pending_updates = 0
        revision = self.model.revision  # before computing: updates may arrive while the apply runs
        desired = self.desired()
        metrics.LOCAL_ENDPOINTS.set(desired.local_endpoints)
        metrics.REJECTED_ENDPOINTS.set(len(desired.rejected_workloads))
        metrics.LOCAL_BLOCKS.set(desired.local_blocks)
        metrics.CLUSTER_ENDPOINTS.set(len(self.model.workloads))
        metrics.CLUSTER_HOSTS.set(len(self.model.resources_of("Node")))
        metrics.INVALID_VALUES.set(len(self.model.invalid))
        metrics.APPLIES.inc()
        keep = not self._grace_over
        try:
            with metrics.APPLY_TIME.time():
                report = await loop.run_in_executor(self.io, lambda: self.dataplane.apply(
                    desired, self.links, keep_stale_learned=keep))
        except Exception as exc:
            self._publish_warnings()
            self._failed(exc)
            return
        self._publish_warnings()
        self.applies += 1
        self.failures = 0
        self.last_writes = report.writes
        self.last_desired = desired
        self.applied_revision = revision
        self.health.set_ready("dataplane", True)
        if self.on_applied is not None:
            self.on_applied(desired)

    def _publish_warnings(self) -> None:
        """Routes refused, in conflict or malformed: shown in the readiness body, never unready."""
        now = self.dataplane.warnings()
        for name in self._warned - now.keys():
            self.health.set_warning(name, None)
        for name, text in now.items():
            self.health.set_warning(name, text)
        self._warned = set(now)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.dirty = True
        metrics.APPLY_FAILURES.inc()
        self.health.set_ready("dataplane", False, f"last apply failed: {exc}")
        if self.failures >= self.config.max_failures:
            raise FatalApplyError(f"dataplane apply failed {self.failures} times in a row; last error: {exc!r}; "
                                  f"routes we hold: {sorted(self.dataplane.routes.programmed)}") from exc
        backoff = min(self.config.retry_max, self.config.retry_base * 2 ** (self.failures - 1))
        backoff *= 1 + self.config.jitter * self.rand()
        self._retry_at = self.clock() + backoff
        _log.warning("dataplane apply failed attempt=%d retry_in=%.3fs error=%r", self.failures, backoff, exc)


class ThreadSafeSink:
    """The syncer's sink (``on_updates``/``on_in_sync``/``on_status``), called on the syncer thread,
    forwarded to a :class:`SyncLoop` on its event loop."""

    def __init__(self, target: SyncLoop, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop

    def on_updates(self, updates: Iterable[Any]) -> None:
        self.loop.call_soon_threadsafe(self.target.on_updates, list(updates))

    def on_in_sync(self) -> None:
        self.loop.call_soon_threadsafe(self.target.on_in_sync)

    def on_status(self, status: str) -> None:
        self.loop.call_soon_threadsafe(self.target.on_status, status)

"""bgp.cli: ``l3net route-reflector --node NAME``, a standalone l3net route reflector.

Follows the Node, BGPConfiguration and BGPPeer resources in etcd with
:class:`l3net.syncer.Syncer` (one per kind: list, then watch), builds the view of
``NAME`` (whose Node must carry ``routeReflectorClusterID``) whenever one changes,
runs a :class:`bgp.speaker.Speaker` (ExaBGP + reflection, no kernel routes: like a
BIRD reflector without a kernel protocol) and publishes its peer table under a
lease every ``--resync`` seconds and on every peer change (best effort, on its own
thread). Stored values are decoded with
:meth:`l3net.model.client.ResourceClient.decode`; a bad one is logged with its key
and treated as absent. The datastore may be down or hung for any length of time:
the reflector keeps its last view and keeps reflecting, reports not-ready on
``/readiness`` (same endpoints and metric names as the agent, on its own flags)
and resyncs when it returns; a restart meanwhile starts from the view cached on
disk (``--cache-dir``). Exits 2 when the node is not a route reflector, 1 when a
helper thread dies of a bug; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgp import metrics as bgp_metrics
from bgp import status as bgp_status
from bgp.bfd import metrics as bfd_metrics
from bgp.bfd import status as bfd_status
from bgp.bfd.peers import BfdPeers
from bgp.bird_engine import BirdEngine
from bgp.secrets import SecretReader
from bgp.speaker import Speaker
from bgp.view import NodeBGPView, build_node_view
from l3net import metrics
from l3net.constants import DEFAULT_ETCD_PREFIX, HEALTH_PORT, METRICS_PORT
from l3net.datastore.probe import DatastoreProbe
from l3net.health import HealthServer, HealthState
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.decode import Invalid
from l3net.model.decode import decode as model_decode
from l3net.model.resource import Resource
from l3net.nodestatus import StatusPublisher
from l3net.syncer import KeyUpdate
from l3net.viewcache import CachedView, CacheWriter, ViewCache

_log = logging.getLogger(__name__)

STATUS_TTL = 30
CACHE_MAX_AGE = 86400.0
# The run loop ticks every --resync seconds (or once a second while waiting for its first view).
LIVENESS_TIMEOUT = 60.0
ENGINES = ("exabgp", "bird")
ENGINE_ENV = "L3NET_RR_ENGINE"
KINDS = (("nodes", "Node"), ("bgpconfigurations", "BGPConfiguration"), ("bgppeers", "BGPPeer"),
         ("bgpfilters", "BGPFilter"))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("route-reflector", help="run an l3net BGP route reflector (RFC 4456) for one node")
    p.add_argument("--node", required=True, help="the Node resource of this reflector (has routeReflectorClusterID)")
    p.add_argument("--run-dir", default=None, help="directory for ExaBGP's config, socket and log "
                                                   "(default /run/l3net/rr-NODE)")
    p.add_argument("--secrets-dir", default=os.environ.get("L3NET_BGP_SECRETS_DIR") or "/etc/l3net/bgp-secrets",
                   help="mounted Secrets for BGP passwords: secretKeyRef {name, key} is DIR/name/key "
                        "(env L3NET_BGP_SECRETS_DIR)")
    p.add_argument("--engine", choices=ENGINES, default=os.environ.get(ENGINE_ENV) or "exabgp",
                   help="what speaks BGP: exabgp (l3net's own reflection, for small clusters and the edge) or bird "
                        f"(BIRD 2 supervised by l3net, for hundreds of clients); default ${ENGINE_ENV} or exabgp")
    p.add_argument("--resync", type=float, default=2.0,
                   help="seconds between publications of the peer table (resources are watched, not polled)")
    p.add_argument("--health-host", default="127.0.0.1", help="bind address of /liveness and /readiness")
    p.add_argument("--health-port", type=int, default=HEALTH_PORT, help="port of /liveness and /readiness (0: off)")
    p.add_argument("--metrics-host", default="0.0.0.0", help="bind address of the Prometheus metrics")
    p.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="port of the Prometheus metrics (0: off)")
    p.add_argument("--cache-dir", default=None,
                   help="directory of the last-good-view cache (default: the run directory); a restart during "
                        "a datastore outage starts from it")
    p.add_argument("--cache-max-age", type=float, default=CACHE_MAX_AGE,
                   help="seconds a cached view may be old and still be used at start (0: no cache)")
    p.set_defaults(func=run)
    return p


def decode(client: ResourceClient, key: str, value: bytes, revision: int = 0) -> Resource | None:
    """A stored resource, or None (logged with its key) when it does not validate: bad data is absence."""
    got = model_decode(client.keys, key, value, revision)
    if isinstance(got, Invalid):
        metrics.DECODE_FAILURES.labels(where="resource").inc()
        _log.warning("ignoring invalid stored resource key=%s error=%s", key, got)
        return None
    return got


class ResourceStore:
    """The reflector's copy of the BGP resources, fed by one Syncer per kind (the sinks).

    Sinks run on the syncers' threads; the store is guarded by a lock and wakes the
    asyncio loop through ``call_soon_threadsafe``. ``in_sync`` once every kind has a view
    (listed, or loaded from the on-disk cache); ``live`` once every kind is in sync with the
    datastore itself (readiness follows ``live``). Invalid values are dropped (logged),
    which also removes an earlier valid copy of that key.
    """

    def __init__(self, ds: Any, keys: KeyLayout, loop: asyncio.AbstractEventLoop, changed: asyncio.Event,
                 health: HealthState | None = None) -> None:
        self._client = ResourceClient(ds, keys)
        self._keys = keys
        self._loop = loop
        self._changed = changed
        self._health = health
        self._lock = threading.Lock()
        self._by_kind: dict[str, dict[str, Resource]] = {plural: {} for plural, _ in KINDS}
        self._synced: set[str] = set()
        self._live: set[str] = set()
        self._cached: set[str] = set()  # started from the on-disk cache, not in sync with the datastore since
        self._report()

    def sink(self, plural: str) -> _KindSink:
        return _KindSink(self, plural)

    @property
    def in_sync(self) -> bool:
        with self._lock:
            return len(self._synced) == len(KINDS)

    @property
    def live(self) -> bool:
        with self._lock:
            return len(self._live) == len(KINDS)

    def snapshot(self) -> tuple[list[Resource], list[Resource], list[Resource], list[Resource]]:
        """Nodes, BGPConfigurations, BGPPeers and BGPFilters (the arguments of ``build_node_view``)."""
        with self._lock:
            n, c, p, f = (list(self._by_kind[plural].values()) for plural, _ in KINDS)
        return n, c, p, f

    def seed(self, plural: str, view: CachedView) -> None:
        """Start ``plural`` from a cached view (before its syncer starts): a view, but not a live one."""
        self._apply(plural, [KeyUpdate(k, v, r) for k, (v, r) in sorted(view.entries.items())])
        with self._lock:
            self._synced.add(plural)
            self._cached.add(plural)
        self._report()
        _log.warning("starting from the cached view kind=%s revision=%d keys=%d age=%.0fs", plural, view.revision,
                     len(view.entries), view.age())

    def _apply(self, plural: str, updates: list[Any]) -> None:
        decoded = [(u.key, decode(self._client, u.key, u.value, u.revision) if u.value is not None else None)
                   for u in updates]
        with self._lock:
            table = self._by_kind[plural]
            for key, res in decoded:
                if res is None:
                    table.pop(key, None)
                else:
                    table[key] = res
        self._loop.call_soon_threadsafe(self._changed.set)

    def _in_sync(self, plural: str) -> None:
        with self._lock:
            self._synced.add(plural)
            self._live.add(plural)
            self._cached.discard(plural)
        self._report()
        self._loop.call_soon_threadsafe(self._changed.set)

    def _status(self, plural: str, status: str) -> None:
        with self._lock:
            self._live.discard(plural)
        self._report()

    def _report(self) -> None:
        if self._health is None:
            return
        with self._lock:
            missing = sorted(p for p, _ in KINDS if p not in self._live)
            cached = sorted(self._cached)
        live = not missing
        metrics.DATASTORE_IN_SYNC.set(1 if live else 0)
        parts = []
        if cached:
            parts.append("running from the cached view of " + ", ".join(cached))
        if set(missing) - set(cached):
            parts.append("not in sync with the datastore: " + ", ".join(sorted(set(missing) - set(cached))))
        self._health.set_ready("datastore", live, "; ".join(parts))


class _KindSink:
    """The SyncSink of one kind (l3net.syncer calls it on its thread)."""

    def __init__(self, store: ResourceStore, plural: str) -> None:
        self.store = store
        self.plural = plural

    def on_updates(self, updates: list[Any]) -> None:
        self.store._apply(self.plural, updates)

    def on_in_sync(self) -> None:
        self.store._in_sync(self.plural)

    def on_status(self, status: str) -> None:
        _log.info("datastore status kind=%s status=%s", self.plural, status)
        self.store._status(self.plural, status)


def _caches(cache_dir: Path | None, keys: KeyLayout, max_age: float) -> dict[str, ViewCache]:
    if cache_dir is None or max_age <= 0:
        return {}
    return {plural: ViewCache(cache_dir / f"view-cache-{plural}.json", keys.resource_dir(plural), max_age=max_age)
            for plural, _ in KINDS}


async def run_reflector(ds: Any, keys: KeyLayout, node: str, run_dir: Path, *, resync: float = 2.0,
                        netns: str | None = None, stop: asyncio.Event | None = None,
                        health: HealthState | None = None, cache_dir: Path | None = None,
                        cache_max_age: float = CACHE_MAX_AGE, probe_interval: float = 1.0,
                        probe_timeout: float = 1.0, secrets_dir: str = "", engine: str = "exabgp") -> int:
    """The route reflector's main loop (also used by tests with ``netns``); ``engine`` is exabgp or bird.

    Never ends because of the datastore: an outage of any length keeps the last view (BGP
    sessions and reflection go on), status publication is best effort, readiness reports it
    (a hung datastore too, through the probe) and the syncers resync when it returns. Returns
    2 when the node is not a route reflector, 1 when a syncer or the status thread died of a
    bug, 0 when stopped.
    """
    secrets = SecretReader(secrets_dir) if secrets_dir else None
    from l3net.syncer import Syncer

    stop = stop or asyncio.Event()
    health = health or HealthState(liveness_timeout=LIVENESS_TIMEOUT)
    health.set_ready("dataplane", True)  # a reflector programs no kernel state
    health.set_ready("bgp", False, "speaker not started")
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    store = ResourceStore(ds, keys, loop, changed, health)
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        loop.call_soon_threadsafe(stop.set)

    caches = _caches(cache_dir, keys, cache_max_age)
    writers = {plural: CacheWriter(cache) for plural, cache in caches.items()}
    syncers = [_syncer(Syncer, ds, keys, store, plural, caches.get(plural), writers.get(plural), on_fatal)
               for plural, _ in KINDS]
    for s in syncers:
        s.start()
    metrics.SOURCED.set_source("syncer", lambda: {"l3net_resyncs_completed": sum(s.resyncs for s in syncers),
                                                  "l3net_datastore_updates": sum(s.updates for s in syncers)})
    probe = DatastoreProbe(ds, _probe_reporter(health, syncers), interval=probe_interval, timeout=probe_timeout)
    probe.start()
    status = StatusPublisher(ds, keys, node, ttl=STATUS_TTL, component="reflector")
    status.start(on_fatal=on_fatal)
    speaker: Speaker | BirdEngine | None = None
    bfd: BfdPeers | None = None
    try:
        await _until_in_sync(store, stop, changed, health)
        if stop.is_set():
            return 1 if fatal else 0
        view = build_node_view(node, *store.snapshot(), secrets=secrets)
        if not view.cluster_id:
            _log.error("node %s has no routeReflectorClusterID; refusing to reflect", node)
            return 2
        speaker = BirdEngine(node, run_dir, netns=netns) if engine == "bird" else Speaker(node, run_dir, netns=netns)
        await speaker.start()
        health.set_ready("bgp", True)
        # The ExaBGP engine gets the agent's BFD speaker; the BIRD engine renders BIRD's own `protocol bfd`.
        if isinstance(speaker, Speaker):
            bfd = await _start_bfd(node, speaker, netns)
        reported: tuple[object, ...] = ()
        while not stop.is_set():
            health.beat()
            changed.clear()
            if view.errors != reported:
                for err in view.errors:
                    _log.warning("configuration problem: %s", err)
                reported = view.errors
            speaker.set_view(view)
            if bfd is not None:
                bfd.set_view(view)
            _publish(status, keys, node, view, speaker, bfd, health)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, changed), resync)
            view = build_node_view(node, *store.snapshot(), secrets=secrets)
    finally:
        if bfd is not None:
            await bfd.stop()
        if speaker is not None:
            await speaker.stop()
        probe.stop(timeout=0)
        # Joins the publisher and revokes its lease, each bounded; an unreachable store is only logged.
        await loop.run_in_executor(None, status.stop)
        for s in syncers:
            threading.Thread(target=s.stop, name="rr-syncer-stop", daemon=True).start()
        for w in writers.values():
            w.stop(timeout=1.0)
    if fatal:
        _log.critical("route reflector exiting: a helper thread died of a bug: %r", fatal[0])
        return 1
    return 0


async def _until_in_sync(store: ResourceStore, stop: asyncio.Event, changed: asyncio.Event,
                         health: HealthState) -> None:
    """Wait (alive) until every syncer has its first full view, or until stopped."""
    while not store.in_sync and not stop.is_set():
        health.beat()
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), 1.0)


def _syncer(syncer_cls: Any, ds: Any, keys: KeyLayout, store: ResourceStore, plural: str, cache: Any,
            writer: Any, on_fatal: Callable[[BaseException], None]) -> Any:
    """One kind's syncer, started from its cache (if any) so that a restart during an outage reflects."""
    initial = cache.load() if cache is not None else None
    if initial is not None:
        store.seed(plural, initial)
    return syncer_cls(ds, keys.resource_dir(plural), store.sink(plural), on_fatal=on_fatal,
                      initial=initial, cache_writer=writer)


def _publish(status: StatusPublisher, keys: KeyLayout, node: str, view: NodeBGPView, speaker: Speaker | BirdEngine,
             bfd: BfdPeers | None, health: HealthState) -> None:
    """Peer tables and readiness, best effort on the publisher's own thread (its lease): a datastore
    outage never reaches the reflector's loop."""
    if bfd is not None:
        status.put_extra(keys.node_status(node, "bfd"), bfd_status.document(node, bfd.status()))
    elif isinstance(speaker, BirdEngine):
        status.put_extra(keys.node_status(node, "bfd"), bfd_status.document(node, speaker.bfd_status()))
    rows = speaker.peer_status()
    bgp_status.keep(status, keys, node, rows, as_number=view.as_number, router_id=view.router_id,
                    errors=[str(e) for e in view.errors])
    ready, reasons = health.readiness()
    status.update(ready=ready, notReady=reasons, peers=len(rows), established=sum(1 for r in rows if r.state == "up"))


def _probe_reporter(health: HealthState, syncers: list[Any]) -> Any:
    def on_change(reachable: bool, reason: str) -> None:
        health.set_ready("datastore-probe", reachable, reason or "datastore unreachable")
        if not reachable:
            for s in syncers:
                s.restart_watch(reason)
    return on_change


async def _start_bfd(node: str, speaker: Speaker, netns: str | None) -> BfdPeers | None:
    """The reflector runs BFD to its clients with the agent's speaker; without the BFD ports it runs on."""
    bfd = BfdPeers(node, speaker, netns=netns)
    try:
        await bfd.start()
    except OSError as exc:
        _log.error("BFD not running on the reflector error=%s", exc)
        return None
    return bfd


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def run(args: argparse.Namespace) -> int:
    from l3net.datastore import connect_from_env

    keys = KeyLayout(os.environ.get("L3NET_ETCD_PREFIX") or DEFAULT_ETCD_PREFIX)
    ds = connect_from_env()
    run_dir = Path(args.run_dir or f"/run/l3net/rr-{args.node}")

    health = HealthState(liveness_timeout=LIVENESS_TIMEOUT)
    server = None
    if args.health_port:
        server = HealthServer(health, args.health_host, args.health_port)
        server.start()
        _log.info("health listening host=%s port=%d", args.health_host, args.health_port)
    if args.metrics_port:
        from prometheus_client import start_http_server

        bgp_metrics.register_into(metrics.REGISTRY)
        bfd_metrics.register_into(metrics.REGISTRY)   # either engine's BFD sessions (l3net_bfd_*)
        start_http_server(args.metrics_port, args.metrics_host, registry=metrics.REGISTRY)
        _log.info("metrics listening host=%s port=%d", args.metrics_host, args.metrics_port)

    async def main() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_reflector(ds, keys, args.node, run_dir, resync=args.resync, stop=stop, health=health,
                                   cache_dir=Path(args.cache_dir) if args.cache_dir else run_dir,
                                   cache_max_age=args.cache_max_age, secrets_dir=args.secrets_dir,
                                   engine=args.engine)

    try:
        return asyncio.run(main())
    finally:
        if server is not None:
            server.stop()
        ds.close()

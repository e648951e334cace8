"""bgp.cli: ``l3net route-reflector --node NAME``, a standalone l3net route reflector.

Follows the Node, BGPConfiguration and BGPPeer resources in etcd with
:class:`l3net.syncer.Syncer` (one per kind: list, then watch), builds the view of
``NAME`` (whose Node must carry ``routeReflectorClusterID``) whenever one changes,
runs a :class:`bgp.speaker.Speaker` (ExaBGP + reflection, no kernel routes: like a
BIRD reflector without a kernel protocol) and publishes its peer table under a
lease every ``--resync`` seconds and on every peer change. Stored values are
decoded with :meth:`l3net.model.client.ResourceClient.decode`; a bad one is logged
with its key and treated as absent. Exits 2 when the node is not a route
reflector, 1 when a syncer dies of a bug; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from bgp import status as bgp_status
from bgp.bird_engine import BirdEngine
from bgp.config import build_node_view
from bgp.speaker import Speaker
from l3net.constants import DEFAULT_ETCD_PREFIX
from l3net.datastore.base import KeyValue
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

STATUS_TTL = 30
ENGINES = ("exabgp", "bird")
ENGINE_ENV = "L3NET_RR_ENGINE"
KINDS = (("nodes", "Node"), ("bgpconfigurations", "BGPConfiguration"), ("bgppeers", "BGPPeer"))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("route-reflector", help="run an l3net BGP route reflector (RFC 4456) for one node")
    p.add_argument("--node", required=True, help="the Node resource of this reflector (has routeReflectorClusterID)")
    p.add_argument("--run-dir", default=None, help="directory for ExaBGP's config, socket and log "
                                                   "(default /run/l3net/rr-NODE)")
    p.add_argument("--engine", choices=ENGINES, default=os.environ.get(ENGINE_ENV) or "exabgp",
                   help="what speaks BGP: exabgp (l3net's own reflection, for small clusters and the edge) or bird "
                        f"(BIRD 2 supervised by l3net, for hundreds of clients); default ${ENGINE_ENV} or exabgp")
    p.add_argument("--resync", type=float, default=2.0,
                   help="seconds between publications of the peer table (resources are watched, not polled)")
    p.set_defaults(func=run)
    return p


def decode(client: ResourceClient, key: str, value: bytes, revision: int = 0) -> Resource | None:
    """A stored resource, or None (logged with its key) when it does not validate: bad data is absence."""
    try:
        return client.decode(KeyValue(key, value, revision))
    except ValidationError as exc:
        _log.warning("ignoring invalid stored resource key=%s error=%s", key, exc)
        return None


class ResourceStore:
    """The reflector's copy of the BGP resources, fed by one Syncer per kind (the sinks).

    Sinks run on the syncers' threads; the store is guarded by a lock and wakes the
    asyncio loop through ``call_soon_threadsafe``. ``in_sync`` once every kind has
    been listed. Invalid values are dropped (logged), which also removes an earlier
    valid copy of that key.
    """

    def __init__(self, ds: Any, keys: KeyLayout, loop: asyncio.AbstractEventLoop, changed: asyncio.Event) -> None:
        self._client = ResourceClient(ds, keys)
        self._keys = keys
        self._loop = loop
        self._changed = changed
        self._lock = threading.Lock()
        self._by_kind: dict[str, dict[str, Resource]] = {plural: {} for plural, _ in KINDS}
        self._synced: set[str] = set()

    def sink(self, plural: str) -> _KindSink:
        return _KindSink(self, plural)

    @property
    def in_sync(self) -> bool:
        with self._lock:
            return len(self._synced) == len(KINDS)

    def snapshot(self) -> tuple[list[Resource], list[Resource], list[Resource]]:
        with self._lock:
            n, c, p = (list(self._by_kind[plural].values()) for plural, _ in KINDS)
        return n, c, p

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
        self._loop.call_soon_threadsafe(self._changed.set)


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


async def run_reflector(ds: Any, keys: KeyLayout, node: str, run_dir: Path, *, resync: float = 2.0,
                        netns: str | None = None, stop: asyncio.Event | None = None, engine: str = "exabgp") -> int:
    """The route reflector's main loop (also used by tests with ``netns``); ``engine`` is exabgp or bird."""
    from l3net.syncer import Syncer

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    store = ResourceStore(ds, keys, loop, changed)
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        loop.call_soon_threadsafe(stop.set)

    syncers = [Syncer(ds, keys.resource_dir(plural), store.sink(plural), on_fatal=on_fatal) for plural, _ in KINDS]
    for s in syncers:
        s.start()
    speaker: Speaker | BirdEngine | None = None
    lease: Any = None
    try:
        while not store.in_sync and not stop.is_set():
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 1.0)
        if stop.is_set():
            return 1 if fatal else 0
        view = build_node_view(node, *store.snapshot())
        if not view.cluster_id:
            _log.error("node %s has no routeReflectorClusterID; refusing to reflect", node)
            return 2
        speaker = BirdEngine(node, run_dir, netns=netns) if engine == "bird" else Speaker(node, run_dir, netns=netns)
        await speaker.start()
        lease = await loop.run_in_executor(None, ds.grant_lease, STATUS_TTL)
        reported: tuple[object, ...] = ()
        while not stop.is_set():
            changed.clear()
            if view.errors != reported:
                for err in view.errors:
                    _log.warning("configuration problem: %s", err)
                reported = view.errors
            speaker.set_view(view)
            rows = speaker.peer_status()
            await loop.run_in_executor(None, functools.partial(
                bgp_status.publish, ds, keys, node, rows, lease=lease.id, as_number=view.as_number,
                router_id=view.router_id))
            await loop.run_in_executor(None, lease.refresh)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, changed), resync)
            view = build_node_view(node, *store.snapshot())
    finally:
        if speaker is not None:
            await speaker.stop()
        if lease is not None:
            await loop.run_in_executor(None, lease.revoke)
        for s in syncers:
            threading.Thread(target=s.stop, name="rr-syncer-stop", daemon=True).start()
    if fatal:
        _log.critical("route reflector exiting: a datastore syncer failed: %r", fatal[0])
        return 1
    return 0


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

    async def main() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_reflector(ds, keys, args.node, run_dir, resync=args.resync, stop=stop, engine=args.engine)

    try:
        return asyncio.run(main())
    finally:
        ds.close()

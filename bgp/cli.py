"""bgp.cli: ``l3net route-reflector --node NAME``, a standalone l3net route reflector.

Reads Node, BGPConfiguration and BGPPeer resources from etcd, builds the view of
``NAME`` (whose Node must carry ``routeReflectorClusterID``), runs a
:class:`bgp.speaker.Speaker` (ExaBGP + reflection, no kernel routes: like a BIRD
reflector without a kernel protocol) and publishes its peer table under a
lease. Peer-set changes are picked up by re-reading the resources every
``--resync`` seconds (the datastore Syncer can replace the poll later).
Exits 2 when the node is not a route reflector; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from bgp import status as bgp_status
from bgp.config import build_node_view
from bgp.speaker import Speaker
from l3net.constants import DEFAULT_ETCD_PREFIX
from l3net.keys import KeyLayout
from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

STATUS_TTL = 30


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("route-reflector", help="run an l3net BGP route reflector (RFC 4456) for one node")
    p.add_argument("--node", required=True, help="the Node resource of this reflector (has routeReflectorClusterID)")
    p.add_argument("--run-dir", default=None, help="directory for ExaBGP's config, socket and log "
                                                   "(default /run/l3net/rr-NODE)")
    p.add_argument("--resync", type=float, default=2.0, help="seconds between re-reads of the BGP resources")
    p.set_defaults(func=run)
    return p


def _decode(value: bytes, kind: str) -> Resource | None:
    try:
        doc: Any = json.loads(value)
        meta = doc.get("metadata") or {}
        return Resource(kind=kind, name=str(meta["name"]), spec=dict(doc.get("spec") or {}),
                        labels=dict(meta.get("labels") or {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("skipping undecodable %s: %s", kind, exc)
        return None


def load_resources(ds: Any, keys: KeyLayout) -> tuple[list[Resource], list[Resource], list[Resource]]:
    """(nodes, bgp configurations, bgp peers) as stored; undecodable values are absent."""
    out: list[list[Resource]] = []
    for plural, kind in (("nodes", "Node"), ("bgpconfigurations", "BGPConfiguration"), ("bgppeers", "BGPPeer")):
        kvs, _ = ds.list(keys.resource_dir(plural))
        out.append([r for r in (_decode(kv.value, kind) for kv in kvs) if r is not None])
    return out[0], out[1], out[2]


async def run_reflector(ds: Any, keys: KeyLayout, node: str, run_dir: Path, *, resync: float = 2.0,
                        netns: str | None = None, stop: asyncio.Event | None = None) -> int:
    """The route reflector's main loop (also used by tests with ``netns``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    view = build_node_view(node, *await loop.run_in_executor(None, load_resources, ds, keys))
    if not view.cluster_id:
        _log.error("node %s has no routeReflectorClusterID; refusing to reflect", node)
        return 2
    speaker = Speaker(node, run_dir, netns=netns)
    await speaker.start()
    lease = await loop.run_in_executor(None, ds.grant_lease, STATUS_TTL)
    try:
        while not stop.is_set():
            for err in view.errors:
                _log.warning("configuration problem: %s", err)
            speaker.set_view(view)
            rows = speaker.peer_status()
            await loop.run_in_executor(None, functools.partial(
                bgp_status.publish, ds, keys, node, rows, lease=lease.id, as_number=view.as_number,
                router_id=view.router_id))
            await loop.run_in_executor(None, lease.refresh)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), resync)
            view = build_node_view(node, *await loop.run_in_executor(None, load_resources, ds, keys))
    finally:
        await speaker.stop()
        await loop.run_in_executor(None, lease.revoke)
    return 0


def run(args: argparse.Namespace) -> int:
    from l3net.datastore import connect_from_env

    keys = KeyLayout(os.environ.get("L3NET_ETCD_PREFIX") or DEFAULT_ETCD_PREFIX)
    ds = connect_from_env()
    run_dir = Path(args.run_dir or f"/run/l3net/rr-{args.node}")

    async def main() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_reflector(ds, keys, args.node, run_dir, resync=args.resync, stop=stop)

    try:
        return asyncio.run(main())
    finally:
        ds.close()

"""bgp.status: a node's BGP peer table in etcd (``keys.node_status(node, "bgp")``), and its text form.

The agent (or ``l3net route-reflector``) calls :func:`publish` with the speaker's
``peer_status()`` under a lease, so a dead node's table disappears on its own;
``l3netctl node status`` calls :func:`read` / :func:`read_all` and
:func:`format_table`. Values are JSON::

    {"node": "n1", "updated": 1795429223.6, "asNumber": 64512, "routerID": "10.0.0.1",
     "peers": [{"name": "Mesh_10_0_0_2", "address": "10.0.0.2", "peerType": "node-to-node mesh",
                "state": "up", "since": 1795429200.1, "info": "Established",
                "received": 3, "advertised": 1, "peerAS": 64512}, ...]}

A stored value that does not decode is treated as absent (logged with its key).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bgp.peer_status import PeerStatus
from l3net.keys import KeyLayout
from l3net.nodestatus import stamped

if TYPE_CHECKING:
    from l3net.nodestatus import StatusPublisher

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeStatus:
    node: str
    updated: float
    as_number: int | None
    router_id: str | None
    peers: tuple[PeerStatus, ...]
    errors: tuple[str, ...] = ()   # BGP resources this node refused (field: reason), e.g. an unreachable peer


def _urgent_part(peers: Iterable[PeerStatus], errors: Iterable[str]) -> tuple[object, ...]:
    """What an operator waits on in the table (each peer's identity and state, the refused resources), not the
    route counts that move with every prefix."""
    return (tuple((p.name, p.address, p.peer_type, p.state, p.info, p.peer_as) for p in peers), tuple(errors))


def document(node: str, peers: Iterable[PeerStatus], *, as_number: int | None = None, router_id: str | None = None,
             errors: Iterable[str] = ()) -> dict[str, Any]:
    """The peer table's JSON document without its ``updated`` stamp (the status publisher stamps its writes)."""
    return {"node": node, "asNumber": as_number, "routerID": router_id, "peers": [p.to_json() for p in peers],
            "errors": list(errors)}


def encode(node: str, peers: Iterable[PeerStatus], *, as_number: int | None = None, router_id: str | None = None,
           now: float | None = None, errors: Iterable[str] = ()) -> bytes:
    return stamped(document(node, peers, as_number=as_number, router_id=router_id, errors=errors),
                   time.time() if now is None else now)


def decode(value: bytes) -> NodeStatus:
    """Raises ValueError for anything that is not a status document."""
    doc: Any = json.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("node"), str) or not isinstance(doc.get("peers"), list):
        raise ValueError("not a BGP status document")
    peers = []
    for p in doc["peers"]:
        if not isinstance(p, dict):
            raise ValueError("peer entry is not an object")
        peers.append(PeerStatus(name=str(p.get("name", "")), address=str(p.get("address", "")),
                                peer_type=str(p.get("peerType", "")), state=str(p.get("state", "")),
                                since=float(p.get("since") or 0), info=str(p.get("info", "")),
                                received=int(p.get("received") or 0), advertised=int(p.get("advertised") or 0),
                                peer_as=p.get("peerAS") if isinstance(p.get("peerAS"), int) else None,
                                stale=int(p.get("stale") or 0), refused=int(p.get("refused") or 0)))
    errors = doc.get("errors") or []
    return NodeStatus(doc["node"], float(doc.get("updated") or 0), doc.get("asNumber"), doc.get("routerID"),
                      tuple(peers), tuple(str(e) for e in errors) if isinstance(errors, list) else ())


def publish(ds: Any, keys: KeyLayout, node: str, peers: Iterable[PeerStatus], *, lease: int = 0,
            as_number: int | None = None, router_id: str | None = None, errors: Iterable[str] = ()) -> None:
    """Write the peer table (blocking; call from a thread when on the agent loop)."""
    ds.put(keys.node_status(node, "bgp"), encode(node, peers, as_number=as_number, router_id=router_id,
                                                 errors=errors), lease=lease)


def keep(status: StatusPublisher, keys: KeyLayout, node: str, peers: Sequence[PeerStatus], *,
         as_number: int | None, router_id: str | None, errors: Sequence[str]) -> None:
    """Hand the peer table to the node's status publisher (under its lease, on its thread): a change of a
    peer's state or of the refused resources is written at once, one of route counts alone batched."""
    status.put_extra(keys.node_status(node, "bgp"),
                     document(node, peers, as_number=as_number, router_id=router_id, errors=errors),
                     urgent_part=_urgent_part(peers, errors))


def read(ds: Any, keys: KeyLayout, node: str) -> NodeStatus | None:
    kv = ds.get(keys.node_status(node, "bgp"))
    if kv is None:
        return None
    try:
        return decode(kv.value)
    except (ValueError, TypeError, RecursionError) as exc:  # a status value nested deep enough is bad data too
        _log.warning("bad BGP status value key=%s error=%s", kv.key, exc)
        return None


def read_all(ds: Any, keys: KeyLayout) -> list[NodeStatus]:
    kvs, _ = ds.list(keys.status)
    out = []
    for kv in kvs:
        if not kv.key.endswith("/bgp"):
            continue
        try:
            out.append(decode(kv.value))
        except (ValueError, TypeError, RecursionError) as exc:
            _log.warning("bad BGP status value key=%s error=%s", kv.key, exc)
    return sorted(out, key=lambda s: s.node)


_COLUMNS = ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "RECEIVED", "ADVERTISED")


def _since(ts: float, now: float) -> str:
    if not ts:
        return "-"
    lt = time.localtime(ts)
    return time.strftime("%H:%M:%S" if now - ts < 86400 else "%Y-%m-%d", lt)


def format_table(status: NodeStatus, *, now: float | None = None) -> str:
    """Calico's ``calicoctl node status`` table, with prefix counts, IPv4 then IPv6."""
    now = time.time() if now is None else now
    out = [f"l3net BGP status of node {status.node} (AS {status.as_number}, router ID {status.router_id})"]
    for family, is_v6 in (("IPv4", False), ("IPv6", True)):
        rows = [(p.address, p.peer_type, p.state, _since(p.since, now), p.info, str(p.received), str(p.advertised))
                for p in status.peers if (":" in p.address) == is_v6]
        out.append(f"{family} BGP status")
        if not rows:
            out.append(f"No {family} peers found.")
            out.append("")
            continue
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
        sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        out.append(sep)
        out.append("|" + "|".join(f" {c.center(w)} " for c, w in zip(_COLUMNS, widths, strict=True)) + "|")
        out.append(sep)
        for r in rows:
            out.append("|" + "|".join(f" {v.ljust(w)} " for v, w in zip(r, widths, strict=True)) + "|")
        out.append(sep)
        out.append("")
    if status.errors:
        out.append("Refused BGP configuration")
        out.extend(f"  {e}" for e in status.errors)
        out.append("")
    return "\n".join(out)

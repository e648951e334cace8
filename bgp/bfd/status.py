"""bgp.bfd.status: a node's BFD session table in etcd (``keys.node_status(node, "bfd")``), and its text form.

The agent publishes :meth:`bgp.bfd.peers.BfdPeers.status` under its status lease (as the
BGP table); ``l3netctl node status`` prints it under the BGP table. Value::

    {"node": "n1", "updated": 1795429223.6,
     "sessions": [{"peer": "10.0.0.2", "multihop": false, "state": "up", "remoteState": "up",
                   "diag": "none", "txIntervalMs": 300.0, "detectionTimeMs": 900.0,
                   "transitions": 1, "downEvents": 0, "since": 1795429200.1}, ...]}

A stored value that does not decode is treated as absent (logged with its key).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from bgp.bfd.speaker import SessionStatus
from l3net.keys import KeyLayout
from l3net.nodestatus import stamped

_log = logging.getLogger(__name__)


def document(node: str, sessions: Iterable[SessionStatus]) -> dict[str, Any]:
    """The session table's JSON document without its ``updated`` stamp (the status publisher stamps its
    writes)."""
    return {"node": node, "sessions": [
        {"peer": s.peer, "multihop": s.multihop, "state": s.state, "remoteState": s.remote_state,
         "diag": s.local_diag, "txIntervalMs": s.tx_interval_ms, "detectionTimeMs": s.detection_time_ms,
         "transitions": s.transitions, "downEvents": s.down_events, "since": s.since} for s in sessions]}


def encode(node: str, sessions: Iterable[SessionStatus], *, now: float | None = None) -> bytes:
    return stamped(document(node, sessions), time.time() if now is None else now)


def decode(value: bytes) -> tuple[str, list[dict[str, Any]]]:
    """(node, sessions); ValueError for anything that is not a BFD status document."""
    doc: Any = json.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("node"), str) or not isinstance(doc.get("sessions"), list):
        raise ValueError("not a BFD status document")
    if not all(isinstance(s, dict) for s in doc["sessions"]):
        raise ValueError("session entry is not an object")
    return doc["node"], doc["sessions"]


def read(ds: Any, keys: KeyLayout, node: str) -> list[dict[str, Any]] | None:
    kv = ds.get(keys.node_status(node, "bfd"))
    if kv is None:
        return None
    try:
        return decode(kv.value)[1]
    except (ValueError, TypeError) as exc:
        _log.warning("bad BFD status value key=%s error=%s", kv.key, exc)
        return None


def format_table(sessions: list[dict[str, Any]], *, now: float | None = None) -> str:
    """The BFD lines of ``node status``: one per session."""
    now = time.time() if now is None else now
    out = ["BFD status"]
    if not sessions:
        out.append("No BFD sessions.")
        return "\n".join(out)
    cols = ("PEER ADDRESS", "MODE", "STATE", "SINCE", "DIAG", "TX/DETECT (MS)", "DOWN EVENTS")
    rows = []
    for s in sessions:
        since = float(s.get("since") or 0)
        rows.append((str(s.get("peer", "")), "multihop" if s.get("multihop") else "single hop",
                     str(s.get("state", "")), time.strftime("%H:%M:%S", time.localtime(since)) if since else "-",
                     str(s.get("diag", "")),
                     f"{float(s.get('txIntervalMs') or 0):g}/{float(s.get('detectionTimeMs') or 0):g}",
                     str(s.get("downEvents", 0))))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out.append(line)
    out.append("|" + "|".join(f" {c:<{w}} " for c, w in zip(cols, widths, strict=True)) + "|")
    out.append(line)
    for r in rows:
        out.append("|" + "|".join(f" {v:<{w}} " for v, w in zip(r, widths, strict=True)) + "|")
    out.append(line)
    return "\n".join(out)

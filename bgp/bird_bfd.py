"""bgp.bird_bfd: the BFD sessions of a BIRD-engine reflector, as l3net's status rows and ``l3net_bfd_*`` series.

BIRD runs the sessions itself (``protocol bfd``, requested by each ``protocol bgp`` with
``bfd { ... }``) and tears the BGP session down when one leaves Up. l3net only reads
``show bfd sessions`` on each status poll and folds the rows into :class:`BirdBfdTracker`,
which counts transitions and down events between polls (a session that went down and back
up between two polls shows as a "Since" that moved while Up, and is counted as one down event;
BIRD's millisecond jitter of an unchanged "Since" is not)
and keeps the same Prometheus series as the agent's speaker (:mod:`bgp.bfd.metrics`).

Pure apart from the metric writes; no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bgp.bfd import metrics
from bgp.bfd.speaker import SessionStatus
from bgp.bird_control import BfdSessionState

_log = logging.getLogger(__name__)

# BIRD's `show bfd sessions` carries no diagnostic; a down event it reports is labelled so
BIRD_DIAG = "unknown"
_STATES = {"admindown": "admin_down", "down": "down", "init": "init", "up": "up"}
# BIRD prints wall time derived from its monotonic clock, so an unchanged session's "Since" can
# move by a millisecond between two polls (seen in CI: x.649 then x.650). A real down-and-up
# needs at least a detection time plus a handshake, far above this.
SINCE_JITTER_S = 0.25


@dataclass
class _Seen:
    state: str
    since: float
    transitions: int = 0
    down_events: int = 0


class BirdBfdTracker:
    """Owns the status rows and ``l3net_bfd_*`` series of one reflector's BIRD BFD sessions.

    Runs on the reflector's event loop (called from the BIRD engine's status poll); not thread-safe.
    Idempotent: the same poll twice changes nothing. ``wanted`` (the peers with BFD configured)
    decides which rows exist: a configured peer BIRD does not list (yet) is shown as ``down``.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._seen: dict[str, _Seen] = {}
        self._rows: dict[str, BfdSessionState] = {}

    def update(self, wanted: Iterable[str], sessions: Mapping[str, BfdSessionState]) -> None:
        """Fold one ``show bfd sessions`` poll in; ``wanted``: canonical addresses of peers with BFD on."""
        wanted = set(wanted)
        for gone in set(self._seen) - wanted:
            del self._seen[gone]
            self._rows.pop(gone, None)
            metrics.remove_session(self.node, gone)
        for peer in sorted(wanted):
            row = sessions.get(peer)
            state = _STATES.get(row.state, "down") if row is not None else "down"
            since = row.since if row is not None else 0.0
            seen = self._seen.get(peer)
            if seen is None:
                self._seen[peer] = _Seen(state, since)
            elif state != seen.state or (state == "up" and abs(since - seen.since) > SINCE_JITTER_S):
                flapped = state == seen.state   # down and back up between two polls
                seen.transitions += 2 if flapped else 1
                if seen.state == "up" or flapped:
                    seen.down_events += 1
                    metrics.DOWN_EVENTS.labels(node=self.node, peer=peer, diag=BIRD_DIAG).inc()
                    _log.warning("bfd session left up node=%s peer=%s now=%s", self.node, peer, state)
                metrics.TRANSITIONS.labels(node=self.node, peer=peer).inc(2 if flapped else 1)
                seen.state, seen.since = state, since
            else:
                seen.since = since   # follow the jitter, so it cannot add up over many polls
            if row is not None:
                self._rows[peer] = row
            else:
                self._rows.pop(peer, None)
            metrics.set_session(self.node, peer, state, row.timeout_s if row is not None else 0.0)

    def status(self) -> list[SessionStatus]:
        """One row per configured peer, the agent's speaker's format (``bgp.bfd.status`` encodes it)."""
        out = []
        for peer in sorted(self._seen):
            seen, row = self._seen[peer], self._rows.get(peer)
            out.append(SessionStatus(
                peer=peer, multihop=row.multihop if row is not None else False, state=seen.state,
                remote_state="", local_diag="", local_discr=0, remote_discr=0,
                tx_interval_ms=round(row.interval_s * 1000, 3) if row is not None else 0.0,
                detection_time_ms=round(row.timeout_s * 1000, 3) if row is not None else 0.0,
                transitions=seen.transitions, down_events=seen.down_events, since=seen.since))
        return out

    def clear(self) -> None:
        """Drop every row and series (the engine stops)."""
        self.update((), {})

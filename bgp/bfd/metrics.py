"""bgp.bfd.metrics: the ``l3net_bfd_*`` Prometheus series, in prometheus_client's default registry.

Every series carries ``node``; per-session series carry ``peer`` (the BGP peer address) and
are removed when the session goes. :func:`register_into` adds them to the agent's registry
(idempotent), as :mod:`bgp.metrics` does.
"""

from __future__ import annotations

import contextlib
import logging

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

_log = logging.getLogger(__name__)

STATES = ("admin_down", "down", "init", "up")

SESSION_STATE = Gauge("l3net_bfd_session_state", "1 for the BFD session's current state, else 0.",
                      ["node", "peer", "state"])
TRANSITIONS = Counter("l3net_bfd_transitions", "BFD session state changes.", ["node", "peer"])
DOWN_EVENTS = Counter("l3net_bfd_down_events",
                      "BFD sessions leaving Up, by diagnostic (detection_time_expired: the peer fell silent).",
                      ["node", "peer", "diag"])
DETECTION_TIME = Gauge("l3net_bfd_detection_time_seconds", "The session's current detection time.",
                       ["node", "peer"])
PACKETS_DROPPED = Counter("l3net_bfd_packets_dropped", "Received BFD packets dropped, by reason.",
                          ["node", "reason"])

_ALL = (SESSION_STATE, TRANSITIONS, DOWN_EVENTS, DETECTION_TIME, PACKETS_DROPPED)


def set_session(node: str, peer: str, state: str, detection_s: float) -> None:
    for s in STATES:
        SESSION_STATE.labels(node=node, peer=peer, state=s).set(1 if s == state else 0)
    DETECTION_TIME.labels(node=node, peer=peer).set(detection_s)


def remove_session(node: str, peer: str) -> None:
    for s in STATES:
        with contextlib.suppress(KeyError):
            SESSION_STATE.remove(node, peer, s)
    with contextlib.suppress(KeyError):
        DETECTION_TIME.remove(node, peer)
    with contextlib.suppress(KeyError):
        TRANSITIONS.remove(node, peer)


def register_into(registry: CollectorRegistry) -> None:
    if registry is REGISTRY:
        return
    for c in _ALL:
        try:
            registry.register(c)
        except ValueError:
            _log.debug("bfd metric already registered name=%s", c._name)

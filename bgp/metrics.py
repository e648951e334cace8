"""bgp.metrics: the Prometheus metrics of the BGP speaker, in prometheus_client's default registry.

Names are ``l3net_bgp_*``; every series carries ``node`` (a process may run more
than one speaker: tests, the lab, a route reflector next to an agent). Per-peer
series carry ``peer`` (Calico's protocol name, ``Mesh_10_0_0_2``) and are removed
when the peer leaves the view. :class:`bgp.speaker.Speaker` updates them from its
loop; prometheus_client makes every update thread-safe.

The agent serves ``l3net.metrics.REGISTRY``; :func:`register_into` adds these
collectors to such a registry as well (idempotent). Names do not clash with the
agent's own ``l3net_bgp_session_up`` / ``l3net_bgp_learned_routes`` /
``l3net_bgp_advertisements``.
"""

from __future__ import annotations

import contextlib
import logging

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

_log = logging.getLogger(__name__)

SESSION_STATES = ("idle", "connected", "up", "down")

SESSION_STATE = Gauge(
    "l3net_bgp_session_state", "1 for the BGP session's current state (idle, connected, up, down), else 0.",
    ["node", "peer", "state"])
PREFIXES_RECEIVED = Gauge(
    "l3net_bgp_prefixes_received", "Prefixes in the peer's Adj-RIB-In (stale ones included).", ["node", "peer"])
PREFIXES_ADVERTISED = Gauge(
    "l3net_bgp_prefixes_advertised", "Prefixes this speaker announces to the peer (0 while the session is down).",
    ["node", "peer"])
PREFIXES_STALE = Gauge(
    "l3net_bgp_prefixes_stale", "Prefixes of the peer kept through a graceful restart and not yet re-announced.",
    ["node", "peer"])
UPDATES_RECEIVED = Counter("l3net_bgp_updates_received", "UPDATE messages received from peers.", ["node"])
COMMANDS_SENT = Counter("l3net_bgp_commands_sent", "API commands sent to ExaBGP.", ["node"])
COMMAND_ERRORS = Counter("l3net_bgp_command_errors", "API commands ExaBGP answered with an error.", ["node"])
SPEAKER_RESTARTS = Counter("l3net_bgp_speaker_restarts", "ExaBGP process restarts by the supervisor.", ["node"])
RELOADS = Counter("l3net_bgp_reloads", "ExaBGP configuration reloads (SIGUSR1) after a peer-set change.", ["node"])
GR_SWEEPS = Counter(
    "l3net_bgp_graceful_restart_sweeps",
    "Graceful-restart ends for a peer, by how: eor (End-of-RIB), timer (restart time expired), "
    "capability (the re-established session no longer preserves forwarding), notification (session closed "
    "with a NOTIFICATION: no retention).", ["node", "reason"])
STALE_SWEPT = Counter(
    "l3net_bgp_stale_routes_swept", "Stale routes removed at the end of a peer's graceful restart.", ["node"])

PREFIX_LIMIT_EXCEEDED = Counter(
    "l3net_bgp_prefix_limit_exceeded",
    "Times a peer sent more accepted prefixes than its maxPrefixes: all its routes were dropped.", ["node", "peer"])
PREFIXES_HELD = Gauge(
    "l3net_bgp_prefixes_refused",
    "Prefixes of the peer the import defaults refuse at present (inside a pool, not from the owner; or a next "
    "hop that is a local workload); kept to be re-checked when the cluster changes.", ["node", "peer"])

ALL = (PREFIX_LIMIT_EXCEEDED, PREFIXES_HELD,
       SESSION_STATE, PREFIXES_RECEIVED, PREFIXES_ADVERTISED, PREFIXES_STALE, UPDATES_RECEIVED, COMMANDS_SENT,
       COMMAND_ERRORS, SPEAKER_RESTARTS, RELOADS, GR_SWEEPS, STALE_SWEPT)


def register_into(registry: CollectorRegistry) -> None:
    """Also expose the BGP metrics through ``registry`` (e.g. ``l3net.metrics.REGISTRY``); idempotent."""
    if registry is REGISTRY:
        return
    for collector in ALL:
        with contextlib.suppress(ValueError):  # already registered there
            registry.register(collector)


def set_peer(node: str, peer: str, state: str, received: int, advertised: int, stale: int, refused: int = 0) -> None:
    for s in SESSION_STATES:
        SESSION_STATE.labels(node=node, peer=peer, state=s).set(1 if s == state else 0)
    PREFIXES_RECEIVED.labels(node=node, peer=peer).set(received)
    PREFIXES_ADVERTISED.labels(node=node, peer=peer).set(advertised)
    PREFIXES_STALE.labels(node=node, peer=peer).set(stale)
    PREFIXES_HELD.labels(node=node, peer=peer).set(refused)


def remove_peer(node: str, peer: str) -> None:
    """Forget a peer's series (it left the view)."""
    for s in SESSION_STATES:
        _remove(SESSION_STATE, node, peer, s)
    for g in (PREFIXES_RECEIVED, PREFIXES_ADVERTISED, PREFIXES_STALE, PREFIXES_HELD):
        _remove(g, node, peer)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)

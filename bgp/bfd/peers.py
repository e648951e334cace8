"""bgp.bfd.peers: one BFD session per BGP peer that has BFD enabled, and what a session going down means.

:class:`BfdPeers` follows the node's BGP view (:class:`bgp.view.NodeBGPView`): a peer
whose ``PeerSpec.bfd`` is set gets a session with those timers, single hop when the
kernel reaches the peer without a gateway, multihop (RFC 5883) otherwise (a reflector
that is not on the node's link). When a session leaves Up, the BGP side is told at once
(:meth:`BgpControl.bfd_down`): it drops that peer's routes (no graceful-restart hold) and
resets the BGP session. When the session comes back nothing is done: the routes return
when BGP is up again and the peer re-sends them.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Callable
from typing import Protocol

from bgp.bfd import metrics
from bgp.bfd.packet import State
from bgp.bfd.session import SessionConfig, StateChange
from bgp.bfd.speaker import BfdSpeaker, PeerKey, SessionStatus
from bgp.view import NodeBGPView
from l3net.netns import nsenter_cmd

_log = logging.getLogger(__name__)


class BgpControl(Protocol):
    """The part of :class:`bgp.speaker.Speaker` BFD drives."""

    def bfd_down(self, address: str, reason: str) -> None: ...


def kernel_is_direct(address: str, netns: str | None = None) -> bool:
    """Whether the kernel reaches ``address`` without a gateway (then BFD runs single hop).

    Asks ``ip route get`` (once per new peer, not per packet). If the kernel cannot say, the
    peer counts as direct: a single-hop session to a peer that is really further away stays
    Down (its packets arrive with TTL < 255) and so never removes a route by mistake.
    """
    cmd = ["ip", "-j", "route", "get", address]
    try:
        r = subprocess.run(nsenter_cmd(netns, cmd) if netns else cmd, capture_output=True, text=True, timeout=5,
                           check=False)
        routes = json.loads(r.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        _log.warning("bfd route lookup failed peer=%s error=%s", address, exc)
        return True
    if r.returncode != 0 or not routes:
        _log.warning("bfd no route to peer peer=%s error=%s", address, r.stderr.strip())
        return True
    return "gateway" not in routes[0]


class BfdPeers:
    """Owns the BFD sessions of one node's BGP peers (and the :class:`BfdSpeaker` carrying them).

    Runs on the agent's asyncio loop; no method is thread-safe. Idempotent: the same view
    twice changes nothing. Failure: a session that cannot be opened (no free port, a socket
    error) is logged and counted as missing in :meth:`status`; the others go on. ``start``
    raises OSError when the BFD ports cannot be bound (the agent then runs without BFD).
    """

    def __init__(self, node: str, bgp: BgpControl, *, netns: str | None = None,
                 is_direct: Callable[[str], bool] | None = None,
                 on_status: Callable[[list[SessionStatus]], None] | None = None,
                 families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> None:
        self.node = node
        self.bgp = bgp
        self.on_status = on_status
        self._netns = netns
        self._is_direct = is_direct or (lambda addr: kernel_is_direct(addr, netns))
        self.speaker = BfdSpeaker(self._on_change, netns=netns, families=families)
        self._wanted: dict[PeerKey, tuple[SessionConfig, str | None]] = {}
        self._hops: dict[str, bool] = {}  # peer address -> multihop, decided once per peer
        self.failed: dict[str, str] = {}   # peer address -> why its session could not be opened
        self._dropped_seen: dict[str, int] = {}

    async def start(self) -> None:
        await self.speaker.start()

    async def stop(self) -> None:
        # No AdminDown: a stopping agent is a restart or a node going away; its peers must not
        # mistake a planned stop for a live path (AdminDown is not a failure to them, RFC 5882 §3.2).
        await self.speaker.stop(admin_down=False)
        for key in self._wanted:
            metrics.remove_session(self.node, key.peer)
        self._wanted = {}

    def set_view(self, view: NodeBGPView) -> None:
        """Make the sessions match the peers of ``view`` that have BFD enabled."""
        wanted: dict[PeerKey, tuple[SessionConfig, str | None]] = {}
        for peer in view.peers:
            if peer.bfd is None:
                continue
            if peer.address not in self._hops:
                self._hops[peer.address] = not self._is_direct(peer.address)
            key = PeerKey.parse(peer.address, self._hops[peer.address])
            cfg = SessionConfig(peer.bfd.min_tx_us, peer.bfd.min_rx_us, peer.bfd.multiplier)
            # sourceAddress None: the kernel picks the source by route, as for the BGP session it guards
            local = peer.local_address if peer.source_node_ip or peer.passive else None
            wanted[key] = (cfg, local)
        for key in set(self._wanted) - set(wanted):
            self.speaker.remove_session(key)
            metrics.remove_session(self.node, key.peer)
            self._hops.pop(key.peer, None)
        self.failed = {k: v for k, v in self.failed.items() if any(w.peer == k for w in wanted)}
        for key, (cfg, local) in sorted(wanted.items()):
            if self._wanted.get(key) == (cfg, local):
                continue
            try:
                self.speaker.add_session(key, cfg, local)
            except OSError as exc:
                self.failed[key.peer] = str(exc)
                _log.error("bfd session not opened peer=%s error=%s", key.peer, exc)
                continue
            self.failed.pop(key.peer, None)
            metrics.set_session(self.node, key.peer, "down", 0.0)
        self._wanted = {k: v for k, v in wanted.items() if k.peer not in self.failed}
        self._publish()

    def status(self) -> list[SessionStatus]:
        return self.speaker.status()

    def _on_change(self, key: PeerKey, change: StateChange) -> None:
        session = self.speaker.session(key)
        detection = session.detection_time_us / 1e6 if session is not None else 0.0
        metrics.set_session(self.node, key.peer, change.new.name.lower(), detection)
        metrics.TRANSITIONS.labels(node=self.node, peer=key.peer).inc()
        if change.old == State.UP and change.new == State.DOWN:
            diag = change.diag.name.lower()
            metrics.DOWN_EVENTS.labels(node=self.node, peer=key.peer, diag=diag).inc()
            if session is not None and session.remote_state == State.ADMIN_DOWN:
                # RFC 5882 §3.2: the peer took BFD down on purpose; that says nothing about the path.
                _log.info("bfd peer went admin down, BGP left alone peer=%s", key.peer)
            else:
                self.bgp.bfd_down(key.peer, f"BFD down ({diag})")
        self._publish()

    def _publish(self) -> None:
        for reason, n in self.speaker.dropped.items():
            # The speaker counts in plain ints (no metric work per packet); mirror the totals here.
            seen = self._dropped_seen.get(reason, 0)
            if n > seen:
                metrics.PACKETS_DROPPED.labels(node=self.node, reason=reason).inc(n - seen)
                self._dropped_seen[reason] = n
        if self.on_status is not None:
            self.on_status(self.status())

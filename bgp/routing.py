"""bgp.routing: the routing side of one node's speaker: ExaBGP's events in, learned routes and
advertisements out.

:class:`Routing` owns the peer records (:class:`bgp.peer_status.PeerRecord`), the Adj-RIB-In
(:class:`bgp.rib.Rib`) with the view's import policy and prefix limits (:mod:`bgp.policy`;
re-checked when the view's filters, limits or IPAM facts change), the graceful-restart machine
(:mod:`bgp.graceful_restart`, one loop timer for its earliest deadline) and the advertisements
(:class:`bgp.advertised.Advertised`, reflection included). Learned best routes go to
``on_learned``, peer rows to ``on_peers`` and the ``l3net_bgp_*`` metrics.

It writes nothing itself: commands go through the ``send`` callable of the speaker, which holds
the bridge socket; ``ready()`` says whether a command can be written now, and ``configured`` is
the set of neighbours the running ExaBGP has loaded (a command for another one is refused).
Runs on the speaker's asyncio loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from bgp import metrics
from bgp.advertised import Advertised
from bgp.commands import Advertisement, eor_command, refresh_command, teardown_command
from bgp.events import Announce, EorEvent, Event, OpenEvent, StateEvent, UpdateEvent
from bgp.graceful_restart import DROP, KEEP, SWEEP, PeerRestart, RestartMachine
from bgp.peer_status import PeerRecord, PeerStatus
from bgp.planner import Command, Item
from bgp.policy import PeerFacts, import_reason, paths_to_recheck
from bgp.rib import Rib
from bgp.view import NodeBGPView, PeerSpec

_log = logging.getLogger(__name__)

LearnedCallback = Callable[[dict[str, list[str]]], None]
Send = Callable[[str, tuple[Item, ...]], bool]
# After ExaBGP refused a command, its prefixes are re-sent this much later (not in a tight loop).
RETRY_DELAY = 1.0


class Routing:
    """Peers, RIB, graceful restart and advertisements of one node, driven by ExaBGP's events."""

    def __init__(self, node: str, send: Send, ready: Callable[[], bool], *,
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 on_learned: LearnedCallback | None = None,
                 on_peers: Callable[[list[PeerStatus]], None] | None = None,
                 on_converged: Callable[[], None] | None = None) -> None:
        self.node = node
        self._send_line = send
        self._ready = ready
        self.clock = clock
        self.on_learned = on_learned
        self.on_peers = on_peers
        self.on_converged = on_converged
        self.converged = False   # every peer of the view has sent End-of-RIB once since start
        self.view: NodeBGPView | None = None
        self.peers: dict[str, PeerRecord] = {}
        self.configured: set[str] = set()   # neighbours the running ExaBGP has loaded
        self.rib = Rib(local_as=0, router_id=None)
        self.adverts = Advertised(node)
        self.updates_received = 0
        self._gr = RestartMachine(monotonic)
        self._gr_timer: asyncio.TimerHandle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._learned: dict[str, list[str]] = {}
        self._last_counts: dict[str, tuple[int, int]] = {}
        self._metric_rows: dict[str, PeerStatus] = {}   # the row each peer's metrics were last set from
        self._unsynced = True   # a sync was skipped (no view, ExaBGP not ready): the next one diffs everything

    # -- inputs ----------------------------------------------------------------------------
    def set_view(self, view: NodeBGPView, old: NodeBGPView | None) -> None:
        """Adopt the peer set of ``view`` (the speaker has dealt with ExaBGP's configuration)."""
        self.view = self.adverts.view = view
        rib = self.rib
        rib.local_as, rib.router_id, rib.cluster_id = view.as_number, view.router_id, view.cluster_id
        rib.local_addresses = frozenset(view.local_addresses)
        new_peers = {p.address: p for p in view.peers}
        for addr in [a for a in self.peers if a not in new_peers]:
            gone = self.peers.pop(addr)
            self._gr.end(addr)
            metrics.remove_peer(self.node, gone.spec.name)
            self._metric_rows.pop(addr, None)
            self.adverts.forget(addr)
            self.rib_changed(self.rib.drop_peer(addr))
        for addr, spec in new_peers.items():
            if addr in self.peers:
                self.peers[addr].spec = spec
            else:
                self.peers[addr] = PeerRecord(spec, since=self.clock())
        if _policy_changed(old, view):
            self.apply_import_policy(old)
        self.adverts.reflect_all(self.rib)

    def set_guard(self, view: NodeBGPView, old: NodeBGPView) -> None:
        """Only the cluster facts of the import defaults (or the errors) changed: re-check imports."""
        self.view = self.adverts.view = view
        self.apply_import_policy(old, affected=paths_to_recheck(old.guard, view.guard))
        self.notify_peers()

    def loaded(self, addresses: set[str], *, fresh: bool = False) -> None:
        """The running ExaBGP has loaded these neighbours (``fresh``: a new process holding nothing,
        sent in full when each session is up; else after a reload: the new ones are sent in full now)."""
        if fresh:
            self.adverts.reset()
            self.configured = set(addresses)
            return
        new = addresses - self.configured
        self.configured = set(addresses)
        self.sync(full=new)

    def set_advertisements(self, adverts: Mapping[str, Advertisement | None]) -> None:
        """The complete desired set of our own prefixes (sent to every peer of the prefix's family).

        Only the prefixes whose advertisement changed are diffed against what each peer holds: the agent
        calls this on every apply, and a full diff costs every block of the node times every peer.
        """
        own = {str(k): (v or Advertisement()) for k, v in adverts.items()}
        old, self.adverts.own = self.adverts.own, own
        changed = {pfx for pfx in own.keys() | old.keys() if own.get(pfx) != old.get(pfx)}
        self.sync(prefixes=None if self._unsynced else changed)

    def handle(self, ev: Event) -> None:
        """One parsed event of a peer (state, OPEN, UPDATE, End-of-RIB)."""
        peer = self.peers.get(getattr(ev, "peer", ""))
        if peer is None:
            _log.debug("event for unknown peer node=%s event=%r", self.node, ev)
            return
        if isinstance(ev, StateEvent):
            self._on_state(peer, ev)
        elif isinstance(ev, OpenEvent):
            peer.gr = ev.graceful_restart
        elif isinstance(ev, UpdateEvent):
            self.updates_received += 1
            metrics.UPDATES_RECEIVED.labels(node=self.node).inc()
            was_over = ev.peer in self.rib.over_limit
            self.rib_changed(self.rib.apply(ev))
            self._check_limit(ev.peer, was_over)
        elif isinstance(ev, EorEvent):
            peer.eor = peer.eor_seen = True
            if self._gr.end_of_rib(ev.peer).action == SWEEP or self.rib.stale(ev.peer):
                self._end_restart(ev.peer, "eor")
            self.check_converged()

    def bfd_down(self, address: str, reason: str) -> None:
        """BFD saw the path to ``address`` fail: drop its routes now and reset its BGP session (no
        graceful-restart hold: the peer's forwarding is what failed)."""
        peer = self.peers.get(address)
        if peer is None:
            return
        _log.warning("BFD down: dropping routes and resetting BGP node=%s peer=%s reason=%s",
                     self.node, address, reason)
        peer.info = reason
        try:
            # Routes first: on a reflector the withdraws to the other clients are the critical path.
            if self._gr.end(address) or self.rib.stale(address):
                self._end_restart(address, "bfd")
            self.rib_changed(self.rib.apply(StateEvent(address, None, "down", reason)))
        finally:
            # Cease, subcode 6 "Other Configuration Change" (RFC 4486): the path failed, not the peer's
            # config, but no subcode says so; ExaBGP closes the session and reconnects on its own. In a
            # finally: a failing route consumer must not leave the session up.
            self.send(teardown_command(address, 6))
            self.notify_peers()

    def process_gone(self) -> None:
        """ExaBGP is gone, and every session with it: keep what graceful-restart peers sent (as stale,
        until they re-send it to the restarted ExaBGP), drop the rest."""
        self.adverts.reset()
        self.configured = set()
        now = self.clock()
        changed: set[str] = set()
        for addr, p in self.peers.items():
            was_up = p.state == "up"
            if p.state != "idle":
                p.state, p.since, p.info = "down", now, "ExaBGP restarting"
            verdict = self._gr.own_restart(addr, _restart_settings(p.spec), p.gr, was_up)
            if verdict.action == KEEP:
                self._keep_stale(p, verdict.seconds, verdict.reason)
            elif verdict.action == DROP:
                changed |= self.rib.drop_peer(addr)
        self.rib_changed(changed)
        self.notify_peers()

    def stop(self) -> None:
        for handle in (self._gr_timer, self._retry_handle):
            if handle is not None:
                handle.cancel()

    # -- outputs ---------------------------------------------------------------------------
    def send(self, line: str, items: tuple[Item, ...] = ()) -> bool:
        return self._send_line(line, items)

    def sync(self, *, full: set[str] | None = None, prefixes: set[str] | None = None) -> None:
        """Bring what ExaBGP holds in line with the desired advertisements (see Advertised.sync)."""
        if self.view is None or not self._ready():
            self._unsynced = True
            return
        if prefixes is None:
            self._unsynced = False
        peers = [p.spec for addr, p in self.peers.items() if addr in self.configured and _addressable(p)]
        self.adverts.sync(peers, lambda c: self.send(c.line, c.items), full=full, prefixes=prefixes)
        self._notify_if_counts_changed()

    def refused(self, cmd: Command, *, retry: bool = False) -> None:
        """ExaBGP refused ``cmd`` (``retry``: re-send a moment later) or may not have got it (the
        bridge connection dropped; the reconnect re-sends everything): what it carried is unknown now."""
        self.adverts.mark_unsure(cmd.items, self.peers)
        if retry and cmd.items and self._retry_handle is None:
            self._retry_handle = asyncio.get_running_loop().call_later(RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if self.adverts.unsure:
            self.sync(prefixes=set())

    def peer_status(self) -> list[PeerStatus]:
        return [PeerStatus(name=p.spec.name, address=addr, peer_type=p.spec.peer_type, state=p.state,
                           since=p.since, info=p.info, received=self.rib.received(addr),
                           advertised=self.adverts.advertised(addr) if p.state == "up" else 0,
                           peer_as=p.spec.peer_as, stale=len(self.rib.stale(addr)), refused=self.rib.held(addr))
                for addr, p in sorted(self.peers.items())]

    def best_routes(self) -> dict[str, list[str]]:
        return dict(self._learned)

    def notify_peers(self) -> None:
        rows = self.peer_status()
        for r in rows:
            # only rows that moved: a reflector's counts move on every update, for one or two peers of many
            if self._metric_rows.get(r.address) != r:
                self._metric_rows[r.address] = r
                metrics.set_peer(self.node, r.name, r.state, r.received, r.advertised, r.stale, r.refused)
        if self.on_peers is not None:
            self.on_peers(rows)

    def check_converged(self) -> None:
        # No peer is not "every peer sent End-of-RIB": a view built before the peers' Nodes were read (the
        # agent's cached view at start) has none. The agent decides that case itself, from a live view.
        if self.converged or self.view is None or not self.peers:
            return
        if all(p.eor_seen for p in self.peers.values()):
            self.converged = True
            _log.info("BGP converged: End-of-RIB from every peer node=%s peers=%d", self.node, len(self.peers))
            if self.on_converged is not None:
                self.on_converged()

    # -- RIB changes -----------------------------------------------------------------------
    def rib_changed(self, changed: set[str]) -> None:
        if not changed:
            return
        self.adverts.reflect_changed(self.rib, changed)
        self.sync(prefixes=changed)
        moved = False
        for pfx in changed:
            hops = self.rib.best_next_hops(pfx)
            if hops:
                if self._learned.get(pfx) != hops:
                    self._learned[pfx] = hops
                    moved = True
            elif self._learned.pop(pfx, None) is not None:
                moved = True
        if moved:
            self._learned = dict(sorted(self._learned.items()))
            if self.on_learned is not None:
                self.on_learned(dict(self._learned))
        self._notify_if_counts_changed()

    def _notify_if_counts_changed(self) -> None:
        """Prefix counts move without a session event; report them so `node status` is not stale."""
        counts = {addr: (self.rib.received(addr), self.adverts.advertised(addr)) for addr in self.peers}
        if counts != self._last_counts:
            self._last_counts = counts
            self.notify_peers()

    def _on_state(self, peer: PeerRecord, ev: StateEvent) -> None:
        was_up = peer.state == "up"
        peer.state = ev.state
        peer.since = self.clock()
        peer.info = {"up": "Established", "connected": "OpenSent"}.get(ev.state, ev.reason or "Active")
        _log.info("peer state node=%s peer=%s state=%s reason=%s", self.node, ev.peer, ev.state, ev.reason)
        if ev.state == "up":
            self._on_up(peer, ev)
        elif ev.state == "down" and was_up:
            held = self._gr.holding(ev.peer)
            verdict = self._gr.session_down(ev.peer, _restart_settings(peer.spec), peer.gr, ev.reason)
            if verdict.action == KEEP:
                self._keep_stale(peer, verdict.seconds, ev.reason)
            else:
                if held or self.rib.stale(ev.peer):
                    self._end_restart(ev.peer, "notification")
                # ExaBGP sends no withdraws on down: the peer's routes go now
                self.rib_changed(self.rib.apply(ev))
        elif ev.state == "down" and self._gr.holding(ev.peer):
            peer.info = f"Graceful restart: keeping {len(self.rib.stale(ev.peer))} routes ({ev.reason})"
        self.notify_peers()

    def _on_up(self, peer: PeerRecord, ev: StateEvent) -> None:
        peer.eor = False
        self.rib.reset_limit(ev.peer)   # a new session starts counting afresh
        self.rib.apply(ev)
        verdict = self._gr.session_up(ev.peer, _restart_settings(peer.spec), peer.gr)
        if verdict.action == SWEEP:
            self._end_restart(ev.peer, verdict.reason)
        self._arm_gr_timer()
        # established, so ExaBGP has loaded this neighbor (also right after a reload)
        self.configured.add(ev.peer)
        self.sync(full={ev.peer})
        # our table is complete only now: End-of-RIB after it (manual-eor in the config)
        self.send(eor_command(ev.peer, peer.spec.afi))

    # -- graceful restart glue -------------------------------------------------------------
    def _keep_stale(self, peer: PeerRecord, seconds: float, why: str) -> None:
        """The machine holds ``peer``: mark its routes stale (still forwarding) and wake at the deadline."""
        kept = self.rib.mark_stale(peer.spec.address)
        self._arm_gr_timer()
        peer.info = f"Graceful restart: keeping {kept} routes ({why})"
        _log.info("graceful restart: keeping routes node=%s peer=%s count=%d for=%.0fs reason=%s",
                  self.node, peer.spec.address, kept, seconds, why)

    def _arm_gr_timer(self) -> None:
        """One loop timer for the machine's earliest deadline (the machine itself never sleeps)."""
        if self._gr_timer is not None:
            self._gr_timer.cancel()
            self._gr_timer = None
        deadline = self._gr.next_deadline()
        if deadline is not None:
            self._gr_timer = asyncio.get_running_loop().call_later(max(0.0, deadline - self._gr.clock()),
                                                                  self._gr_expired)

    def _gr_expired(self) -> None:
        self._gr_timer = None
        for addr in self._gr.expired():
            self._end_restart(addr, "timer")
        self._arm_gr_timer()

    def _end_restart(self, addr: str, how: str) -> None:
        self._gr.end(addr)
        gone = self.rib.sweep_stale(addr)
        metrics.GR_SWEEPS.labels(node=self.node, reason=how).inc()
        metrics.STALE_SWEPT.labels(node=self.node).inc(len(gone))
        _log.info("graceful restart over node=%s peer=%s how=%s swept=%d", self.node, addr, how, len(gone))
        self.rib_changed(gone)
        self.notify_peers()

    # -- import policy glue ----------------------------------------------------------------
    def apply_import_policy(self, old: NodeBGPView | None,
                            affected: Callable[[str, str], bool] | None = None) -> None:
        """Install the view's import check and limits; re-check held and accepted paths.

        A peer whose filters or limit changed is used again if it was over its limit; the Rib
        re-checks the paths it holds. If some of that peer's paths could not be held (more
        than the Rib keeps), the peer is also asked to re-send its routes (route refresh). ``affected``
        narrows the re-check to the paths a change of the cluster facts alone can re-decide.
        """
        view = self.view
        assert view is not None
        index = view.guard.index()
        facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in view.peers}

        def check(peer: str, ann: Announce) -> str | None:
            f = facts.get(peer)
            if f is None:
                return "not a configured peer"
            return import_reason(index, f, ann.prefix, ann.next_hop, ann.attrs.as_path, ann.attrs.originator_id)

        self.rib.import_check = check
        self.rib.limits = {p.address: p.max_prefixes for p in view.peers if p.max_prefixes is not None}
        before = {p.address: (p.import_rules, p.max_prefixes) for p in old.peers} if old is not None else {}
        for p in view.peers:
            if p.address in before and before[p.address] != (p.import_rules, p.max_prefixes):
                self._limits_changed(p)
        over = set(self.rib.over_limit)
        self.rib_changed(self.rib.refilter(affected))
        for addr in set(self.rib.over_limit) - over:
            self._check_limit(addr, False)

    def _limits_changed(self, p: PeerSpec) -> None:
        self.rib.reset_limit(p.address)
        peer = self.peers.get(p.address)
        if p.address in self.rib.overflowed and peer is not None and peer.state == "up":
            self.rib.overflowed.discard(p.address)
            self.send(refresh_command(p.address, p.afi))

    def _check_limit(self, addr: str, was_over: bool) -> None:
        limit = self.rib.over_limit.get(addr)
        if limit is None or was_over:
            return
        peer = self.peers.get(addr)
        name = peer.spec.name if peer is not None else addr
        metrics.PREFIX_LIMIT_EXCEEDED.labels(node=self.node, peer=name).inc()
        if peer is not None:
            peer.info = f"Prefix limit {limit} exceeded: routes dropped until the session restarts"
        _log.warning("prefix limit exceeded node=%s peer=%s address=%s limit=%d", self.node, name, addr, limit)


def _addressable(peer: PeerRecord) -> bool:
    """ExaBGP can take commands for this peer now: a sourceAddress None (``local-address auto``) neighbour
    learns its local address, which ``next-hop self`` resolves to, only when its session connects, so it is
    sent nothing until its session is up (then everything, in full, as on every session up)."""
    spec = peer.spec
    return spec.source_node_ip or spec.passive or peer.state == "up"


def _policy_changed(old: NodeBGPView | None, view: NodeBGPView) -> bool:
    def key(v: NodeBGPView) -> dict[str, object]:
        return {p.address: (p.import_rules, p.max_prefixes, p.peer_node) for p in v.peers}
    return old is None or old.guard != view.guard or key(old) != key(view)


def _restart_settings(spec: PeerSpec) -> PeerRestart:
    return PeerRestart(spec.graceful_restart, float(spec.restart_time), spec.afi)

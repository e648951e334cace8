"""bgp.speaker: ExaBGP as a supervised child of the agent, driven as "set the desired advertisements".

The :class:`Speaker` owns, for one node:

- the unix socket the bridge helper (``python -m bgp.bridge``) connects to;
- the rendered ExaBGP configuration file and the ExaBGP process (its own process
  group, started in the current network namespace or, for tests and the lab, in
  ``netns``), restarted with exponential backoff and jitter when it dies;
- the desired advertisements, diffed per neighbor and sent as few batched
  commands (one per attribute set, prefix set and neighbor set: ``neighbor A ,
  neighbor B announce attributes … nlri …``), and re-sent in full after a session
  comes up, after the bridge (re)connects and after the process restarts;
- what ExaBGP holds per neighbor (``_sent``), claimed when a command is written;
  a command ExaBGP refuses (``error`` ack), or one in flight when the bridge
  connection drops, makes every (neighbor, prefix) it carried uncertain: they
  are re-sent by the next sync (one is scheduled a second later);
- the Adj-RIB-In (:class:`bgp.rib.Rib`), with the view's import policy and prefix limits
  (:mod:`bgp.policy`; re-checked when the view's filters, limits or IPAM facts change, without
  an ExaBGP reload); learned best routes go to ``on_learned``; BGPFilter export rules per peer;
- for a route reflector (the view has a cluster ID), the reflected routes
  (:func:`bgp.reflector.reflect`), diffed like its own ones;
- peer states for ``node status`` (:meth:`peer_status`) and the ``l3net_bgp_*``
  metrics (:mod:`bgp.metrics`).

Graceful restart (RFC 4724). Receiving side: when the session of a peer whose last
OPEN carried the graceful-restart capability (and ours is on) drops without a
NOTIFICATION, its routes are kept, marked stale and still forwarded; a re-announced
prefix is fresh again; the rest is swept on the peer's End-of-RIB, when the
re-established session no longer preserves forwarding, or after the restart time
(the peer's advertised time, capped by ours: ``restartTime`` / ``maxRestartTime``).
A NOTIFICATION (hold timer expiry included) drops the routes at once, as does every
down with graceful restart off. Restarting side: when our own ExaBGP dies, what we
learned is kept the same way until the peers re-send it after the restart; ExaBGP
sets the Restart State bit on the first OPEN of a process, and we send End-of-RIB
ourselves (``manual-eor``) after the full table, so peers never sweep before our
routes are back. ExaBGP is killed with the agent (``PR_SET_PDEATHSIG``), so a new
agent never finds the old one holding the port.

Peer-set changes (``set_view``) rewrite the config and, after a debounce, send
SIGUSR1: ExaBGP 5 reloads, keeps sessions whose neighbor block is unchanged,
re-establishes changed ones and removes dropped ones. A change of the listening
addresses or port (ExaBGP reads them from its environment) restarts the process.

Runs on one asyncio loop (the agent's); no method is thread-safe. Failures of
ExaBGP are logged and retried forever (the peers withdraw our routes meanwhile);
``stop()`` kills the process group and removes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bgp import metrics
from bgp.commands import (
    Advertisement,
    eor_command,
    refresh_command,
    teardown_command,
)
from bgp.config import NodeBGPView, PeerSpec, exabgp_env, render_exabgp_config
from bgp.events import (
    AckEvent,
    Announce,
    EorEvent,
    GracefulRestartCap,
    OpenEvent,
    StateEvent,
    TextEvent,
    UpdateEvent,
    parse_line,
)
from bgp.graceful_restart import DROP, KEEP, SWEEP, PeerRestart, RestartMachine
from bgp.planner import Command, NeighbourWant, apply_sent, plan
from bgp.policy import REJECT, PeerFacts, filter_verdict, import_reason
from bgp.reflector import reflect
from bgp.rib import Rib
from bgp.secrets import write_private
from l3net.netns import nsenter_cmd

_log = logging.getLogger(__name__)

LearnedCallback = Callable[[dict[str, list[str]]], None]


@dataclass(frozen=True)
class PeerStatus:
    """One row of ``node status``."""

    name: str
    address: str
    peer_type: str
    state: str          # idle | connected | up | down
    since: float        # wall-clock time of the last state change
    info: str           # Established, Connect, Active, or the reason of the last down
    received: int
    advertised: int
    peer_as: int | None = None
    stale: int = 0      # received prefixes kept through the peer's graceful restart, not yet re-sent
    refused: int = 0    # received prefixes the import defaults refuse at present

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "peerType": self.peer_type, "state": self.state,
                "since": self.since, "info": self.info, "received": self.received, "advertised": self.advertised,
                "peerAS": self.peer_as, "stale": self.stale, "refused": self.refused}


@dataclass
class _Peer:
    spec: PeerSpec
    state: str = "idle"
    since: float = 0.0
    info: str = "Idle"
    eor: bool = False
    eor_seen: bool = False                       # End-of-RIB received at least once since the speaker started
    gr: GracefulRestartCap | None = None         # from the peer's last OPEN


_PR_SET_PDEATHSIG = 1

# Longest line accepted from ExaBGP: one UPDATE as JSON. A 4 KiB UPDATE packs up to ~900 IPv4
# prefixes, ~80 bytes of JSON each (measured: FRR's full UPDATEs overflowed asyncio's 64 KiB
# default and dropped the bridge connection). A longer line is skipped and logged, not fatal.
BRIDGE_LINE_LIMIT = 4 * 1024 * 1024
# After ExaBGP refused a command, its prefixes are re-sent this much later (not in a tight loop).
RETRY_DELAY = 1.0


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs ExaBGP when the agent dies (a kill -9 of the agent
    must take its ExaBGP along, else the next agent's ExaBGP cannot bind and its sessions collide)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Speaker:
    """Supervises ExaBGP + the bridge for one node and keeps its advertisements in line with the desired set."""

    def __init__(self, node: str, run_dir: str | Path, *, netns: str | None = None,
                 on_learned: LearnedCallback | None = None,
                 on_peers: Callable[[list[PeerStatus]], None] | None = None,
                 python: str = sys.executable, reload_delay: float = 0.2,
                 backoff: tuple[float, float] = (0.5, 10.0), clock: Callable[[], float] = time.time,
                 on_converged: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.run_dir = Path(run_dir)
        self.netns = netns
        self.on_learned = on_learned
        self.on_peers = on_peers
        self.python = python
        self.reload_delay = reload_delay
        self.backoff = backoff
        self.clock = clock
        self.socket_path = self.run_dir / "bridge.sock"
        self.config_path = self.run_dir / "exabgp.conf"
        self.log_path = self.run_dir / "exabgp.log"
        self.pid_path = self.run_dir / "exabgp.pid"
        self.on_converged = on_converged
        self.converged = False   # every peer of the view has sent End-of-RIB once since start
        self.restarts = 0
        self.stats = {"updates_received": 0, "commands_sent": 0, "command_errors": 0, "reloads": 0}
        self._view: NodeBGPView | None = None
        self._env: dict[str, str] | None = None
        self._own: dict[str, Advertisement] = {}
        self._reflected: dict[str, dict[str, Advertisement]] = {}
        self._sent: dict[str, dict[str, Advertisement]] = {}
        self._unsure: dict[str, set[str]] = {}   # neighbor -> prefixes whose state in ExaBGP is unknown
        self._retry_handle: asyncio.TimerHandle | None = None
        self._gr = RestartMachine(monotonic)
        self._gr_timer: asyncio.TimerHandle | None = None
        self._last_counts: dict[str, tuple[int, int]] = {}
        self._peers: dict[str, _Peer] = {}
        self._configured: set[str] = set()   # neighbors the running ExaBGP has loaded
        self._rib = Rib(local_as=0, router_id=None)
        self._learned: dict[str, list[str]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[Command] = deque()   # written, not yet acked (ExaBGP acks in order)
        self._server: asyncio.base_events.Server | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reload_handle: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._restart_now = False
        self._stopping = False

    # -- public API ------------------------------------------------------------------------
    @property
    def exabgp_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def view(self) -> NodeBGPView | None:
        return self._view

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._kill_leftover()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_bridge, path=str(self.socket_path),
                                                       limit=BRIDGE_LINE_LIMIT)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name=f"speaker-{self.node}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._reload_handle:
            self._reload_handle.cancel()
        if self._retry_handle:
            self._retry_handle.cancel()
        if self._gr_timer is not None:
            self._gr_timer.cancel()
        await self._kill_process()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._writer:
            self._writer.close()
        if self._server:
            self._server.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def set_view(self, view: NodeBGPView) -> None:
        """Adopt a new peer set; reload ExaBGP (debounced) or restart it when its environment changed."""
        if view == self._view:
            return
        old = self._view
        self._view = view
        policy_changed = (old is None or old.guard != view.guard
                          or {p.address: (p.import_rules, p.max_prefixes, p.peer_node) for p in old.peers}
                          != {p.address: (p.import_rules, p.max_prefixes, p.peer_node) for p in view.peers})
        if old is not None and replace(old, guard=view.guard, errors=view.errors) == view:
            # only the cluster facts of the import defaults (or the errors) changed: no ExaBGP reload
            self._apply_import_policy(old)
            self._notify_peers()
            return
        self._rib.local_as = view.as_number
        self._rib.router_id = view.router_id
        self._rib.cluster_id = view.cluster_id
        self._rib.local_addresses = frozenset(view.local_addresses)
        new_peers = {p.address: p for p in view.peers}
        for addr in list(self._peers):
            if addr not in new_peers:
                gone = self._peers.pop(addr)
                self._gr.end(addr)
                metrics.remove_peer(self.node, gone.spec.name)
                self._sent.pop(addr, None)
                self._unsure.pop(addr, None)
                self._rib_changed(self._rib.drop_peer(addr))
        for addr, spec in new_peers.items():
            if addr in self._peers:
                if self._peers[addr].spec != spec:
                    self._peers[addr].spec = spec
            else:
                self._peers[addr] = _Peer(spec, since=self.clock())
        if policy_changed:
            self._apply_import_policy(old)
        env = exabgp_env(view)
        config_changed = self._write_config()
        if old is None or env != self._env or self._proc is None:
            if self._proc is not None:
                _log.info("speaker restart: listening settings changed node=%s", self.node)
                self._restart_now = True
                asyncio.get_running_loop().create_task(self._kill_process())
            self._env = env
            self._wake.set()
        elif config_changed:
            self._schedule_reload()
        self._recompute_reflection()
        self._sync()
        self._notify_peers()
        self._check_converged()

    def set_advertisements(self, adverts: Mapping[str, Advertisement | None]) -> None:
        """The complete desired set of our own prefixes (sent to every peer of the prefix's family)."""
        self._own = {str(k): (v or Advertisement()) for k, v in adverts.items()}
        self._sync()

    def peer_status(self) -> list[PeerStatus]:
        out = []
        for addr, p in sorted(self._peers.items()):
            out.append(PeerStatus(name=p.spec.name, address=addr, peer_type=p.spec.peer_type, state=p.state,
                                  since=p.since, info=p.info, received=self._rib.received(addr),
                                  advertised=len(self._sent.get(addr, {})) if p.state == "up" else 0,
                                  peer_as=p.spec.peer_as, stale=len(self._rib.stale(addr)),
                                  refused=self._rib.held(addr)))
        return out

    def best_routes(self) -> dict[str, list[str]]:
        return dict(self._learned)

    def bfd_down(self, address: str, reason: str) -> None:
        """BFD saw the path to ``address`` fail: drop its routes now and reset its BGP session.

        No graceful-restart hold: the peer's forwarding is what failed. Its routes come back when
        BGP is up again and the peer re-sends them; nothing else is done when BFD returns.
        """
        peer = self._peers.get(address)
        if peer is None:
            return
        _log.warning("BFD down: dropping routes and resetting BGP node=%s peer=%s reason=%s",
                     self.node, address, reason)
        peer.info = reason
        try:
            # Routes first: on a reflector the withdraws to the other clients are the critical path.
            if self._gr.end(address) or self._rib.stale(address):
                self._end_restart(address, "bfd")
            self._rib_changed(self._rib.apply(StateEvent(address, None, "down", reason)))
        finally:
            # Cease, subcode 6 "Other Configuration Change" (RFC 4486): the path failed, not the peer's
            # config, but no subcode says so; ExaBGP closes the session and reconnects on its own. In a
            # finally: a failing route consumer must not leave the session up.
            self._send(teardown_command(address, 6))
            self._notify_peers()

    @property
    def rib(self) -> Rib:
        return self._rib

    # -- import policy ---------------------------------------------------------------------
    def _apply_import_policy(self, old: NodeBGPView | None) -> None:
        """Install the view's import check and limits; re-check held and accepted paths.

        A peer whose filters or limit changed is used again if it was over its limit; the Rib
        re-checks the paths it holds. If some of that peer's paths could not be held (more
        than the Rib keeps), the peer is also asked to re-send its routes (route refresh).
        """
        view = self._view
        assert view is not None
        index = view.guard.index()
        facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in view.peers}

        def check(peer: str, ann: Announce) -> str | None:
            f = facts.get(peer)
            if f is None:
                return "not a configured peer"
            return import_reason(index, f, ann.prefix, ann.next_hop, ann.attrs.as_path, ann.attrs.originator_id)

        self._rib.import_check = check
        self._rib.limits = {p.address: p.max_prefixes for p in view.peers if p.max_prefixes is not None}
        before = {p.address: (p.import_rules, p.max_prefixes) for p in old.peers} if old is not None else {}
        for p in view.peers:
            if p.address in before and before[p.address] != (p.import_rules, p.max_prefixes):
                self._rib.reset_limit(p.address)
                peer = self._peers.get(p.address)
                if p.address in self._rib.overflowed and peer is not None and peer.state == "up":
                    self._rib.overflowed.discard(p.address)
                    self._send(refresh_command(p.address, p.afi))
        over = set(self._rib.over_limit)
        self._rib_changed(self._rib.refilter())
        for addr in set(self._rib.over_limit) - over:
            self._check_limit(addr, False)

    def _check_limit(self, addr: str, was_over: bool) -> None:
        limit = self._rib.over_limit.get(addr)
        if limit is None or was_over:
            return
        peer = self._peers.get(addr)
        name = peer.spec.name if peer is not None else addr
        metrics.PREFIX_LIMIT_EXCEEDED.labels(node=self.node, peer=name).inc()
        if peer is not None:
            peer.info = f"Prefix limit {limit} exceeded: routes dropped until the session restarts"
        _log.warning("prefix limit exceeded node=%s peer=%s address=%s limit=%d", self.node, name, addr, limit)

    # -- desired state and diff ------------------------------------------------------------
    def _exported(self, peer: PeerSpec, pfx: str) -> bool:
        """The peer's BGPFilter export rules allow ``pfx`` (no rule matching: they do)."""
        if not peer.export_rules:
            return True
        return filter_verdict(peer.export_rules, ipaddress.ip_network(pfx)) != REJECT

    def _desired(self, peer: PeerSpec) -> dict[str, Advertisement]:
        view = self._view
        assert view is not None
        want: dict[str, Advertisement] = {}
        v6 = peer.afi == "ipv6"
        for pfx, adv in self._reflected.get(peer.address, {}).items():
            want[pfx] = adv
        for pfx, adv in self._own.items():
            if (":" in pfx) != v6:
                continue
            extra = tuple(c for c in view.communities_for(pfx) if c not in adv.communities)
            want[pfx] = replace(adv, communities=adv.communities + extra) if extra else adv
        if peer.export_rules:
            want = {pfx: adv for pfx, adv in want.items() if self._exported(peer, pfx)}
        return want

    def _desired_one(self, peer: PeerSpec, pfx: str) -> Advertisement | None:
        """``_desired(peer).get(pfx)`` without building the whole table (our own route wins, as there)."""
        if not self._exported(peer, pfx):
            return None
        adv = self._own.get(pfx)
        if adv is not None and (":" in pfx) == (peer.afi == "ipv6"):
            assert self._view is not None
            extra = tuple(c for c in self._view.communities_for(pfx) if c not in adv.communities)
            return replace(adv, communities=adv.communities + extra) if extra else adv
        return self._reflected.get(peer.address, {}).get(pfx)

    def _count(self, stat: str, n: int = 1) -> None:
        self.stats[stat] += n
        {"updates_received": metrics.UPDATES_RECEIVED, "commands_sent": metrics.COMMANDS_SENT,
         "command_errors": metrics.COMMAND_ERRORS, "reloads": metrics.RELOADS}[stat].labels(node=self.node).inc(n)

    def _send(self, line: str, items: tuple[tuple[str, str], ...] = ()) -> bool:
        if self._writer is None or self._writer.is_closing():
            return False
        self._pending.append(Command(line, items))
        self._count("commands_sent")
        self._writer.write(line.encode() + b"\n")
        return True

    def _sync(self, *, full: set[str] | None = None, prefixes: set[str] | None = None) -> None:
        """Plan (:func:`bgp.planner.plan`) and send what ExaBGP must change for the desired state.

        ``full`` re-announces everything to those peers; ``prefixes`` limits the diff of the
        other peers to those prefixes (what an update changed); uncertain prefixes are always
        included.
        """
        if self._view is None or self._writer is None:
            return
        wants = []
        for addr, p in self._peers.items():
            if addr not in self._configured:
                continue  # ExaBGP would refuse it; sent in full once it has loaded the neighbor
            unsure = self._unsure.pop(addr, set())
            if prefixes is None or (full is not None and addr in full):
                wants.append(NeighbourWant(addr, self._desired(p.spec), not p.spec.ebgp,
                                           resend=full is not None and addr in full, unsure=unsure))
            else:
                check = prefixes | unsure
                want = {pfx: adv for pfx in check if (adv := self._desired_one(p.spec, pfx)) is not None}
                wants.append(NeighbourWant(addr, want, not p.spec.ebgp, check=check, unsure=unsure))
        out = plan(wants, self._sent)
        apply_sent(self._sent, out.sent)
        for why in out.refused:
            _log.error("advertisement not sent node=%s reason=%s", self.node, why)
        for cmd in out.commands:
            self._send(cmd.line, cmd.items)
        self._notify_if_counts_changed()

    def _mark_unsure(self, items: tuple[tuple[str, str], ...]) -> None:
        for addr, pfx in items:
            if addr in self._peers:
                self._unsure.setdefault(addr, set()).add(pfx)

    def _schedule_retry(self) -> None:
        if self._retry_handle is None:
            self._retry_handle = asyncio.get_running_loop().call_later(RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if self._unsure:
            self._sync(prefixes=set())

    def _notify_if_counts_changed(self) -> None:
        """Prefix counts move without a session event; report them so `node status` is not stale."""
        counts = {addr: (self._rib.received(addr), len(self._sent.get(addr, {}))) for addr in self._peers}
        if counts != self._last_counts:
            self._last_counts = counts
            self._notify_peers()

    def _recompute_reflection(self) -> None:
        view = self._view
        if view is None or not view.cluster_id:
            self._reflected = {}
            return
        self._reflected = reflect(self._rib, view.peers, view.cluster_id)

    def _reflect_changed(self, changed: set[str]) -> None:
        """Recompute the reflected routes of ``changed`` only (an update touches few of many prefixes)."""
        view = self._view
        if view is None or not view.cluster_id:
            self._reflected = {}
            return
        part = reflect(self._rib, view.peers, view.cluster_id, changed)
        for addr, table in part.items():
            mine = self._reflected.setdefault(addr, {})
            for pfx in changed:
                mine.pop(pfx, None)
            mine.update(table)

    def _rib_changed(self, changed: set[str]) -> None:
        if not changed:
            return
        self._reflect_changed(changed)
        self._sync(prefixes=changed)
        moved = False
        for pfx in changed:
            hops = self._rib.best_next_hops(pfx)
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

    def _notify_peers(self) -> None:
        rows = self.peer_status()
        for r in rows:
            metrics.set_peer(self.node, r.name, r.state, r.received, r.advertised, r.stale, r.refused)
        if self.on_peers is not None:
            self.on_peers(rows)

    def _check_converged(self) -> None:
        if self.converged or self._view is None:
            return
        if all(p.eor_seen for p in self._peers.values()):
            self.converged = True
            _log.info("BGP converged: End-of-RIB from every peer node=%s peers=%d", self.node, len(self._peers))
            if self.on_converged is not None:
                self.on_converged()

    # -- bridge connection -----------------------------------------------------------------
    async def _on_bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        # commands in flight on the old connection may or may not have reached ExaBGP
        for cmd in self._pending:
            self._mark_unsure(cmd.items)
        self._pending.clear()
        _log.info("bridge connected node=%s", self.node)
        # whatever ExaBGP holds now, make it exactly the desired set
        self._sync(full=set(self._peers))
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    # asyncio dropped the over-long line from its buffer: the rest of the stream is fine
                    _log.error("skipped a line from ExaBGP longer than %d bytes node=%s", BRIDGE_LINE_LIMIT, self.node)
                    continue
                if not line:
                    break
                self.feed(line.decode("utf-8", errors="replace"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            _log.info("bridge disconnected node=%s", self.node)

    def feed(self, line: str) -> None:
        """Handle one line from ExaBGP (the bridge connection calls this; so can tests)."""
        ev = parse_line(line)
        if ev is None:
            return
        if isinstance(ev, AckEvent):
            cmd = self._pending.popleft() if self._pending else Command("?")
            if not ev.ok:
                self._count("command_errors")
                _log.warning("ExaBGP refused command node=%s command=%r", self.node, cmd.line[:500])
                if cmd.items:
                    # _sent claimed these when the command was written: they are unknown now
                    self._mark_unsure(cmd.items)
                    self._schedule_retry()
            return
        if isinstance(ev, TextEvent):
            _log.debug("ExaBGP text node=%s text=%r", self.node, ev.text)
            return
        peer = self._peers.get(ev.peer)
        if peer is None:
            _log.debug("event for unknown peer node=%s peer=%s", self.node, ev.peer)
            return
        if isinstance(ev, StateEvent):
            self._on_state(peer, ev)
        elif isinstance(ev, OpenEvent):
            peer.gr = ev.graceful_restart
        elif isinstance(ev, UpdateEvent):
            self._count("updates_received")
            was_over = ev.peer in self._rib.over_limit
            self._rib_changed(self._rib.apply(ev))
            self._check_limit(ev.peer, was_over)
        elif isinstance(ev, EorEvent):
            peer.eor = peer.eor_seen = True
            if self._gr.end_of_rib(ev.peer).action == SWEEP or self._rib.stale(ev.peer):
                self._end_restart(ev.peer, "eor")
            self._check_converged()

    def _on_state(self, peer: _Peer, ev: StateEvent) -> None:
        was_up = peer.state == "up"
        peer.state = ev.state
        peer.since = self.clock()
        peer.info = {"up": "Established", "connected": "OpenSent"}.get(ev.state, ev.reason or "Active")
        _log.info("peer state node=%s peer=%s state=%s reason=%s", self.node, ev.peer, ev.state, ev.reason)
        if ev.state == "up":
            peer.eor = False
            self._rib.reset_limit(ev.peer)   # a new session starts counting afresh
            self._rib.apply(ev)
            verdict = self._gr.session_up(ev.peer, _restart_settings(peer.spec), peer.gr)
            if verdict.action == SWEEP:
                self._end_restart(ev.peer, verdict.reason)
            self._arm_gr_timer()
            # established, so ExaBGP has loaded this neighbor (also right after a reload)
            self._configured.add(ev.peer)
            self._sync(full={ev.peer})
            # our table is complete only now: End-of-RIB after it (manual-eor in the config)
            self._send(eor_command(ev.peer, peer.spec.afi))
        elif ev.state == "down" and was_up:
            held = self._gr.holding(ev.peer)
            verdict = self._gr.session_down(ev.peer, _restart_settings(peer.spec), peer.gr, ev.reason)
            if verdict.action == KEEP:
                self._keep_stale(peer, verdict.seconds, ev.reason)
            else:
                if held or self._rib.stale(ev.peer):
                    self._end_restart(ev.peer, "notification")
                # ExaBGP sends no withdraws on down: the peer's routes go now
                self._rib_changed(self._rib.apply(ev))
        elif ev.state == "down" and self._gr.holding(ev.peer):
            peer.info = f"Graceful restart: keeping {len(self._rib.stale(ev.peer))} routes ({ev.reason})"
        self._notify_peers()

    # -- graceful restart ------------------------------------------------------------------
    def _keep_stale(self, peer: _Peer, seconds: float, why: str) -> None:
        """The machine holds ``peer``: mark its routes stale (still forwarding) and wake at the deadline."""
        kept = self._rib.mark_stale(peer.spec.address)
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
        gone = self._rib.sweep_stale(addr)
        metrics.GR_SWEEPS.labels(node=self.node, reason=how).inc()
        metrics.STALE_SWEPT.labels(node=self.node).inc(len(gone))
        _log.info("graceful restart over node=%s peer=%s how=%s swept=%d", self.node, addr, how, len(gone))
        self._rib_changed(gone)
        self._notify_peers()

    # -- process supervision ---------------------------------------------------------------
    def _write_config(self) -> bool:
        """Write ExaBGP's configuration (0600: it holds MD5 passwords); True when its text changed."""
        assert self._view is not None
        text = render_exabgp_config(self._view, [self.python, "-m", "bgp.bridge", "--socket", str(self.socket_path)])
        try:
            if self.config_path.read_text() == text and self.config_path.stat().st_mode & 0o077 == 0:
                return False
        except OSError:
            pass
        write_private(self.config_path, text)
        return True

    def _schedule_reload(self) -> None:
        if self._reload_handle is not None:
            self._reload_handle.cancel()
        self._reload_handle = asyncio.get_running_loop().call_later(self.reload_delay, self._reload)

    def _reload(self) -> None:
        self._reload_handle = None
        pid = self.exabgp_pid
        if pid is None:
            return
        _log.info("reloading ExaBGP node=%s pid=%d", self.node, pid)
        self._count("reloads")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
        # ExaBGP handles the signal on its next loop turn; commands for new neighbors before
        # that are refused, so they wait a moment (and are re-sent in full on "up" anyway).
        asyncio.get_running_loop().call_later(0.5, self._after_reload)

    def _after_reload(self) -> None:
        if self.exabgp_pid is None or self._view is None:
            return
        new = {p.address for p in self._view.peers} - self._configured
        self._configured = {p.address for p in self._view.peers}
        self._sync(full=new)

    async def _supervise(self) -> None:
        delay = self.backoff[0]
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self._view is None or not self._view.enabled:
                continue
            started = time.monotonic()
            await self._spawn()
            assert self._proc is not None
            rc = await self._proc.wait()
            self._process_gone()
            if self._stopping:
                return
            self.restarts += 1
            metrics.SPEAKER_RESTARTS.labels(node=self.node).inc()
            if self._restart_now:
                self._restart_now = False
                delay = self.backoff[0]
            else:
                if time.monotonic() - started > 30:
                    delay = self.backoff[0]
                _log.warning("ExaBGP exited node=%s rc=%s; restarting in %.1fs", self.node, rc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
            self._wake.set()

    async def _spawn(self) -> None:
        assert self._view is not None and self._env is not None
        self._write_config()
        cmd = [self.python, "-m", "bgp.exabgp_run", "server", str(self.config_path)]
        if self.netns:
            cmd = nsenter_cmd(self.netns, cmd)
        env = {**os.environ, **self._env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self._sent = {}
        self._unsure = {}
        self._configured = {p.address for p in self._view.peers}
        _log.info("ExaBGP started node=%s pid=%d netns=%s", self.node, self._proc.pid, self.netns or "-")

    def _process_gone(self) -> None:
        """ExaBGP is gone, and every session with it: keep what graceful-restart peers sent (as stale,
        until they re-send it to the restarted ExaBGP), drop the rest."""
        self._sent = {}
        self._unsure = {}
        self._configured = set()
        now = self.clock()
        changed: set[str] = set()
        for addr, p in self._peers.items():
            was_up = p.state == "up"
            if p.state != "idle":
                p.state, p.since, p.info = "down", now, "ExaBGP restarting"
            verdict = self._gr.own_restart(addr, _restart_settings(p.spec), p.gr, was_up)
            if verdict.action == KEEP:
                self._keep_stale(p, verdict.seconds, verdict.reason)
            elif verdict.action == DROP:
                changed |= self._rib.drop_peer(addr)
        self._rib_changed(changed)
        self._notify_peers()

    def _kill_leftover(self) -> None:
        """An ExaBGP of this run directory that outlived its agent (no PDEATHSIG then) holds the port: end it."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.config_path).encode() not in cmdline or b"exabgp" not in cmdline:
            return  # the pid was reused by something else
        _log.warning("killing a leftover ExaBGP of this node node=%s pid=%d", self.node, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    async def _kill_process(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _restart_settings(spec: PeerSpec) -> PeerRestart:
    return PeerRestart(spec.graceful_restart, float(spec.restart_time), spec.afi)

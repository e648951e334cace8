"""bgp.speaker: ExaBGP as a supervised child of the agent, driven as "set the desired advertisements".

The :class:`Speaker` supervises ExaBGP and holds the bridge socket; everything about routes is
:class:`bgp.routing.Routing` (peers, Adj-RIB-In, import policy, graceful restart, own and
reflected advertisements, planned by :mod:`bgp.planner`).

- Supervision: the configuration file and the process (:mod:`bgp.exabgp_proc`), restarted with
  exponential backoff and jitter when it dies. ``set_view`` rewrites the config and, after a
  debounce, sends SIGUSR1 (ExaBGP 5 reloads, keeping sessions whose neighbor block is unchanged);
  a change of the listening addresses or port (ExaBGP's environment) restarts the process.
- The socket: the bridge helper (``bgp/bridge.py``) connects to it; lines from ExaBGP
  are parsed (:func:`bgp.events.parse_line`) and acks matched in order to the commands written;
  a refused command, or one in flight when the connection drops, makes what it carried
  uncertain (re-sent by the next sync, one scheduled a second later); after the bridge
  (re)connects the full desired table is sent.

Runs on one asyncio loop; not thread-safe. ExaBGP's failures are logged and retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from bgp import exabgp_proc, metrics
from bgp.commands import Advertisement
from bgp.events import AckEvent, TextEvent, parse_line
from bgp.exabgp_config import exabgp_env, render_exabgp_config
from bgp.peer_status import PeerStatus
from bgp.planner import Command, Item
from bgp.rib import Rib
from bgp.routing import LearnedCallback, Routing
from bgp.view import NodeBGPView

_log = logging.getLogger(__name__)

# Longest line accepted from ExaBGP: one UPDATE as JSON. A 4 KiB UPDATE packs up to ~900 IPv4
# prefixes, ~80 bytes of JSON each (measured: FRR's full UPDATEs overflowed asyncio's 64 KiB
# default and dropped the bridge connection). A longer line is skipped and logged, not fatal.
BRIDGE_LINE_LIMIT = 4 * 1024 * 1024


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
        self.python = python
        self.reload_delay = reload_delay
        self.backoff = backoff
        self.socket_path, self.config_path, self.log_path, self.pid_path = (
            self.run_dir / n for n in ("bridge.sock", "exabgp.conf", "exabgp.log", "exabgp.pid"))
        self.restarts = 0
        self._counts = {"commands_sent": 0, "command_errors": 0, "reloads": 0}
        self.routing = Routing(node, self._send, lambda: self._writer is not None, clock=clock, monotonic=monotonic,
                               on_learned=on_learned, on_peers=on_peers, on_converged=on_converged)
        self._view: NodeBGPView | None = None
        self._env: dict[str, str] | None = None
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

    @property
    def rib(self) -> Rib:
        return self.routing.rib

    @property
    def converged(self) -> bool:
        """Every peer of the view has sent End-of-RIB once since start."""
        return self.routing.converged

    @property
    def stats(self) -> dict[str, int]:
        return {"updates_received": self.routing.updates_received, **self._counts}

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        exabgp_proc.kill_leftover(self.pid_path, self.config_path)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_bridge, path=str(self.socket_path),
                                                       limit=BRIDGE_LINE_LIMIT)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name=f"speaker-{self.node}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._reload_handle is not None:
            self._reload_handle.cancel()
        self.routing.stop()
        await exabgp_proc.stop(self._proc)
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
        old, self._view = self._view, view
        if old is not None and replace(old, guard=view.guard, errors=view.errors) == view:
            self.routing.set_guard(view, old)   # only the import defaults' facts changed: no ExaBGP reload
            return
        self.routing.set_view(view, old)
        env = exabgp_env(view)
        config_changed = self._write_config()
        if old is None or env != self._env or self._proc is None:
            if self._proc is not None:
                _log.info("speaker restart: listening settings changed node=%s", self.node)
                self._restart_now = True
                asyncio.get_running_loop().create_task(exabgp_proc.stop(self._proc))
            self._env = env
            self._wake.set()
        elif config_changed:
            self._schedule_reload()
        self.routing.sync()
        self.routing.notify_peers()
        self.routing.check_converged()

    def set_advertisements(self, adverts: Mapping[str, Advertisement | None]) -> None:
        """The complete desired set of our own prefixes (sent to every peer of the prefix's family)."""
        self.routing.set_advertisements(adverts)

    def peer_status(self) -> list[PeerStatus]:
        return self.routing.peer_status()

    def best_routes(self) -> dict[str, list[str]]:
        return self.routing.best_routes()

    def bfd_down(self, address: str, reason: str) -> None:
        """BFD saw the path to ``address`` fail: drop its routes now and reset its BGP session."""
        self.routing.bfd_down(address, reason)

    # -- the bridge socket -----------------------------------------------------------------
    def _count(self, stat: str) -> None:
        self._counts[stat] += 1
        {"commands_sent": metrics.COMMANDS_SENT, "command_errors": metrics.COMMAND_ERRORS,
         "reloads": metrics.RELOADS}[stat].labels(node=self.node).inc()

    def _send(self, line: str, items: tuple[Item, ...] = ()) -> bool:
        if self._writer is None or self._writer.is_closing():
            return False
        self._pending.append(Command(line, items))
        self._count("commands_sent")
        self._writer.write(line.encode() + b"\n")
        return True

    async def _on_bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        # commands in flight on the old connection may or may not have reached ExaBGP
        for cmd in self._pending:
            self.routing.refused(cmd)
        self._pending.clear()
        _log.info("bridge connected node=%s", self.node)
        # whatever ExaBGP holds now, make it exactly the desired set
        self.routing.sync(full=set(self.routing.peers))
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
                self.routing.refused(cmd, retry=True)
        elif isinstance(ev, TextEvent):
            _log.debug("ExaBGP text node=%s text=%r", self.node, ev.text)
        else:
            self.routing.handle(ev)

    # -- process supervision ---------------------------------------------------------------
    def _write_config(self) -> bool:
        """Write ExaBGP's configuration; True when its text changed."""
        assert self._view is not None
        text = render_exabgp_config(self._view, exabgp_proc.bridge_argv(self.python, self.socket_path))
        return exabgp_proc.write_config(self.config_path, text)

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
        self.routing.loaded({p.address for p in self._view.peers})

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
            assert self._env is not None
            self._write_config()
            self._proc = await exabgp_proc.spawn(self.python, self.config_path, self.log_path, self.pid_path,
                                                 self._env, self.netns)
            self.routing.loaded({p.address for p in self._view.peers}, fresh=True)
            _log.info("ExaBGP started node=%s pid=%d netns=%s", self.node, self._proc.pid, self.netns or "-")
            rc = await self._proc.wait()
            self.routing.process_gone()
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

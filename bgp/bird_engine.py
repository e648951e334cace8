"""bgp.bird_engine: ``l3net route-reflector --engine bird``, BIRD 2 supervised by the reflector process.

:class:`BirdEngine` has the Speaker's reflector face (``start``, ``set_view``,
``peer_status``, ``stop``), so ``bgp.cli.run_reflector`` drives either engine the same
way. It renders the view with :func:`bgp.bird_config.render_bird_config`, checks the
text with ``bird -p`` before BIRD sees it, installs it and asks the running BIRD to
``configure`` (BIRD restarts only the protocols whose configuration changed: adding
or removing one client resets no other session). It restarts BIRD, with backoff, when
it dies, and polls ``show protocols all`` for the status record (and ``show bfd sessions``
when a peer has BFD on: BIRD runs those sessions and resets a BGP session whose BFD
session goes down; :mod:`bgp.bird_bfd` turns the rows into status and metrics).

Failure doctrine: a configuration BIRD refuses is logged, counted and not applied (the
last good one keeps running); a peer the renderer refuses is left out alone. Nothing
here exits: an outage of the datastore only means ``set_view`` is not called, and BIRD
keeps reflecting with the last view it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bgp import metrics
from bgp.bfd.peers import kernel_is_direct
from bgp.bfd.speaker import SessionStatus
from bgp.bird_bfd import BirdBfdTracker
from bgp.bird_config import BirdConfig, protocol_name, render_bird_config
from bgp.bird_control import BirdError, ProtocolState, alive, command, parse_bfd_sessions, parse_protocols
from bgp.peer_status import PeerStatus
from bgp.view import NodeBGPView
from l3net import netns as l3netns
from l3net.errors import FieldError

_log = logging.getLogger(__name__)

READY_TIMEOUT = 10.0
MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
# a BIRD that stayed up this long was healthy: the next death starts the backoff from the beginning
HEALTHY_AFTER = 60.0
DETAIL_SPACING = 50.0   # a detailed status poll at most every 50x its own duration (2% of BIRD's time)


@dataclass(frozen=True)
class ConfigCheck:
    ok: bool
    message: str


def check_config(bird: str, path: Path, timeout: float = 30.0) -> ConfigCheck:
    """``bird -p -c PATH``: does BIRD parse it? (blocking)"""
    proc = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True, timeout=timeout)
    return ConfigCheck(proc.returncode == 0, (proc.stderr or proc.stdout).strip())


def _with_counts(p: ProtocolState, detail: ProtocolState | None) -> ProtocolState:
    """A brief protocol line with the route counts of the last detailed poll (none if the session went down)."""
    if detail is None or p.bgp_state != "Established":
        return p
    return replace(p, imported=detail.imported, exported=detail.exported)


def _bgp_state_to_status(p: ProtocolState) -> str:
    if p.bgp_state == "Established":
        return "up"
    if p.bgp_state in ("OpenSent", "OpenConfirm"):
        return "connected"
    if p.state == "down" or p.last_error:
        return "down"
    return "idle"


class BirdEngine:
    """Owns one ``bird`` process, its configuration file, control socket and pid file under ``run_dir``.

    Runs on the reflector's asyncio loop (one supervisor task); blocking calls (``bird -p``,
    the control socket) go to the default executor. ``set_view`` is idempotent: an unchanged
    rendering makes no write and no ``configure``. A BIRD left running by an earlier reflector
    process (same run dir) is adopted, not restarted, so its sessions survive our restart.
    Fails soft: errors are logged and counted, never raised out of the loop.
    """

    def __init__(self, node: str, run_dir: Path, *, netns: str | None = None, bird: str = "bird",
                 poll_interval: float = 2.0, is_direct: Callable[[str], bool] | None = None) -> None:
        self.node = node
        self.run_dir = Path(run_dir)
        self.netns = netns
        self.bird = bird
        self.poll_interval = poll_interval
        self.conf_path = self.run_dir / "bird.conf"
        self.socket_path = self.run_dir / "bird.ctl"
        self.pid_path = self.run_dir / "bird.pid"
        self.log_path = self.run_dir / "bird.log"
        self._view: NodeBGPView | None = None
        self._desired: BirdConfig | None = None
        self._applied: str | None = None     # the text the running BIRD was last configured with
        self._refused: str | None = None     # the last text `bird -p` refused (not retried until it changes)
        self._proc: asyncio.subprocess.Process | None = None
        self._adopted = False                # a BIRD of an earlier reflector process answers on our socket
        self._adopted_pid: int | None = None
        self._had_bird = False
        self._started_at = 0.0
        self._backoff = MIN_BACKOFF
        self._next_start = 0.0
        self._protocols: dict[str, ProtocolState] = {}
        self._detail: dict[str, ProtocolState] = {}   # the last `show protocols all`
        self._next_detail = 0.0
        self._known_peers: set[str] = set()
        # BFD: single hop to a peer the kernel reaches without a gateway, decided once per peer as the agent does
        self._is_direct = is_direct or (lambda addr: kernel_is_direct(addr, netns))
        self._direct: dict[str, bool] = {}
        self._bfd_peers: set[str] = set()
        self._bfd = BirdBfdTracker(node)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.reconfigurations = 0
        self.refused_configs = 0

    # -- the Speaker-like face ---------------------------------------------------------------
    @property
    def view(self) -> NodeBGPView | None:
        return self._view

    @property
    def bird_pid(self) -> int | None:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc.pid
        return self._adopted_pid

    @property
    def bird_protocols(self) -> set[str]:
        """The BGP protocols the running BIRD reported at the last poll."""
        return set(self._protocols)

    @property
    def errors(self) -> tuple[FieldError, ...]:
        """Peers the renderer left out of the running configuration, with the reason."""
        return self._desired.errors if self._desired is not None else ()

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, alive, self.socket_path):
            self._adopted, self._had_bird = True, True
            self._adopted_pid = self._read_pid()
            self._applied = self.conf_path.read_text() if self.conf_path.exists() else None
            _log.info("adopting a running BIRD node=%s pid=%s socket=%s", self.node, self._adopted_pid,
                      self.socket_path)
        self._task = loop.create_task(self._supervise(), name=f"bird-engine-{self.node}")

    def set_view(self, view: NodeBGPView) -> None:
        """Adopt a new peer set: rendered now, applied by the supervisor task (coalesced)."""
        if view == self._view:
            return
        self._view = view
        self._bfd_peers = {a for p in view.peers if p.bfd is not None and (a := _canonical(p.address))}
        if self._render():
            self._wake.set()

    def _render(self) -> bool:
        """Render the current view with the hop decisions known so far; False when it has no identity."""
        assert self._view is not None
        self._direct = {a: d for a, d in self._direct.items() if a in self._bfd_peers}
        try:
            self._desired = render_bird_config(self._view, frozenset(a for a, d in self._direct.items() if d))
        except ValueError as exc:   # no identity: keep running whatever BIRD has
            _log.error("cannot render BIRD configuration, keeping the running one node=%s error=%s", self.node, exc)
            return False
        return True

    async def _resolve_hops(self) -> None:
        """Ask the kernel (``ip route get``, in executor threads) about each new BFD peer, then re-render.

        Runs before every apply, so BIRD never sees a rendering whose hop modes are still unknown (that
        would reset those sessions once they are known); a thousand new peers do not block the loop.
        """
        missing = sorted(self._bfd_peers - set(self._direct))
        if not missing:
            return
        loop = asyncio.get_running_loop()
        found = await asyncio.gather(*(loop.run_in_executor(None, self._is_direct, a) for a in missing))
        self._direct.update(zip(missing, found, strict=True))
        self._render()

    def peer_status(self) -> list[PeerStatus]:
        view = self._view
        if view is None:
            return []
        refused = {e.path.removeprefix("peer "): e.reason for e in self.errors}
        rows = []
        for spec in view.peers:
            name = protocol_name(spec.address, spec.port)
            p = self._protocols.get(name)
            if p is None:
                info = f"refused by l3net: {refused[spec.name]}" if spec.name in refused else "Idle"
                rows.append(PeerStatus(name=spec.name, address=spec.address, peer_type=spec.peer_type,
                                       state="idle", since=0.0, info=info, received=0, advertised=0,
                                       peer_as=spec.peer_as))
                continue
            state = _bgp_state_to_status(p)
            info = p.bgp_state if not p.last_error or state == "up" else f"{p.bgp_state}: {p.last_error}"
            rows.append(PeerStatus(name=spec.name, address=spec.address, peer_type=spec.peer_type, state=state,
                                   since=p.since, info=info, received=p.imported,
                                   advertised=p.exported if state == "up" else 0, peer_as=spec.peer_as))
        return sorted(rows, key=lambda r: r.address)

    def bfd_status(self) -> list[SessionStatus]:
        """The BFD sessions BIRD runs for the peers with BFD on, at the last poll (``bgp.bfd.status`` rows)."""
        return self._bfd.status()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_bird()
        for name in self._known_peers:
            metrics.remove_peer(self.node, name)
        self._bfd.clear()

    # -- supervision -------------------------------------------------------------------------
    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            try:
                if self._desired is not None:
                    await self._resolve_hops()
                    if not await self._running():
                        if loop.time() >= self._next_start:
                            await self._start_bird()
                    else:
                        if self._desired.text not in (self._applied, self._refused):
                            await self._apply(self._desired)
                        await self._poll_status()
            except (OSError, BirdError, subprocess.SubprocessError) as exc:
                # one failed round: logged, retried on the next wake-up; BIRD keeps what it has
                _log.warning("BIRD supervision round failed node=%s error=%s", self.node, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _running(self) -> bool:
        if self._proc is not None:
            if self._proc.returncode is None:
                return True
            self._died(f"exit code {self._proc.returncode}")
            self._proc = None
            return False
        if self._adopted:
            if self._adopted_pid is not None:
                up = _pid_alive(self._adopted_pid)
            else:   # no pid file: the socket is all we know it by
                up = await asyncio.get_running_loop().run_in_executor(None, alive, self.socket_path)
            if up:
                return True
            self._died("the adopted process is gone")
            self._adopted, self._adopted_pid = False, None
        return False

    def _died(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._started_at >= HEALTHY_AFTER:
            self._backoff = MIN_BACKOFF
        self._next_start = loop.time() + self._backoff
        _log.error("BIRD died node=%s reason=%s restart_in=%.1fs log=%s", self.node, why, self._backoff,
                   self.log_path)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self._protocols = {}

    async def _install(self, cfg: BirdConfig) -> bool:
        """Write ``cfg`` as the configuration file if ``bird -p`` accepts it; False (logged) if not."""
        loop = asyncio.get_running_loop()
        candidate = self.conf_path.with_suffix(".conf.new")
        candidate.write_text(cfg.text)
        check = await loop.run_in_executor(None, check_config, self.bird, candidate)
        if not check.ok:
            self._refused = cfg.text
            self.refused_configs += 1
            _log.error("BIRD refused the rendered configuration; keeping the last good one node=%s error=%s",
                       self.node, check.message)
            return False
        os.replace(candidate, self.conf_path)
        return True

    async def _start_bird(self) -> None:
        assert self._desired is not None
        installed = self._desired.text != self._refused and await self._install(self._desired)
        if not installed and not self.conf_path.exists():
            return   # nothing good to start with yet
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = [self.bird, "-f", "-c", str(self.conf_path), "-s", str(self.socket_path), "-P", str(self.pid_path)]
        if self.netns:
            argv = l3netns.nsenter_cmd(self.netns, argv)
        loop = asyncio.get_running_loop()
        with open(self.log_path, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=log,
                                                              stderr=subprocess.STDOUT, start_new_session=True)
        self._started_at = loop.time()
        self._applied = self.conf_path.read_text()
        if self._had_bird:
            self.restarts += 1
            metrics.SPEAKER_RESTARTS.labels(node=self.node).inc()
        self._had_bird = True
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline and self._proc.returncode is None:
            if await loop.run_in_executor(None, alive, self.socket_path, 1.0):
                _log.info("BIRD started node=%s pid=%s peers=%d", self.node, self._proc.pid,
                          len(self._desired.protocols))
                return
            await asyncio.sleep(0.05)
        _log.error("BIRD did not answer on its control socket node=%s pid=%s log=%s", self.node, self._proc.pid,
                   self.log_path)

    async def _apply(self, cfg: BirdConfig) -> None:
        if not await self._install(cfg):
            return
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        reply = await loop.run_in_executor(None, command, self.socket_path, "configure")
        self._applied = cfg.text
        self.reconfigurations += 1
        metrics.RELOADS.labels(node=self.node).inc()
        _log.info("BIRD reconfigured node=%s peers=%d reply=%r seconds=%.3f", self.node, len(cfg.protocols),
                  reply[-1][1] if reply else "", time.monotonic() - t0)

    async def _poll_status(self) -> None:
        """States every poll (``show protocols``: one line per peer); route counts (``show protocols all``:
        about twenty lines per peer, which BIRD renders on the same thread that reflects) only when the last
        detailed poll is DETAIL_SPACING times its own duration ago: with 1,000 peers a detailed poll every
        2 s cost the reflection ~2x in convergence time (bench reflector_scale)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._next_detail:
            reply = await loop.run_in_executor(None, command, self.socket_path, "show protocols all")
            self._detail = parse_protocols(reply)
            self._next_detail = now + max(self.poll_interval, DETAIL_SPACING * (loop.time() - now))
            self._protocols = self._detail
        else:
            reply = await loop.run_in_executor(None, command, self.socket_path, "show protocols")
            brief = parse_protocols(reply)
            self._protocols = {name: _with_counts(p, self._detail.get(name)) for name, p in brief.items()}
        view = self._view
        if view is None:
            return
        names = set()
        for row in self.peer_status():
            names.add(row.name)
            metrics.set_peer(self.node, row.name, row.state, row.received, row.advertised, 0)
        for gone in self._known_peers - names:
            metrics.remove_peer(self.node, gone)
        self._known_peers = names
        await self._poll_bfd()

    async def _poll_bfd(self) -> None:
        """``show bfd sessions`` (one line per session) when a rendered peer has BFD on."""
        wanted = {addr for addr in (self._desired.protocols.values() if self._desired is not None else ())
                  if addr in self._direct}
        sessions = {}
        if wanted and "protocol bfd" in (self._applied or ""):
            try:
                reply = await asyncio.get_running_loop().run_in_executor(None, command, self.socket_path,
                                                                         "show bfd sessions")
            except BirdError as exc:   # the BGP status above stands; the BFD rows keep the last poll's states
                _log.warning("BFD status poll failed node=%s error=%s", self.node, exc)
                return
            sessions = parse_bfd_sessions(reply)
        self._bfd.update(wanted, sessions)

    async def _stop_bird(self) -> None:
        """SIGTERM (BIRD closes its sessions with a Cease), then SIGKILL after 5 s."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        elif self._adopted_pid is not None and _pid_alive(self._adopted_pid):
            os.kill(self._adopted_pid, signal.SIGTERM)
            for _ in range(100):
                if not _pid_alive(self._adopted_pid):
                    break
                await asyncio.sleep(0.05)
            else:
                os.kill(self._adopted_pid, signal.SIGKILL)
        elif self._adopted:   # adopted without a pid file: ask it over its socket
            with contextlib.suppress(BirdError):
                await asyncio.get_running_loop().run_in_executor(None, command, self.socket_path, "down")
        self._proc = None
        self._adopted, self._adopted_pid = False, None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:   # the renderer leaves such a peer out and reports it
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""bgp.bfd.speaker: BFD sessions on real UDP sockets, driven by one asyncio event loop.

RFC 5881 (single hop): control packets to UDP 3784, sent with TTL / hop limit 255, and
accepted only with TTL 255 (a packet from further away cannot forge a session). RFC 5883
(multihop): UDP 4784, sent with TTL 255, accepted with TTL >= ``multihop_min_ttl`` (any, by default). Every
session sends from its own source port in 49152-65535 (RFC 5881 §4).

All packet work runs in the loop's reader callbacks and timer callbacks: no threads.
Sockets are created inside ``netns`` when one is given, so a test or a lab can run a
speaker for a namespace from the root namespace's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bgp.bfd.packet import Diag, PacketError, State, decode, encode
from bgp.bfd.session import Session, SessionConfig, StateChange, Step

_log = logging.getLogger(__name__)

SINGLE_HOP_PORT = 3784
MULTIHOP_PORT = 4784
SOURCE_PORTS = (49152, 65535)
TTL = 255
# RFC 5883 §5 leaves the multihop TTL to configuration, and BIRD 2 sends multihop packets with the
# system default TTL (64, measured), so by default any TTL is accepted; a multihop packet must still
# come from a configured peer address and, once Up, carry the session's discriminator.
DEFAULT_MULTIHOP_MIN_TTL = 1

# Linux values missing from Python 3.11's socket module.
_IP_RECVTTL = 12
_IP_TTL = socket.IP_TTL
_IPV6_RECVHOPLIMIT = socket.IPV6_RECVHOPLIMIT
_IPV6_HOPLIMIT = socket.IPV6_HOPLIMIT
_CMSG_SPACE = socket.CMSG_SPACE(4) * 2


@dataclass(frozen=True, slots=True, order=True)
class PeerKey:
    """Which session: the peer's address and whether it is a multihop (RFC 5883) session."""

    peer: str
    multihop: bool = False

    @staticmethod
    def parse(peer: str, multihop: bool = False) -> PeerKey:
        """Canonical form of ``peer``; ValueError naming the field if it is not an address."""
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError as e:
            raise ValueError(f"peer: {peer!r} is not an IP address") from e
        return PeerKey(str(addr), multihop)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.peer else socket.AF_INET


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """One line of ``l3netctl node status`` and the source of the ``l3net_bfd_*`` gauges."""

    peer: str
    multihop: bool
    state: str
    remote_state: str
    local_diag: str
    local_discr: int
    remote_discr: int
    tx_interval_ms: float
    detection_time_ms: float
    transitions: int
    down_events: int
    since: float  # wall-clock time of the last state change (or of the session's creation)


ChangeCallback = Callable[[PeerKey, StateChange], None]


class _Entry:
    """A session plus what the speaker keeps next to it: its send socket and its timer."""

    __slots__ = ("config", "down_events", "handle", "key", "local", "session", "since", "sock", "transitions")

    def __init__(self, key: PeerKey, session: Session, sock: socket.socket, local: str | None,
                 config: SessionConfig) -> None:
        self.key = key
        self.session = session
        self.sock = sock
        self.local = local
        self.config = config
        self.handle: asyncio.TimerHandle | None = None
        self.transitions = 0
        self.down_events = 0
        self.since = time.time()


class BfdSpeaker:
    """Owns the BFD sockets of one network namespace and every session in it.

    Runs on the asyncio loop that called :meth:`start`; every method must be called from
    that loop. Idempotent: :meth:`add_session` for a known peer reconfigures it. Failure:
    a bad datagram is counted and dropped, a send error is counted and logged, and neither
    stops a session; only failing to bind the BFD ports at :meth:`start` raises (OSError).
    ``on_change`` is called on the loop for every state change of every session.
    """

    def __init__(self, on_change: ChangeCallback | None = None, *, netns: str | None = None,
                 multihop_min_ttl: int = DEFAULT_MULTIHOP_MIN_TTL, rand: Callable[[], float] = random.random,
                 families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> None:
        self._on_change = on_change
        self._netns = netns
        self._multihop_min_ttl = multihop_min_ttl
        self._rand = rand
        self._families = families
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rx: list[tuple[socket.socket, bool]] = []
        self._entries: dict[PeerKey, _Entry] = {}
        self._by_discr: dict[int, _Entry] = {}
        self._rng = random.Random()
        self.dropped: dict[str, int] = {}
        self.send_errors = 0

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self._in_netns():
            for family in self._families:
                for port, multihop in ((SINGLE_HOP_PORT, False), (MULTIHOP_PORT, True)):
                    try:
                        sock = self._rx_socket(family, port)
                    except OSError as e:
                        if family == socket.AF_INET6 and e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                            _log.warning("bfd no ipv6 port=%d error=%s", port, e)
                            continue
                        self._close_rx()
                        raise
                    self._rx.append((sock, multihop))
        for sock, multihop in self._rx:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock, multihop)
        _log.info("bfd speaker started netns=%s sockets=%d", self._netns or "-", len(self._rx))

    async def stop(self, admin_down: bool = True) -> None:
        """Close every session (telling the peers AdminDown when ``admin_down``) and the sockets."""
        for key in list(self._entries):
            self.remove_session(key, admin_down=admin_down)
        self._close_rx()

    # ---- sessions -------------------------------------------------------------------------------------

    def add_session(self, key: PeerKey, config: SessionConfig, local: str | None = None) -> None:
        """Start a session with ``key.peer`` (or change the timers of the running one)."""
        loop = self._require_loop()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.config != config:
                entry.config = config
                entry.session.reconfigure(config, loop.time())
                self._reschedule(entry)
            return
        sock = self._tx_socket(key, local)
        session = Session(self._new_discr(), config, loop.time(), self._rand)
        entry = _Entry(key, session, sock, local, config)
        self._entries[key] = entry
        self._by_discr[session.local_discr] = entry
        _log.info("bfd session added peer=%s multihop=%s discr=%d tx_us=%d rx_us=%d mult=%d", key.peer,
                  key.multihop, session.local_discr, config.desired_min_tx_us, config.required_min_rx_us,
                  config.detect_mult)
        self._reschedule(entry)

    def remove_session(self, key: PeerKey, admin_down: bool = True) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._by_discr.pop(entry.session.local_discr, None)
        if entry.handle is not None:
            entry.handle.cancel()
        if admin_down and self._loop is not None:
            self._send(entry, entry.session.set_admin_down(self._loop.time()), notify=False)
        entry.sock.close()
        _log.info("bfd session removed peer=%s multihop=%s", key.peer, key.multihop)

    def keys(self) -> list[PeerKey]:
        return sorted(self._entries)

    def state(self, key: PeerKey) -> State | None:
        entry = self._entries.get(key)
        return entry.session.state if entry else None

    def session(self, key: PeerKey) -> Session | None:
        """The session object itself (read-only use: tests and status)."""
        entry = self._entries.get(key)
        return entry.session if entry else None

    def status(self) -> list[SessionStatus]:
        out = []
        for key in sorted(self._entries):
            e = self._entries[key]
            s = e.session
            out.append(SessionStatus(
                peer=key.peer, multihop=key.multihop, state=s.state.name.lower(),
                remote_state=s.remote_state.name.lower(), local_diag=s.local_diag.name.lower(),
                local_discr=s.local_discr, remote_discr=s.remote_discr, tx_interval_ms=s.tx_interval_us / 1000,
                detection_time_ms=s.detection_time_us / 1000, transitions=e.transitions,
                down_events=e.down_events, since=e.since))
        return out

    # ---- sockets --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _in_netns(self) -> Iterator[None]:
        if self._netns is None:
            yield
            return
        from l3net.netns import in_netns  # the bgp package reaches l3net only for namespace plumbing

        with in_netns(self._netns):
            yield

    def _rx_socket(self, family: int, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
                sock.bind(("::", port))
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
                sock.bind(("0.0.0.0", port))
        except OSError:
            sock.close()
            raise
        return sock

    def _tx_socket(self, key: PeerKey, local: str | None) -> socket.socket:
        with self._in_netns():
            sock = socket.socket(key.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if key.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_TTL, TTL)
            self._bind_source_port(sock, local or ("::" if key.family == socket.AF_INET6 else "0.0.0.0"))
        except OSError:
            sock.close()
            raise
        return sock

    def _bind_source_port(self, sock: socket.socket, local: str) -> None:
        lo, hi = SOURCE_PORTS
        start = self._rng.randint(lo, hi)
        span = hi - lo + 1
        for i in range(span):
            port = lo + (start - lo + i) % span
            try:
                sock.bind((local, port))
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no free BFD source port in 49152-65535")

    def _close_rx(self) -> None:
        for sock, _ in self._rx:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._rx = []

    def _new_discr(self) -> int:
        while True:
            d = self._rng.randint(1, 0xFFFFFFFF)
            if d not in self._by_discr:
                return d

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("BfdSpeaker.start() has not run")
        return self._loop

    # ---- packet path ----------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _on_readable(self, sock: socket.socket, multihop: bool) -> None:
        # Drain the socket: one wake-up may cover several datagrams.
        for _ in range(64):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(512, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                _log.warning("bfd recv failed error=%s", e)
                return
            self._on_datagram(data, ancdata, addr[0], multihop)

    def _on_datagram(self, data: bytes, ancdata: list[tuple[int, int, bytes]], src: str, multihop: bool) -> None:
        ttl = None
        for level, ctype, cdata in ancdata:
            if (level, ctype) in ((socket.IPPROTO_IP, _IP_TTL), (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT)):
                ttl = struct.unpack("i", cdata[:4])[0]
        if ttl is None:
            self._drop("no_ttl")
            return
        if (ttl != TTL) if not multihop else (ttl < self._multihop_min_ttl):
            self._drop("ttl")
            return
        try:
            pkt = decode(data)
        except PacketError as e:
            self._drop("malformed")
            _log.debug("bfd packet dropped src=%s error=%s", src, e)
            return
        if src.startswith("::ffff:"):
            src = src[7:]
        if pkt.your_discr:
            entry = self._by_discr.get(pkt.your_discr)
            if entry is None or entry.key.peer != src or entry.key.multihop != multihop:
                self._drop("unknown_discr")
                return
        else:
            entry = self._entries.get(PeerKey(src, multihop))
            if entry is None:
                self._drop("unknown_peer")
                return
        loop = self._require_loop()
        self._send(entry, entry.session.receive(pkt, loop.time()))
        self._reschedule(entry)

    def _on_timer(self, entry: _Entry) -> None:
        entry.handle = None
        if self._entries.get(entry.key) is not entry:
            return
        loop = self._require_loop()
        self._send(entry, entry.session.advance(loop.time()))
        self._reschedule(entry)

    def _reschedule(self, entry: _Entry) -> None:
        loop = self._require_loop()
        when = entry.session.next_wakeup()
        if entry.handle is not None:
            # A later wake-up than the pending one costs nothing: the timer fires, finds no work, re-arms.
            if entry.handle.when() <= when:
                return
            entry.handle.cancel()
        entry.handle = loop.call_at(when, self._on_timer, entry)

    def _send(self, entry: _Entry, step: Step, notify: bool = True) -> None:
        port = MULTIHOP_PORT if entry.key.multihop else SINGLE_HOP_PORT
        for pkt in step.send:
            try:
                entry.sock.sendto(encode(pkt), (entry.key.peer, port))
            except OSError as e:
                # Unreachable peers and full buffers are what BFD exists to notice: count, do not stop.
                self.send_errors += 1
                _log.debug("bfd send failed peer=%s error=%s", entry.key.peer, e)
        for change in step.changes:
            entry.transitions += 1
            entry.since = time.time()
            if change.old == State.UP and change.new == State.DOWN:
                entry.down_events += 1
                _log.warning("bfd session down peer=%s multihop=%s diag=%s", entry.key.peer, entry.key.multihop,
                             change.diag.name)
            if notify and self._on_change is not None:
                try:
                    self._on_change(entry.key, change)
                except Exception:
                    # A bug in one consumer must not stop the timers of every session.
                    _log.exception("bfd on_change callback failed peer=%s", entry.key.peer)


__all__ = ["MULTIHOP_PORT", "SINGLE_HOP_PORT", "BfdSpeaker", "Diag", "PeerKey", "SessionConfig", "SessionStatus",
           "State"]

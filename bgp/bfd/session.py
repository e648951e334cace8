"""bgp.bfd.session: one BFD session's state machine (RFC 5880 asynchronous mode). Pure, no I/O.

The caller owns the clock and the sockets: it hands in received packets and the
current time (seconds, monotonic), and gets back the packets to send and the state
changes to act on. :meth:`Session.next_wakeup` says when to call :meth:`Session.advance`
next. Nothing here sleeps, reads a clock or touches a socket, so every timer rule is
tested on a fake clock.

What the RFC leaves open, decided here:
- A state change is announced at once with an extra packet (BIRD and FRR do the same);
  it shortens bring-up from seconds to one round trip and never delays detection.
- While the session is not Up, the transmit interval is at least one second
  (RFC 5880 §6.8.3); reaching Up lowers it to the configured value through a Poll
  Sequence.
- Echo mode and demand mode are not used: the Required Min Echo RX Interval sent is 0
  and the D bit is never set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bgp.bfd.packet import ControlPacket, Diag, State

_log = logging.getLogger(__name__)

SLOW_TX_US = 1_000_000  # RFC 5880 §6.8.3: at least 1 s while the session is not Up
US = 1_000_000


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The timers a session negotiates with, in microseconds."""

    desired_min_tx_us: int = 300_000
    required_min_rx_us: int = 300_000
    detect_mult: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.detect_mult <= 255:
            raise ValueError(f"detect_mult: {self.detect_mult} is outside 1..255")
        for name in ("desired_min_tx_us", "required_min_rx_us"):
            value = getattr(self, name)
            if not 1 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name}: {value} is outside 1..2^32-1 microseconds")


@dataclass(frozen=True, slots=True)
class StateChange:
    """The session moved from ``old`` to ``new``; ``diag`` says why when it left Up."""

    old: State
    new: State
    diag: Diag
    at: float


@dataclass(slots=True)
class Step:
    """What one call produced: packets to send now (in order) and state changes (in order)."""

    send: list[ControlPacket] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)


class Session:
    """Owns one BFD session's variables (RFC 5880 §6.8.1) and its two timers.

    Not thread-safe: one event loop calls it. It never fails on peer input: a packet the
    state machine must ignore is dropped and counted in ``ignored``. ``rand`` returns a
    float in [0, 1) and drives the transmit jitter.
    """

    def __init__(self, local_discr: int, config: SessionConfig, now: float, rand: Callable[[], float]) -> None:
        if not 1 <= local_discr <= 0xFFFFFFFF:
            raise ValueError(f"local_discr: {local_discr} must be in 1..2^32-1")
        self.local_discr = local_discr
        self.config = config
        self._rand = rand
        self.state = State.DOWN
        self.local_diag = Diag.NONE
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_min_rx_us = 1
        self.remote_desired_tx_us = 0
        self.remote_detect_mult = 0
        self.remote_demand = False
        # What we advertise in Desired Min TX, and what our transmit timer actually uses: they
        # differ while a Poll Sequence for an increase is outstanding (RFC 5880 §6.8.3).
        self._adv_tx_us = SLOW_TX_US
        self._eff_tx_us = SLOW_TX_US
        # Required Min RX used for our detection time: the old value while a decrease is polled.
        self._detect_rx_us = config.required_min_rx_us
        self.polling = False
        self._send_final = False
        self._next_tx = now  # the first packet goes out at once
        self._detect_deadline: float | None = None
        self.last_rx: float | None = None
        self.ignored = 0
        self.packets_sent = 0
        self.packets_received = 0

    # ---- derived values -------------------------------------------------------------------------------

    @property
    def tx_interval_us(self) -> int:
        """The negotiated transmit interval: our desired TX, or the peer's minimum RX if slower."""
        return max(self._eff_tx_us, self.remote_min_rx_us)

    @property
    def detection_time_us(self) -> int:
        """How long without a packet before we declare the peer down (§6.8.4, asynchronous mode)."""
        return self.remote_detect_mult * max(self._detect_rx_us, self.remote_desired_tx_us)

    @property
    def detect_deadline(self) -> float | None:
        return self._detect_deadline

    def next_wakeup(self) -> float:
        """The earliest time :meth:`advance` has work to do."""
        if self._detect_deadline is None:
            return self._next_tx
        return min(self._next_tx, self._detect_deadline)

    # ---- inputs ---------------------------------------------------------------------------------------

    def receive(self, pkt: ControlPacket, now: float) -> Step:
        """Process one packet already demultiplexed to this session (RFC 5880 §6.8.6 from "set bfd.RemoteDiscr")."""
        step = Step()
        if pkt.your_discr == 0 and self.state not in (State.DOWN, State.ADMIN_DOWN):
            self.ignored += 1
            return step
        if pkt.your_discr not in (0, self.local_discr):
            self.ignored += 1
            return step
        self.packets_received += 1
        tx_before = self.tx_interval_us
        self.remote_discr = pkt.my_discr
        self.remote_state = pkt.state
        self.remote_demand = pkt.demand
        self.remote_min_rx_us = pkt.required_min_rx_us
        self.remote_desired_tx_us = pkt.desired_min_tx_us
        self.remote_detect_mult = pkt.detect_mult
        if pkt.final and self.polling:
            self._end_poll()
        if self.tx_interval_us < tx_before:
            # The peer now wants packets faster (e.g. its Poll announcing a lower Required Min RX once Up):
            # a timer still set for the old, slower interval would overrun the peer's new detection time.
            self._next_tx = min(self._next_tx, now + self._jittered(self.tx_interval_us))
        self.last_rx = now
        if self.state == State.ADMIN_DOWN:
            return step
        old = self.state
        self._follow_remote(pkt.state, now, step)
        self._arm_detection(now)
        if pkt.poll:
            self._send_final = True
        if self._send_final or self.state != old:
            step.send.append(self._packet(final=self._send_final))
            self._send_final = False
        self.packets_sent += len(step.send)
        return step

    def _follow_remote(self, remote: State, now: float, step: Step) -> None:
        """RFC 5880 §6.8.6: our state given the remote's, once a packet is accepted (not AdminDown)."""
        if remote == State.ADMIN_DOWN:
            if self.state != State.DOWN:
                self._to(State.DOWN, Diag.NEIGHBOR_DOWN, now, step)
        elif self.state == State.DOWN:
            if remote == State.DOWN:
                self._to(State.INIT, Diag.NONE, now, step)
            elif remote == State.INIT:
                self._to(State.UP, Diag.NONE, now, step)
        elif self.state == State.INIT:
            if remote in (State.INIT, State.UP):
                self._to(State.UP, Diag.NONE, now, step)
        elif remote == State.DOWN:  # we are Up
            self._to(State.DOWN, Diag.NEIGHBOR_DOWN, now, step)

    def advance(self, now: float) -> Step:
        """Fire whatever timer is due at ``now``: detection expiry, then the periodic packet."""
        step = Step()
        if self._detect_deadline is not None and now >= self._detect_deadline:
            self._detect_deadline = None
            if self.state in (State.INIT, State.UP):
                self._to(State.DOWN, Diag.DETECTION_TIME_EXPIRED, now, step)
            # §6.8.1: the remote's variables are forgotten when the detection time passes.
            self.remote_discr = 0
            self.remote_state = State.DOWN
            self.remote_min_rx_us = 1
            self.remote_desired_tx_us = 0
            if step.changes:
                self._next_tx = now  # tell the peer at once
        if now >= self._next_tx:
            # §6.8.7: never transmit periodically towards a peer that asked for no packets.
            if self.remote_min_rx_us != 0 and not (self.remote_demand and self.state == State.UP
                                                   and self.remote_state == State.UP and not self.polling):
                step.send.append(self._packet())
            self._schedule_tx(now)
        self.packets_sent += len(step.send)
        return step

    def set_admin_down(self, now: float) -> Step:
        """Take the session administratively down (for example before a planned stop)."""
        step = Step()
        if self.state != State.ADMIN_DOWN:
            self._to(State.ADMIN_DOWN, Diag.ADMIN_DOWN, now, step)
            self._detect_deadline = None
            step.send.append(self._packet())
        self.packets_sent += len(step.send)
        return step

    def set_admin_up(self, now: float) -> Step:
        step = Step()
        if self.state == State.ADMIN_DOWN:
            self._to(State.DOWN, Diag.NONE, now, step)
            self._next_tx = now
        return step

    def reconfigure(self, config: SessionConfig, now: float) -> None:
        """Change the timers; while Up this runs a Poll Sequence (RFC 5880 §6.8.3)."""
        old = self.config
        self.config = config
        if self.state != State.UP:
            self._detect_rx_us = config.required_min_rx_us
            return
        target_tx = config.desired_min_tx_us
        if target_tx != self._adv_tx_us or config.required_min_rx_us != old.required_min_rx_us \
                or config.detect_mult != old.detect_mult:
            self._adv_tx_us = target_tx
            if target_tx < self._eff_tx_us:
                self._eff_tx_us = target_tx
            if config.required_min_rx_us > self._detect_rx_us:
                self._detect_rx_us = config.required_min_rx_us
            self._start_poll(now)

    # ---- internals ------------------------------------------------------------------------------------

    def _to(self, new: State, diag: Diag, now: float, step: Step) -> None:
        old = self.state
        self.state = new
        if new != State.UP or diag != Diag.NONE:
            self.local_diag = diag
        step.changes.append(StateChange(old, new, diag, now))
        _log.info("bfd state discr=%d old=%s new=%s diag=%s", self.local_discr, old.name, new.name, diag.name)
        if new == State.UP:
            # Leave the 1 s bring-up rate for the configured one: a decrease takes effect now, and is
            # announced with a Poll Sequence.
            self._adv_tx_us = self.config.desired_min_tx_us
            self._eff_tx_us = min(self._eff_tx_us, self._adv_tx_us)
            self._detect_rx_us = self.config.required_min_rx_us
            if self._adv_tx_us != SLOW_TX_US:
                self._start_poll(now)
        elif old == State.UP:
            self.polling = False
            self._adv_tx_us = max(self.config.desired_min_tx_us, SLOW_TX_US)
            self._eff_tx_us = self._adv_tx_us
            self._detect_rx_us = self.config.required_min_rx_us

    def _start_poll(self, now: float) -> None:
        self.polling = True
        # The P bit goes out with the next packet: pull it forward if the timer is still on the slow rate.
        self._next_tx = min(self._next_tx, now + self._jittered(self.tx_interval_us))

    def _end_poll(self) -> None:
        self.polling = False
        self._eff_tx_us = self._adv_tx_us
        self._detect_rx_us = self.config.required_min_rx_us

    def _arm_detection(self, now: float) -> None:
        # Armed in Down too: the remote's variables are forgotten when it falls silent (§6.8.1).
        if self.state != State.ADMIN_DOWN and self.detection_time_us > 0:
            self._detect_deadline = now + self.detection_time_us / US
        else:
            self._detect_deadline = None

    def _jittered(self, interval_us: int) -> float:
        # §6.8.7: 75-100 % of the interval, or 75-90 % with a detect multiplier of 1.
        span = 0.15 if self.config.detect_mult == 1 else 0.25
        return interval_us / US * (1.0 - span * self._rand())

    def _schedule_tx(self, now: float) -> None:
        self._next_tx = now + self._jittered(self.tx_interval_us)

    def _packet(self, *, final: bool = False) -> ControlPacket:
        adv_tx = self._adv_tx_us if self.state == State.UP else max(self._adv_tx_us, SLOW_TX_US)
        return ControlPacket(state=self.state, my_discr=self.local_discr, your_discr=self.remote_discr,
                             detect_mult=self.config.detect_mult, desired_min_tx_us=adv_tx,
                             required_min_rx_us=self.config.required_min_rx_us, diag=self.local_diag,
                             poll=self.polling and not final, final=final)

"""bgp.bfd.session: the RFC 5880 state machine and its timers, on a fake clock.

Two sessions are wired back to back through a simulated link (one-way delay, can be cut),
and an event-driven loop advances the clock from one wake-up to the next, the way the
asyncio speaker does.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest

from bgp.bfd.packet import ControlPacket, Diag, State, decode, encode
from bgp.bfd.session import SLOW_TX_US, Session, SessionConfig, StateChange, Step

pytestmark = pytest.mark.unit

CFG = SessionConfig(300_000, 300_000, 3)


class Sim:
    """Two sessions, a link with a delay, and a clock that jumps from event to event."""

    def __init__(self, a_cfg: SessionConfig = CFG, b_cfg: SessionConfig = CFG, delay: float = 0.001,
                 rand: Callable[[], float] = lambda: 0.5) -> None:
        self.now = 0.0
        self.delay = delay
        self.s = {"a": Session(0x0A, a_cfg, 0.0, rand), "b": Session(0x0B, b_cfg, 0.0, rand)}
        self.up = {"a": True, "b": True}  # whether packets *from* this side get through
        self.changes: dict[str, list[StateChange]] = {"a": [], "b": []}
        self.sent: dict[str, list[tuple[float, ControlPacket]]] = {"a": [], "b": []}
        self._wire: list[tuple[float, int, str, bytes]] = []
        self._seq = itertools.count()

    def _emit(self, side: str, step: Step) -> None:
        self.changes[side].extend(step.changes)
        other = "b" if side == "a" else "a"
        for p in step.send:
            self.sent[side].append((self.now, p))
            if self.up[side]:
                heapq.heappush(self._wire, (self.now + self.delay, next(self._seq), other, encode(p)))

    def run_until(self, t_end: float) -> None:
        while True:
            t_wire = self._wire[0][0] if self._wire else float("inf")
            side = min(self.s, key=lambda k: self.s[k].next_wakeup())
            t_timer = self.s[side].next_wakeup()
            t = min(t_wire, t_timer)
            if t > t_end:
                self.now = t_end
                return
            self.now = t
            if t_wire <= t_timer:
                _, _, dst, data = heapq.heappop(self._wire)
                self._emit(dst, self.s[dst].receive(decode(data), self.now))
            else:
                self._emit(side, self.s[side].advance(self.now))


def test_both_sides_come_up_and_settle_on_the_configured_rate() -> None:
    sim = Sim()
    sim.run_until(0.1)
    assert sim.s["a"].state == State.UP and sim.s["b"].state == State.UP, "three packets bring a session up"
    assert [c.new for c in sim.changes["a"]] in ([State.INIT, State.UP], [State.UP])
    sim.run_until(3.0)
    for side in "ab":
        s = sim.s[side]
        assert not s.polling, "the Poll Sequence for the faster rate was answered with Final"
        assert s.tx_interval_us == 300_000
        assert s.detection_time_us == 900_000
        gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(sim.sent[side][-5:])]
        assert all(0.225 - 1e-9 <= g <= 0.3 + 1e-9 for g in gaps), gaps
    assert sim.s["a"].remote_discr == 0x0B and sim.s["b"].remote_discr == 0x0A


def test_slow_rate_until_up() -> None:
    sim = Sim()
    sim.up["b"] = False  # a hears nothing, so it stays Down
    sim.run_until(5.0)
    assert sim.s["a"].state == State.DOWN
    pkts = sim.sent["a"]
    assert all(p.desired_min_tx_us >= SLOW_TX_US for _, p in pkts)
    gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(pkts)]
    assert gaps and all(0.75 - 1e-9 <= g <= 1.0 + 1e-9 for g in gaps), gaps


def test_detection_after_peer_goes_silent() -> None:
    sim = Sim()
    sim.run_until(3.0)
    sim.up["b"] = False
    last_rx = sim.s["a"].last_rx
    assert last_rx is not None
    sim.run_until(5.0)
    down = [c for c in sim.changes["a"] if c.new == State.DOWN]
    assert len(down) == 1
    assert down[0].diag == Diag.DETECTION_TIME_EXPIRED
    assert down[0].at - last_rx == pytest.approx(0.9), "detection time = remote mult x agreed interval"
    assert sim.s["a"].remote_discr == 0, "the remote discriminator is forgotten on detection"
    assert sim.s["a"].tx_interval_us >= SLOW_TX_US, "back to the slow rate when not Up"
    # a's Down now carries Your Discriminator 0, which b (Up) must ignore (§6.8.6): b detects on its own.
    assert sim.sent["a"][-1][1].your_discr == 0
    b_down = [c for c in sim.changes["b"] if c.new == State.DOWN]
    assert b_down and b_down[0].diag == Diag.DETECTION_TIME_EXPIRED
    assert sim.s["b"].ignored >= 1


def test_comes_back_after_link_returns() -> None:
    sim = Sim()
    sim.run_until(3.0)
    sim.up["a"] = sim.up["b"] = False
    sim.run_until(5.0)
    assert sim.s["a"].state == State.DOWN and sim.s["b"].state == State.DOWN
    sim.up["a"] = sim.up["b"] = True
    sim.run_until(8.0)
    assert sim.s["a"].state == State.UP and sim.s["b"].state == State.UP


def test_detection_uses_the_slower_of_our_rx_and_their_tx() -> None:
    sim = Sim(a_cfg=SessionConfig(300_000, 300_000, 3), b_cfg=SessionConfig(500_000, 200_000, 4))
    sim.run_until(4.0)
    a, b = sim.s["a"], sim.s["b"]
    assert a.detection_time_us == 4 * max(300_000, 500_000)
    assert b.detection_time_us == 3 * max(200_000, 300_000)
    assert a.tx_interval_us == 300_000 and b.tx_interval_us == 500_000


def test_jitter_bounds() -> None:
    for r, expect in ((0.0, 0.3), (0.999999, 0.225)):
        s = Session(1, CFG, 0.0, lambda r=r: r)
        s.remote_min_rx_us = 300_000
        s._eff_tx_us = 300_000
        s.advance(0.0)
        assert s.next_wakeup() == pytest.approx(expect, abs=1e-6)
    one = Session(1, SessionConfig(300_000, 300_000, 1), 0.0, lambda: 0.999999)
    one.remote_min_rx_us = 300_000
    one._eff_tx_us = 300_000
    one.advance(0.0)
    assert one.next_wakeup() == pytest.approx(0.255, abs=1e-6), "multiplier 1: at most 90 %"


def _pkt(state: State, your: int = 0, **kw: object) -> ControlPacket:
    return ControlPacket(state, my_discr=99, your_discr=your, detect_mult=3, desired_min_tx_us=300_000,
                         required_min_rx_us=300_000, **kw)  # type: ignore[arg-type]


def _up_session() -> Session:
    s = Session(5, CFG, 0.0, lambda: 0.0)
    s.receive(_pkt(State.DOWN), 0.0)
    s.receive(_pkt(State.UP, your=5), 0.01)
    assert s.state == State.UP
    return s


def test_admin_down_from_peer_is_neighbor_down() -> None:
    s = _up_session()
    step = s.receive(_pkt(State.ADMIN_DOWN, your=5), 0.1)
    assert s.state == State.DOWN and s.local_diag == Diag.NEIGHBOR_DOWN
    assert step.changes == [StateChange(State.UP, State.DOWN, Diag.NEIGHBOR_DOWN, 0.1)]


def test_packets_for_another_session_or_without_discr_when_up_are_ignored() -> None:
    s = _up_session()
    assert s.receive(_pkt(State.DOWN, your=0), 0.1).changes == []
    assert s.receive(_pkt(State.DOWN, your=6), 0.1).changes == []
    assert s.state == State.UP and s.ignored == 2


def test_poll_gets_an_immediate_final() -> None:
    s = _up_session()
    s.receive(_pkt(State.UP, your=5, final=True), 0.02)  # close our own poll
    step = s.receive(_pkt(State.UP, your=5, poll=True), 0.1)
    assert len(step.send) == 1 and step.send[0].final and not step.send[0].poll


def test_increasing_tx_while_up_waits_for_final() -> None:
    s = _up_session()
    s.receive(_pkt(State.UP, your=5, final=True), 0.02)
    assert s.tx_interval_us == 300_000
    s.reconfigure(SessionConfig(1_000_000, 300_000, 3), 0.1)
    assert s.polling
    assert s.tx_interval_us == 300_000, "an increase waits for the Poll Sequence to end"
    step = s.advance(s.next_wakeup())
    assert step.send and step.send[0].poll and step.send[0].desired_min_tx_us == 1_000_000
    s.receive(_pkt(State.UP, your=5, final=True), 0.5)
    assert not s.polling and s.tx_interval_us == 1_000_000


def test_decreasing_rx_keeps_old_detection_until_final() -> None:
    s = _up_session()
    s.receive(_pkt(State.UP, your=5, final=True), 0.02)
    s.reconfigure(SessionConfig(300_000, 100_000, 3), 0.1)
    assert s.detection_time_us == 900_000
    s.receive(_pkt(State.UP, your=5, final=True), 0.2)
    assert s.detection_time_us == 3 * 300_000, "peer still sends every 300 ms, so max(100, 300) ms x 3"


def test_admin_down_is_sent_and_sticks() -> None:
    s = _up_session()
    step = s.set_admin_down(0.1)
    assert step.send[0].state == State.ADMIN_DOWN and step.send[0].diag == Diag.ADMIN_DOWN
    assert s.receive(_pkt(State.UP, your=5), 0.2).changes == []
    assert s.state == State.ADMIN_DOWN
    s.set_admin_up(0.3)
    assert s.state == State.DOWN


def test_no_periodic_packets_when_peer_asks_for_none() -> None:
    s = Session(1, CFG, 0.0, lambda: 0.0)
    s.receive(ControlPacket(State.DOWN, 99, 0, 3, 300_000, 0), 0.0)
    assert s.state == State.INIT
    assert s.advance(0.5).send == [], "Required Min RX 0 means: send nothing"


def test_config_validation_names_fields() -> None:
    with pytest.raises(ValueError, match=r"^detect_mult"):
        SessionConfig(300_000, 300_000, 0)
    with pytest.raises(ValueError, match=r"^required_min_rx_us"):
        SessionConfig(300_000, 0, 3)
    with pytest.raises(ValueError, match=r"^local_discr"):
        Session(0, CFG, 0.0, lambda: 0.0)


def test_a_faster_rate_requested_by_the_peer_pulls_the_transmit_timer_forward() -> None:
    """FRR advertises Required Min RX 1 s until Up, then polls with 300 ms: our next packet must not wait
    for the old 1 s timer, or the peer's new 900 ms detection time expires (seen against bfdd under load)."""
    s = Session(5, CFG, 0.0, lambda: 0.0)
    slow = {"desired_min_tx_us": 1_000_000, "required_min_rx_us": 1_000_000}
    s.receive(ControlPacket(State.INIT, 99, 0, 3, **slow), 0.0)  # type: ignore[arg-type]
    assert s.state == State.UP
    s.advance(0.0)
    assert s.tx_interval_us == 1_000_000 and s.next_wakeup() == pytest.approx(1.0)
    step = s.receive(ControlPacket(State.UP, 99, 5, 3, 300_000, 300_000, poll=True), 0.1)
    assert step.send and step.send[0].final
    assert s.tx_interval_us == 300_000
    assert s.next_wakeup() <= 0.1 + 0.3, "next periodic packet within the new interval"

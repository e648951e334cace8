"""BFD soak: 30 sessions at 300 ms x 3 between l3net's speaker and FRR's bfdd for 10 minutes, with both cores
busy with CPU burners at normal priority. Zero false down events on either side (``make soak``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.bfd.packet import State
from bgp.bfd.session import SessionConfig
from l3net import netns
from tests.integration.bfd_rig import FrrBfdd, L3netBfd
from tests.netns_fixtures import NetnsFactory
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.needs_root, pytest.mark.soak]

SESSIONS = 30
SOAK_S = float(os.environ.get("L3NET_BFD_SOAK_SECONDS", "600"))
# FRR and l3net both key a single-hop session by the remote address: one address pair per session.
OURS = [f"10.82.0.{1 + i}" for i in range(SESSIONS)]
PEERS = [f"10.82.0.{101 + i}" for i in range(SESSIONS)]
CFG = SessionConfig(300_000, 300_000, 3)
BURNER = "while True: pass"


def test_thirty_sessions_ten_minutes_loaded_no_false_down(netns_factory: NetnsFactory, tmp_path: Path,
                                                          record_property: Callable[[str, object], None]) -> None:
    a, b = netns_factory("bsa"), netns_factory("bsb")
    netns_factory.veth(a, "eth0", b, "eth0")
    for ours, theirs in zip(OURS, PEERS, strict=True):
        netns.run(a, ["ip", "addr", "add", f"{ours}/24", "dev", "eth0"])
        netns.run(b, ["ip", "addr", "add", f"{theirs}/24", "dev", "eth0"])
    frr = FrrBfdd(b, tmp_path / "frr", netns_factory.pids, PEERS[0], [], pairs=list(zip(OURS, PEERS, strict=True)))
    sp = L3netBfd(a)
    burners: list[subprocess.Popen[bytes]] = []
    try:
        frr.start()
        keys = [sp.add(theirs, CFG, local=ours) for ours, theirs in zip(OURS, PEERS, strict=True)]
        wait_for(lambda: all(sp.state(k) == State.UP for k in keys) and frr.states().count("up") == SESSIONS,
                       60, "all 30 sessions Up on both sides")
        time.sleep(2)
        for _ in range(os.cpu_count() or 2):
            burners.append(subprocess.Popen([sys.executable, "-c", BURNER]))
            netns_factory.pids.append(burners[-1].pid)
        n_changes = len(sp.changes)
        frr_downs = frr.down_count()
        cpu0 = sp.do(time.thread_time)
        t0 = time.monotonic()
        while time.monotonic() - t0 < SOAK_S:
            time.sleep(5)
            assert all(b.poll() is None for b in burners), "a CPU burner died"
        elapsed = time.monotonic() - t0
        cpu = sp.do(time.thread_time) - cpu0
        false_l3net = [r for r in sp.changes[n_changes:] if r.change.new != State.UP]
        false_frr = frr.down_count() - frr_downs
        dropped = sp.do(lambda: dict(sp.speaker.dropped))
        record_property("bfd_soak_seconds", round(elapsed, 1))
        record_property("bfd_soak_false_downs_l3net", len(false_l3net))
        record_property("bfd_soak_false_downs_frr", false_frr)
        record_property("bfd_soak_l3net_cpu_pct_per_session", round(100 * cpu / elapsed / SESSIONS, 4))
        print(f"\nMEASURED bfd soak: {SESSIONS} sessions, {elapsed:.0f} s, {len(burners)} burners; false downs "
              f"l3net={len(false_l3net)} frr={false_frr}; l3net loop CPU {100 * cpu / elapsed:.2f} % of a core "
              f"({100 * cpu / elapsed / SESSIONS:.3f} % per session); dropped={dropped}", file=sys.stderr)
        assert false_l3net == [], [(r.key.peer, r.change) for r in false_l3net]
        assert false_frr == 0
        assert frr.states().count("up") == SESSIONS
    finally:
        for bp in burners:
            bp.kill()
            bp.wait(10)
        sp.close()
        frr.stop()

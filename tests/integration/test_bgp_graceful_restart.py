"""Graceful restart (RFC 4724) with real ExaBGP and BIRD: an agent restart keeps its routes on the peers.

"Agent restart" here is what a SIGKILL of the agent does to BGP: its ExaBGP dies at
once (no NOTIFICATION, the kernel closes the TCP session), and a new speaker starts
with an empty RIB and possibly a different set of prefixes. The peer's kernel is
watched with ``ip monitor route`` the whole time: the restarting node's prefix is
never deleted, and the prefix it no longer announces is deleted after its End-of-RIB
(or when the restart time expires if it never comes back). A ping across the
restart shows that forwarding never stopped. Figures go to the test report.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp import metrics
from l3net.model.resource import Resource
from tests.integration.bgp_fabric import (
    ADDR,
    HOLD,
    Fabric,
    Nodes,
    agent_crash,
    agent_start,
    bird,
    block,
    fabric,
    node_res,
    pod_ip,
    report,
)
from tests.route_monitor import RouteMonitor, deleted
from tests.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]

__all__ = ["fabric"]  # the module-scoped fixture of tests.integration.bgp_fabric

# restartTime in these tests (Calico's default is 120 s). A restarted speaker (a new ExaBGP process, a new
# session, End-of-RIB) must get back well within it even on a loaded 2-core machine, or the timer sweeps
# the routes the test says are kept.
RESTART = 12
EXTRA = "10.244.101.0/26"
PAIR = ("n1", "n2")


def sweeps(node: str, how: str) -> float:
    return metrics.GR_SWEEPS.labels(node=node, reason=how)._value.get()


def test_mesh_peer_keeps_routes_through_agent_restart_and_sweeps_on_eor(fabric: Fabric, tmp_path: Path,
                                                                         record_property) -> None:
    nodes = [node_res(n) for n in PAIR]
    cfgs = [Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "restartTime": f"{RESTART}s"})]
    args = (nodes, cfgs, [])

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        mon: RouteMonitor | None = None
        try:
            await ns.start(PAIR, *args)
            ns.sp["n1"].set_advertisements({block("n1"): None, EXTRA: None})
            await wait_for_async(lambda: set(fabric.kernel_routes("n2")) == {block("n1"), EXTRA}
                           and block("n2") in fabric.kernel_routes("n1"), 20, "routes both ways")
            assert all(p.graceful_restart for p in ns.sp["n2"].view.peers)  # type: ignore[union-attr]
            eor_before = sweeps("n2", "eor")
            mon = RouteMonitor(fabric.ns["n2"], fabric.factory)
            ping = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", fabric.ns["n2"], "ping", "-n", "-q", "-c", "100", "-i", "0.05",
                "-I", pod_ip("n2"), pod_ip("n1"), stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(0.3)

            t0 = time.monotonic()
            await agent_crash(ns, "n1")
            await wait_for_async(lambda: ns.sp["n2"].peer_status()[0].stale == 2, 15, "n2 marks n1's routes stale")
            assert set(fabric.kernel_routes("n2")) == {block("n1"), EXTRA}, "kept in the kernel"
            t1 = time.monotonic()
            await agent_start(ns, "n1", args, [block("n1")])          # EXTRA is gone from the new agent
            await wait_for_async(lambda: EXTRA not in fabric.kernel_routes("n2"), RESTART + 5, "EXTRA swept after EOR")
            report(record_property, "gr_restart_to_stale_swept", time.monotonic() - t1)
            report(record_property, "gr_kill_to_stale_swept", time.monotonic() - t0)
            assert sweeps("n2", "eor") == eor_before + 1, "swept on End-of-RIB, not by the timer"
            out, _ = await ping.communicate()
            assert ping.returncode == 0 and " 0% packet loss" in out.decode(), out.decode()
            lines = mon.stop()
            mon = None
            assert deleted(lines, block("n1")) == [], f"n1's block was deleted on n2: {lines}"
            assert len(deleted(lines, EXTRA)) == 1, lines
            record_property("gr_route_deletions_of_kept_prefix", 0)
            assert fabric.kernel_routes("n2") == {block("n1"): [ADDR["n1"]]}
            row = ns.sp["n2"].peer_status()[0]
            assert row.state == "up" and row.stale == 0 and row.received == 1
            # the restarted n1 learned n2's block again (its stale copy was the kernel's, kept by the route driver)
            await wait_for_async(lambda: ns.sp["n1"].best_routes() == {block("n2"): [ADDR["n2"]]}, 10, "n1 relearns")
            assert ns.sp["n1"].stats["command_errors"] == 0, "the EOR command was accepted"

            # n1 dies for good: n2 keeps its routes for the restart time, then sweeps them. Timed from when n2
            # has noticed (its timer starts then), so a slow machine only makes the kept period look longer.
            mon = RouteMonitor(fabric.ns["n2"], fabric.factory)
            timer_before = sweeps("n2", "timer")
            t0 = time.monotonic()
            await agent_crash(ns, "n1")
            await wait_for_async(lambda: ns.sp["n2"].peer_status()[0].stale == 1, 15, "n2 marks n1's block stale")
            noticed = time.monotonic()
            await wait_for_async(lambda: block("n1") not in fabric.kernel_routes("n2"), RESTART + 10,
                           "swept when the time expired")
            kept = time.monotonic() - noticed
            report(record_property, "gr_kill_to_timer_sweep", time.monotonic() - t0)
            assert kept >= RESTART - 2, f"swept after {kept:.1f}s, before the {RESTART}s restart time"
            assert sweeps("n2", "timer") == timer_before + 1
            assert len(deleted(mon.stop(), block("n1"))) == 1
            mon = None
        finally:
            if mon is not None:
                mon.stop()
            await ns.stop()

    asyncio.run(scenario())


BIRD_GR_CONF = """
router id {rr};
log stderr all;
protocol device {{ }}
template bgp rrc {{
  local {rr} as 64512;
  rr client;
  rr cluster id {rr};
  passive on;
  hold time {hold};
  graceful restart on;
  graceful restart time {restart};
  ipv4 {{ import all; export where source = RTS_BGP; }};
}}
{clients}
"""


@pytest.fixture
def bird_gr(fabric: Fabric, tmp_path: Path) -> Iterator[Path]:
    with bird(fabric, tmp_path / "bird", PAIR, BIRD_GR_CONF, restart=RESTART) as sock:
        yield sock


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird2")
def test_bird_reflector_retains_routes_through_agent_restart(fabric: Fabric, tmp_path: Path, bird_gr: Path,
                                                             record_property) -> None:
    nodes = [node_res(n) for n in PAIR]
    cfgs = [Resource("BGPConfiguration", "default", {"holdTime": f"{HOLD}s", "restartTime": f"{RESTART}s",
                                                     "nodeToNodeMeshEnabled": False})]
    peers = [Resource("BGPPeer", "bird-rr", {"peerIP": ADDR["bird"], "asNumber": 64512})]
    args = (nodes, cfgs, peers)

    def birdc(*cmd: str) -> str:
        return subprocess.run(["birdc", "-s", str(bird_gr), *cmd], capture_output=True, text=True, timeout=10).stdout

    async def scenario() -> None:
        ns = Nodes(fabric, tmp_path)
        mon: RouteMonitor | None = None
        try:
            await ns.start(PAIR, *args)
            ns.sp["n1"].set_advertisements({block("n1"): None, EXTRA: None})
            await wait_for_async(lambda: set(fabric.kernel_routes("n2")) == {block("n1"), EXTRA}, 20,
                           "n1's routes on n2 via BIRD")
            mon = RouteMonitor(fabric.ns["n2"], fabric.factory)
            t0 = time.monotonic()
            await agent_crash(ns, "n1")
            await wait_for_async(lambda: "Established" not in birdc("show", "protocols", "n1"), 15,
                           "BIRD sees n1's session drop")
            await asyncio.sleep(0.5)
            assert set(fabric.kernel_routes("n2")) == {block("n1"), EXTRA}, "n2 still has them via BIRD"
            t1 = time.monotonic()
            await agent_start(ns, "n1", args, [block("n1")])
            await wait_for_async(lambda: EXTRA not in fabric.kernel_routes("n2"), RESTART + 5,
                                 "BIRD sweeps EXTRA after EOR")
            report(record_property, "gr_bird_restart_to_stale_swept", time.monotonic() - t1)
            report(record_property, "gr_bird_kill_to_stale_swept", time.monotonic() - t0)
            lines = mon.stop()
            mon = None
            assert deleted(lines, block("n1")) == [], f"n1's block was deleted on n2: {lines}"
            assert len(deleted(lines, EXTRA)) == 1, lines
            assert fabric.kernel_routes("n2") == {block("n1"): [ADDR["n1"]]}
            assert fabric.ping("n2", "n1").returncode == 0
        finally:
            if mon is not None:
                mon.stop()
            await ns.stop()

    asyncio.run(scenario())

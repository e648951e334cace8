"""bench.bgpsim against real reflectors: a few simulated clients through BIRD 2 and through ``l3net route-reflector``
with either engine.

Real namespaces, a real private etcd, real BIRD, the real l3net reflector with its ExaBGP
(through ``bgp.exabgp_run``). Every client must end up with every other client's prefixes,
each checked by the simulator (next hop, ORIGINATOR_ID, CLUSTER_LIST with the cluster ID,
LOCAL_PREF, never its own prefixes back, no withdrawal, no session drop). No timing is asserted.
"""

from __future__ import annotations

import shutil

import pytest

from bench import reflector_scale as rs
from bench.framework import Workspace

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

CLIENTS = 4
PREFIXES = 8
CHANGES = 3


@pytest.fixture(scope="module")
def rig():
    if shutil.which("bird") is None or shutil.which("etcd") is None:
        pytest.skip("needs bird and etcd")
    ws = Workspace()
    try:
        yield rs.Rig(ws, CLIENTS)
    finally:
        ws.close()


@pytest.mark.parametrize("variant", rs.VARIANTS)
def test_every_simulated_client_gets_every_other_clients_routes(rig: rs.Rig, variant: str) -> None:
    m = rs.measure(rig, variant, CLIENTS, PREFIXES, timeout=60, changes=CHANGES)
    assert m.converge_s > 0 and m.rss_mib > 0 and m.setup_s > 0
    st = rs.read_status(sorted(rig.ws.dirs[-1].glob("status*")))
    assert len(st.done) == CLIENTS and not st.failures and not st.downs
    # each new block was announced once and reached every other client, nobody else
    assert len(m.change_s) == CHANGES and all(t > 0 for t in m.change_s)
    assert sorted(st.sent) == list(range(CHANGES))
    assert all(set(st.extra[k]) == {rs.client_ip(i) for i in range(1, CLIENTS)} for k in range(CHANGES))


@pytest.mark.parametrize("variant", sorted(rs.ENGINES))
def test_failover_drill_kills_one_reflector_and_the_other_keeps_every_route(rig: rs.Rig, variant: str) -> None:
    f = rs.measure_failover(rig, variant, CLIENTS, PREFIXES, timeout=60, watch_s=3.0)
    # the drill happened: the reflectors were peered, every session to the killed one went down
    assert f.reflectors_peered and f.killed_down == CLIENTS and 0 <= f.killed_down_s < 3.0
    # and the survivor's clients lost nothing
    assert (f.survivor_full, f.survivor_drops, f.survivor_withdrawn, f.survivor_wrong) == (CLIENTS, 0, 0, 0)

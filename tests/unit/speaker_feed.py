"""A Speaker without ExaBGP, fed the JSON lines ExaBGP prints, for the bgp unit tests.

``FROM_PEER`` gives the lines ExaBGP 5.0.15 prints about the session from ``PEER`` (node n1) to ``ME``
(node n2), built by :mod:`tests.fakes.exabgp`. ``speaker`` builds the Speaker of n2 and records what it
learns and when it converges; ``session`` brings the session up with the graceful restart capability.
"""

from __future__ import annotations

from pathlib import Path

from bgp.speaker import Speaker
from bgp.view import build_node_view
from l3net.model.resource import Resource
from tests.fakes import exabgp

A, B = "10.244.1.0/26", "10.244.1.64/26"
ME, PEER = "10.0.0.2", "10.0.0.1"
FROM_PEER = exabgp.Neighbor(local=ME, peer=PEER, local_as=64512, peer_as=64512)

# The peer has restarted (R bit) and kept forwarding ipv4 unicast (F bit), restart time 30 s.
GR_CAP = {**exabgp.graceful_restart(30, restart_state=True, forwarding=["ipv4/unicast"]),
          **exabgp.multiprotocol("ipv4/unicast")}
HOLD_TIME = 6

NODES = [Resource("Node", "n1", {"bgp": {"ipv4Address": f"{PEER}/24"}}),
         Resource("Node", "n2", {"bgp": {"ipv4Address": f"{ME}/24"}})]


def speaker(tmp_path: Path, **cfg: object) -> tuple[Speaker, list[dict[str, list[str]]], list[bool]]:
    learned: list[dict[str, list[str]]] = []
    converged: list[bool] = []
    sp = Speaker("n2", tmp_path, on_learned=learned.append, on_converged=lambda: converged.append(True))
    tmp_path.mkdir(parents=True, exist_ok=True)
    sp.set_view(build_node_view("n2", NODES, [Resource("BGPConfiguration", "default", dict(cfg))], []))
    return sp, learned, converged


def session(sp: Speaker, caps: dict[str, object] = GR_CAP) -> None:
    sp.feed(FROM_PEER.connected())
    sp.feed(FROM_PEER.open(caps, hold_time=HOLD_TIME))
    sp.feed(FROM_PEER.up())

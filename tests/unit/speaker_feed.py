"""A Speaker without ExaBGP, fed the JSON lines ExaBGP prints, for the bgp unit tests.

The line builders give the shapes ExaBGP 5.0.15 prints (captured from real sessions): OPEN with its
capabilities, state changes, UPDATEs and End-of-RIB, all from ``PEER`` to ``ME``. ``speaker`` builds the
Speaker of node n2 (``ME``) peering with n1 (``PEER``) and records what it learns and when it converges;
``session`` brings the session up with the graceful restart capability.
"""

from __future__ import annotations

import json
from pathlib import Path

from bgp.speaker import Speaker
from bgp.view import build_node_view
from l3net.model.resource import Resource

A, B = "10.244.1.0/26", "10.244.1.64/26"
ME, PEER = "10.0.0.2", "10.0.0.1"


def open_line(peer: str, caps: dict[str, object]) -> str:
    return json.dumps({"exabgp": "5.0.0", "type": "open", "neighbor": {
        "address": {"local": ME, "peer": peer}, "asn": {"local": 64512, "peer": 64512}, "direction": "receive",
        "open": {"version": 4, "asn": 64512, "hold_time": 6, "router_id": peer, "capabilities": caps}}})


GR_CAP = {"64": {"name": "graceful restart", "time": 30, "address-family-flags": {"ipv4/unicast": ["restart"]},
                 "restart-flags": ["forwarding"]}, "1": {"name": "multiprotocol", "families": ["ipv4/unicast"]}}


def state(peer: str, state: str, reason: str = "") -> str:
    n: dict[str, object] = {"address": {"local": ME, "peer": peer}, "asn": {"local": 64512, "peer": 64512},
                            "state": state}
    if reason:
        n["reason"] = reason
    return json.dumps({"exabgp": "5.0.0", "type": "state", "neighbor": n})


def update(peer: str, *prefixes: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": ME, "peer": peer}, "asn": {"local": 64512, "peer": 64512}, "direction": "receive",
        "message": {"update": {"attribute": {"origin": "igp", "local-preference": 100},
                               "announce": {"ipv4 unicast": {peer: [{"nlri": p} for p in prefixes]}}}}}})


def eor(peer: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": ME, "peer": peer}, "asn": {"local": 64512, "peer": 64512}, "direction": "receive",
        "message": {"eor": {"afi": "ipv4", "safi": "unicast"}}}})


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
    sp.feed(state(PEER, "connected"))
    sp.feed(open_line(PEER, caps))
    sp.feed(state(PEER, "up"))

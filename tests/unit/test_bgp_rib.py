"""bgp.rib: Adj-RIB-In per peer, best path and ECMP."""

from __future__ import annotations

import pytest

from bgp.events import Announce, PathAttrs, StateEvent, UpdateEvent
from bgp.rib import Rib

pytestmark = pytest.mark.unit

P = "10.244.9.0/26"


def upd(peer: str, prefix: str = P, nh: str | None = None, peer_as: int = 64512, **attrs: object) -> UpdateEvent:
    return UpdateEvent(peer, "10.0.0.1", (Announce(prefix, nh or peer, PathAttrs(**attrs)),), (), peer_as, 64512)


def rib(**kw: object) -> Rib:
    return Rib(local_as=64512, router_id="10.0.0.1", **kw)  # type: ignore[arg-type]


def test_ecmp_for_equal_paths_and_drop_on_down() -> None:
    r = rib()
    assert r.apply(upd("10.0.0.3")) == {P}
    assert r.apply(upd("10.0.0.2")) == {P}
    assert r.apply(upd("10.0.0.2")) == set(), "same path again changes nothing"
    assert r.best_routes() == {P: ["10.0.0.2", "10.0.0.3"]}
    assert r.apply(StateEvent("10.0.0.2", None, "down")) == {P}
    assert r.best_routes() == {P: ["10.0.0.3"]}
    r.apply(UpdateEvent("10.0.0.3", None, (), (P,)))
    assert r.best_routes() == {}


@pytest.mark.parametrize(("better", "worse"), [
    ({"local_pref": 200}, {"local_pref": 100}),
    ({"as_path": (65001,)}, {"as_path": (65001, 65002)}),
    ({"origin": "igp"}, {"origin": "incomplete"}),
    ({"origin": "egp"}, {"origin": "incomplete"}),
    ({"med": 10}, {"med": 20}),
])
def test_decision_steps(better: dict[str, object], worse: dict[str, object]) -> None:
    for order in (0, 1):  # independent of arrival order
        r = rib()
        events = [upd("10.0.0.5", **worse), upd("10.0.0.6", **better)]
        for ev in events[::-1] if order else events:
            r.apply(ev)
        assert r.best_routes() == {P: ["10.0.0.6"]}
        assert [p.peer for p in r.best_paths(P)] == ["10.0.0.6"]


def test_ebgp_over_ibgp_then_lowest_router_id() -> None:
    r = rib()
    r.apply(upd("10.0.0.2"))
    r.apply(upd("10.0.0.9", peer_as=65000, as_path=()))
    assert r.best_routes() == {P: ["10.0.0.9"]}
    r2 = rib()
    r2.apply(upd("10.0.0.7", originator_id="10.0.0.40"))
    r2.apply(upd("10.0.0.8", originator_id="10.0.0.30"))
    assert r2.best_paths(P)[0].peer == "10.0.0.8", "lowest ORIGINATOR_ID first"
    assert r2.best_routes() == {P: ["10.0.0.7", "10.0.0.8"]}, "router ID does not break ECMP"


def test_loop_checks() -> None:
    r = rib(cluster_id="1.1.1.1", local_addresses=("10.0.0.1",))
    assert r.apply(upd("10.0.0.9", peer_as=65000, as_path=(65000, 64512))) == set()
    assert r.apply(upd("10.0.0.2", originator_id="10.0.0.1")) == set()
    assert r.apply(upd("10.0.0.2", cluster_list=("2.2.2.2", "1.1.1.1"))) == set()
    assert r.apply(upd("10.0.0.2", nh="10.0.0.1")) == set()
    assert r.best_routes() == {}
    # a path replaced by a looping one is withdrawn
    r.apply(upd("10.0.0.2"))
    assert r.apply(upd("10.0.0.2", cluster_list=("1.1.1.1",))) == {P}
    assert r.best_routes() == {}


def test_counts_per_peer() -> None:
    r = rib()
    r.apply(upd("10.0.0.2", "10.244.1.0/26"))
    r.apply(upd("10.0.0.2", "10.244.1.64/26"))
    assert r.received("10.0.0.2") == 2 and r.received("10.0.0.3") == 0

"""bgp.exabgp_run: routes without ``next-hop self`` are shared between neighbours, SELF routes still copied."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit


class _NextHop:
    def __init__(self, self_: bool) -> None:
        self.SELF = self_


class _Change:
    def __init__(self, self_: bool) -> None:
        self.nlri = type("N", (), {"nexthop": _NextHop(self_)})()


def test_patch_shares_non_self_routes_and_delegates_self_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.neighbor import Neighbor

    from bgp import exabgp_run

    calls = []
    monkeypatch.setattr(Neighbor, "remove_self", lambda self, change: calls.append(change) or "copied")
    assert exabgp_run.patch_remove_self()
    shared = _Change(False)
    assert Neighbor.remove_self(object(), shared) is shared and calls == []
    selfish = _Change(True)
    assert Neighbor.remove_self(object(), selfish) == "copied" and calls == [selfish]


def test_other_exabgp_series_run_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    import exabgp.version
    from exabgp.bgp.neighbor import Neighbor

    from bgp import exabgp_run

    original = Neighbor.remove_self
    monkeypatch.setattr(exabgp.version, "release", "6.0.0")
    assert not exabgp_run.patch_remove_self()
    assert Neighbor.remove_self is original


NAMES = [f"neighbor 10.1.0.{i} local-ip 10.1.255.254 local-as 64512 peer-as 64512 router-id 10.1.255.254 "
         "family-allowed in-open" for i in range(1, 13)] + [
    "neighbor fd00::1 local-ip fd00::fe local-as 64512 peer-as 64512 router-id 10.1.255.254 family-allowed in-open"]


@pytest.mark.parametrize("command", [
    "neighbor 10.1.0.1 , neighbor 10.1.0.12 , neighbor fd00::1 announce attributes next-hop self nlri 10.0.0.0/24",
    "neighbor 10.1.0.1 announce route 10.0.0.0/24 next-hop self",          # not 10.1.0.10..12
    "neighbor 10.1.0.99 announce route 10.0.0.0/24 next-hop self",         # nobody
    "neighbor 10.1.0.2 local-as 64512 announce route 10.0.0.0/24 next-hop self",   # not plain: original path
    "neighbor * announce route 10.0.0.0/24 next-hop self",
    "announce route 10.0.0.0/24 next-hop self",                            # no description: everyone
])
def test_fast_match_neighbors_agrees_with_exabgps_own(command: str) -> None:
    from exabgp.reactor.api.command.limit import extract_neighbors, match_neighbors

    from bgp.exabgp_run import fast_match_neighbors

    descriptions, _ = extract_neighbors(command)
    assert fast_match_neighbors(match_neighbors)(NAMES, descriptions) == match_neighbors(NAMES, descriptions)


def test_fan_out_patch_installs_where_the_api_commands_look_it_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor.api.command import announce, limit, rib

    from bgp import exabgp_run

    for module in (limit, announce, rib):
        monkeypatch.setattr(module, "match_neighbors", module.match_neighbors)
    monkeypatch.setattr(Configuration, "inject_change", Configuration.inject_change)
    seen = []
    monkeypatch.setattr(Configuration, "inject_change", lambda self, peers, change: seen.append(peers))
    assert exabgp_run.patch_api_fan_out()
    assert announce.match_neighbors is limit.match_neighbors is rib.match_neighbors
    assert announce.match_neighbors(NAMES, [["neighbor 10.1.0.3"]]) == [NAMES[2]]
    Configuration.inject_change(object(), ["a", "b"], None)
    assert seen == [{"a", "b"}]


def test_presorted_nlris_keep_exabgps_order_and_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.message.update import Update

    from bgp import exabgp_run

    seen: list[list[object]] = []
    monkeypatch.setattr(Update, "_split_nlris", lambda self, negotiated: seen.append(list(self.nlris)))
    exabgp_run._presort_update_nlris()

    class N:   # an NLRI as far as ordering goes: ExaBGP orders by index() bytes
        def __init__(self, key: bytes) -> None:
            self.key = key

        def index(self) -> bytes:
            return self.key

        def __lt__(self, other: N) -> bool:
            return self.key < other.key

    items = [N(b"\x01\x18\x0a\x02"), N(b"\x01\x18\x0a\x01"), N(b"\x01\x10\x0b")]
    update = Update(items, None)
    update._split_nlris(None)
    assert seen == [sorted(items)], "the order NLRI.__lt__ gives"


def test_shared_families_equal_the_ones_exabgp_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.protocol.family import AFI, SAFI, Family

    from bgp import exabgp_run

    monkeypatch.setattr(Family, "family", Family.family)
    v4 = INET(AFI.ipv4, SAFI.unicast)
    v6 = INET(AFI.ipv6, SAFI.unicast)
    before = (v4.family(), v6.family())
    exabgp_run._share_families()
    after = (v4.family(), v6.family())
    assert after == before and after[0].afi_safi() == (AFI.ipv4, SAFI.unicast)
    assert v4.family() is after[0], "one Family per (AFI, SAFI)"
    assert after[1].afi_safi() == (AFI.ipv6, SAFI.unicast) and after[0] != after[1]


def test_route_echo_logs_count_the_neighbours_instead_of_naming_each() -> None:
    from bgp.exabgp_run import short_route_log

    route = "10.244.3.0/26 next-hop 10.77.0.3 origin igp originator-id 10.77.0.3 cluster-list [ 1.1.1.1 ]"
    assert short_route_log(f"route added to {NAMES[0]}, {NAMES[1]}, {NAMES[12]} : {route}") == (
        f"route added to 3 neighbors : {route}")
    assert short_route_log(f"route removed from {NAMES[4]} : {route}") == f"route removed from 1 neighbors : {route}"
    for other in (f"invalid route for {NAMES[0]} : {route}", "teardown scheduled for neighbor 10.1.0.1",
                  "route added to nothing"):
        assert short_route_log(other) == other


@pytest.mark.parametrize(("description", "hold", "interval"), [
    ("Mesh_10_0_0_2 (node-to-node mesh) keepalive 1s", 9, 1),
    ("Mesh_10_0_0_2 (node-to-node mesh) keepalive 8s", 9, 8),
    ("Mesh_10_0_0_2 (node-to-node mesh) keepalive 9s", 9, None),    # not below the hold: ExaBGP's hold/3
    ("Mesh_10_0_0_2 (node-to-node mesh) keepalive 5s", 3, None),    # the peer negotiated a shorter hold
    ("Mesh_10_0_0_2 (node-to-node mesh) keepalive 1s", 0, None),    # hold 0: no keepalives at all
    ("Mesh_10_0_0_2 (node-to-node mesh)", 9, None),
    ("Global_x (global) keepalive 0s", 9, None),
    ("Global_x (global) nokeepalive 1s", 9, None),
    ("", 9, None),
])
def test_keepalive_interval_from_the_description(description: str, hold: int, interval: int | None) -> None:
    from bgp.exabgp_run import keepalive_interval

    assert keepalive_interval(description, hold) == interval


def test_keepalive_patch_sets_the_send_timer_from_the_neighbour(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.message.open.holdtime import HoldTime
    from exabgp.reactor.keepalive import KA

    from bgp import exabgp_run

    monkeypatch.setattr(KA, "__init__", KA.__init__)   # undone after the test
    assert exabgp_run.patch_keepalive()

    def proto(description: str) -> object:
        return type("P", (), {"neighbor": {"description": description},
                              "negotiated": type("N", (), {"holdtime": HoldTime(9)})()})()

    assert KA(lambda: "s", proto("Mesh_x (node-to-node mesh) keepalive 1s")).send_timer.keepalive == 1
    assert KA(lambda: "s", proto("Mesh_x (node-to-node mesh)")).send_timer.keepalive == 3, "ExaBGP's own hold/3"


def test_reloaded_auto_neighbour_keeps_the_local_address_its_session_discovered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sourceAddress None: a reload must not leave an established ``local-address auto`` neighbour without the
    address ``next-hop self`` resolves to (ExaBGP only learns it when the session connects)."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.protocol.family import AFI
    from exabgp.protocol.ip import IP
    from exabgp.reactor.peer import Peer

    from bgp import exabgp_run

    got: list[object] = []
    monkeypatch.setattr(Peer, "reconfigure", lambda self, n=None: got.append(n))
    monkeypatch.setattr(Peer, "reestablish", lambda self, n=None: got.append(n))
    assert exabgp_run.patch_auto_local_address()

    def auto(local: str | None) -> Neighbor:
        n = Neighbor()
        n.auto_discovery = True
        n["local-address"] = IP.create(local) if local else None
        return n

    fresh = auto(None)
    with pytest.raises(AttributeError):
        fresh.ip_self(AFI.ipv4)   # what every `next-hop self` did after a reload, unpatched
    live = type("P", (), {"neighbor": auto("10.78.0.1")})()
    Peer.reconfigure(live, fresh)
    assert got == [fresh] and str(fresh.ip_self(AFI.ipv4)) == "10.78.0.1"
    bound = Neighbor()
    bound["local-address"] = IP.create("10.77.0.1")
    Peer.reestablish(live, bound)
    assert str(bound["local-address"]) == "10.77.0.1", "a neighbour with its own address is left alone"
    blank = auto(None)
    Peer.reconfigure(type("P", (), {"neighbor": auto(None)})(), blank)
    assert blank["local-address"] is None, "nothing discovered yet: nothing to carry"


def test_nlri_bytes_are_computed_once_and_equal_exabgps_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.protocol.family import AFI, SAFI

    from bgp import exabgp_run

    monkeypatch.setattr(INET, "index", INET.index)
    monkeypatch.setattr(CIDR, "pack_nlri", CIDR.pack_nlri)

    def nlri(prefix: bytes, mask: int, afi: Any = AFI.ipv4) -> INET:
        n = INET(afi, SAFI.unicast)
        n.cidr = CIDR(prefix, mask)
        return n

    routes = [nlri(b"\x0a\xf4\x03\x00", 26), nlri(b"\x0a\xf4\x03\x40", 26), nlri(b"\x0a\x00\x00\x00", 8),
              nlri(b"\xfd\x00" + b"\x00" * 14, 64, AFI.ipv6)]
    before = [(n.index(), n.cidr.pack_nlri(), n.pack_nlri()) for n in routes]
    order = sorted(routes)
    exabgp_run._memo_nlri_bytes()
    after = [(n.index(), n.cidr.pack_nlri(), n.pack_nlri()) for n in routes]
    assert after == before and sorted(routes) == order, "the same bytes and order as ExaBGP's own code"
    assert routes[0].index() is routes[0].index(), "computed once, then kept on the object"
    # an NLRI whose parts are replaced gets the bytes of its new parts, not the memo
    first = routes[0].index()
    routes[0].cidr = CIDR(b"\x0a\xf4\x04\x00", 26)
    assert routes[0].index() != first and routes[0].index().endswith(b"\x1a\x0a\xf4\x04\x00")
    routes[0].path_info = PathInfo(b"\x00\x00\x00\x07")
    assert b"no-pi" not in routes[0].index()


class _RecordingPoller:
    def __init__(self) -> None:
        self.timeouts: list[int] = []

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        return []


def test_queued_api_work_runs_on_the_next_turn_without_waiting_for_the_idle_poll(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ExaBGP runs 50 steps of queued API work per turn; the rest must not wait out the idle poll (100 ms)."""
    import exabgp.reactor.asynchronous
    from exabgp.reactor.asynchronous import ASYNC
    from exabgp.reactor.loop import Reactor

    from bgp import exabgp_run

    monkeypatch.setattr(Reactor, "_wait_for_io", Reactor._wait_for_io)   # undone after the test
    # ExaBGP's logger exists only once its application set it up
    monkeypatch.setattr(exabgp.reactor.asynchronous, "log", type("L", (), {"debug": lambda *a, **k: None})())
    assert exabgp_run.patch_async_backlog()
    reactor = type("R", (), {"_poller": _RecordingPoller(), "asynchronous": ASYNC()})()

    def turn() -> int:
        list(Reactor._wait_for_io(reactor, 100))
        return reactor._poller.timeouts[-1]

    assert turn() == 100, "nothing queued: the idle poll stands"
    steps = []

    def command() -> Any:
        for route in range(120):   # one step per route, as ExaBGP's announce does
            steps.append(route)
            yield False

    reactor.asynchronous.schedule("svc", "announce", command())
    assert turn() == 0, "work queued: the turn must not wait"
    reactor.asynchronous.run()
    assert len(steps) == ASYNC.LIMIT and turn() == 0, "50 steps a turn: 70 still queued"
    reactor.asynchronous.run()
    reactor.asynchronous.run()
    assert len(steps) == 120 and reactor.asynchronous.ready() and turn() == 100, "done: idle again"

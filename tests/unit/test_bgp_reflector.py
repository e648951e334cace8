"""bgp.reflector: what an RFC 4456 reflector sends to whom."""

from __future__ import annotations

import pytest

from bgp.events import Announce, PathAttrs, UpdateEvent
from bgp.reflector import reflect
from bgp.rib import Rib
from bgp.view import PeerSpec

pytestmark = pytest.mark.unit

RR = "10.0.0.10"
CID = "1.1.1.1"


def spec(addr: str, client: bool = True, asn: int = 64512) -> PeerSpec:
    return PeerSpec(name=f"Node_{addr}", peer_type="node specific", address=addr, port=179, local_address=RR,
                    local_as=64512, peer_as=asn, passive=True, hold_time=9, rr_client=client)


PEERS = [spec("10.0.0.1"), spec("10.0.0.2"), spec("10.0.0.3"), spec("10.0.0.11", client=False)]


def rib_with(*events: UpdateEvent) -> Rib:
    r = Rib(local_as=64512, router_id=RR, cluster_id=CID, local_addresses=(RR,))
    for e in events:
        r.apply(e)
    return r


def upd(peer: str, prefix: str, nh: str, **attrs: object) -> UpdateEvent:
    return UpdateEvent(peer, RR, (Announce(prefix, nh, PathAttrs(**attrs)),), (), 64512, 64512)


def test_client_route_goes_to_other_clients_and_non_clients_with_attributes() -> None:
    out = reflect(rib_with(upd("10.0.0.1", "10.244.1.0/26", "10.0.0.1", communities=("64512:1",))), PEERS, CID)
    assert out["10.0.0.1"] == {}, "never back to the originating client"
    for target in ("10.0.0.2", "10.0.0.3", "10.0.0.11"):
        adv = out[target]["10.244.1.0/26"]
        assert adv.next_hop == "10.0.0.1", "next hop kept"
        assert adv.originator_id == "10.0.0.1" and adv.cluster_list == (CID,)
        assert adv.communities == ("64512:1",)


def test_non_client_route_goes_to_clients_only_and_keeps_originator() -> None:
    ev = upd("10.0.0.11", "10.244.5.0/26", "10.0.0.5", originator_id="10.0.0.5", cluster_list=("2.2.2.2",))
    out = reflect(rib_with(ev), PEERS, CID)
    assert out["10.0.0.11"] == {}
    assert set(out) == {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.11"}
    adv = out["10.0.0.2"]["10.244.5.0/26"]
    assert adv.originator_id == "10.0.0.5" and adv.cluster_list == (CID, "2.2.2.2")


def test_originator_is_skipped_even_via_another_reflector() -> None:
    # client 10.0.0.1's route came back through the other reflector: not to 10.0.0.1 again
    ev = upd("10.0.0.11", "10.244.1.0/26", "10.0.0.1", originator_id="10.0.0.1", cluster_list=("2.2.2.2",))
    out = reflect(rib_with(ev), PEERS, CID)
    assert "10.244.1.0/26" not in out["10.0.0.1"]
    assert "10.244.1.0/26" in out["10.0.0.2"]


def test_own_cluster_in_list_is_dropped_and_ebgp_not_reflected() -> None:
    looped = upd("10.0.0.11", "10.244.7.0/26", "10.0.0.7", originator_id="10.0.0.7", cluster_list=(CID,))
    out = reflect(rib_with(looped), PEERS, CID)
    assert all(v == {} for v in out.values())
    ebgp = UpdateEvent("10.0.0.99", RR, (Announce("192.0.2.0/24", "10.0.0.99", PathAttrs(as_path=(65000,))),),
                       (), 65000, 64512)
    out = reflect(rib_with(ebgp), [*PEERS, spec("10.0.0.99", client=False, asn=65000)], CID)
    assert all(v == {} for v in out.values())


def test_best_path_is_reflected_when_two_clients_announce_one_prefix() -> None:
    r = rib_with(upd("10.0.0.1", "10.96.0.0/24", "10.0.0.1", local_pref=100),
                 upd("10.0.0.2", "10.96.0.0/24", "10.0.0.2", local_pref=200))
    out = reflect(r, PEERS, CID)
    assert out["10.0.0.3"]["10.96.0.0/24"].next_hop == "10.0.0.2"
    assert "10.96.0.0/24" not in out["10.0.0.2"]
    assert out["10.0.0.1"]["10.96.0.0/24"].next_hop == "10.0.0.2"

"""BGP import/export policy: BGPFilter rules, the safe defaults, prefix limits, secrets, eBGP reachability."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp import status as bgp_status
from bgp.advertised import Advertised
from bgp.commands import Advertisement
from bgp.events import Announce, PathAttrs, StateEvent, UpdateEvent
from bgp.peer_status import PeerRecord
from bgp.policy import (
    FILTERED,
    REJECT_ALL,
    FilterRule,
    PeerFacts,
    build_import_context,
    filter_verdict,
    import_reason,
    paths_to_recheck,
    rules_of,
)
from bgp.rib import Rib
from bgp.secrets import SecretReader, write_private
from bgp.speaker import Speaker
from bgp.view import IpamFacts, build_node_view
from l3net.cli.ctl import render
from l3net.errors import ValidationError
from l3net.model.bgpfilter_spec import bgpfilter_spec
from l3net.model.resource import Resource
from l3net.model.validate.bgp import REDACTED
from l3net.model.validation import resource_from_document
from tests.fakes import exabgp

pytestmark = pytest.mark.unit

POOL = "10.244.0.0/16"
N2_BLOCK = "10.244.2.0/26"
N2_POD = "10.244.5.7/32"          # borrowed by n2 from a block that is not its own
LOCAL_POD = "10.244.1.5"


def node(name: str, ip: str, asn: int | None = None) -> Resource:
    bgp: dict[str, Any] = {"ipv4Address": ip}
    if asn:
        bgp["asNumber"] = asn
    return Resource(kind="Node", name=name, spec={"bgp": bgp})


NODES = [node("n1", "10.0.0.1/24", 65101), node("n2", "10.0.0.2/24", 65101), node("n3", "10.0.1.3/24", 65102)]
IPAM = IpamFacts(pools=(POOL,), block_owner=(("10.244.1.0/26", "n1"), (N2_BLOCK, "n2"), ("10.244.3.0/26", "n3")),
                 address_owner=frozenset({(N2_POD, "n2"), (f"{LOCAL_POD}/32", "n1")}),
                 local_workloads=frozenset({LOCAL_POD}))


def bgppeer(name: str, **spec: Any) -> Resource:
    return Resource(kind="BGPPeer", name=name, spec=spec)


def bgpfilter(name: str, **spec: Any) -> Resource:
    return Resource(kind="BGPFilter", name=name, spec=spec)


def view_n1(peers: list[Resource] = (), filters: list[Resource] = (), **kw: Any) -> Any:  # type: ignore[assignment]
    return build_node_view("n1", NODES, [], list(peers), list(filters), ipam=IPAM, **kw)


TOR = bgppeer("tor", peerIP="10.0.0.254", asNumber=65000)


def reason(view: Any, peer: str, prefix: str, nh: str, as_path: tuple[int, ...] = (),
           originator: str | None = None) -> str | None:
    spec = view.peer(peer)
    facts = PeerFacts(peer, spec.peer_node, spec.import_rules)
    return import_reason(view.guard.index(), facts, prefix, nh, as_path, originator)


# -- filters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "prefix", "hit"), [
    ("Equal", "10.0.0.0/8", True), ("Equal", "10.1.0.0/16", False), ("NotEqual", "10.1.0.0/16", True),
    ("In", "10.1.0.0/16", True), ("In", "11.0.0.0/8", False), ("NotIn", "11.0.0.0/8", True),
    ("NotIn", "10.0.0.0/8", False)])
def test_filter_operators(op: str, prefix: str, hit: bool) -> None:
    rule = FilterRule(action="Reject", cidr=ipaddress.ip_network("10.0.0.0/8"), operator=op)
    assert rule.matches(ipaddress.ip_network(prefix)) is hit


def test_filter_prefix_length_and_first_match_decides() -> None:
    rules = (FilterRule("Accept", cidr=ipaddress.ip_network("0.0.0.0/0"), operator="Equal"),
             FilterRule("Reject", min_len=25),
             FilterRule("Accept", cidr=ipaddress.ip_network("192.0.2.0/24"), operator="In"))
    assert filter_verdict(rules, ipaddress.ip_network("0.0.0.0/0")) == "Accept"
    assert filter_verdict(rules, ipaddress.ip_network("192.0.2.128/25")) == "Reject"
    assert filter_verdict(rules, ipaddress.ip_network("192.0.2.0/24")) == "Accept"
    assert filter_verdict(rules, ipaddress.ip_network("198.51.100.0/24")) is None


def test_missing_filter_rejects_everything_and_says_so() -> None:
    rules, errors = rules_of({}, ["nope"], "import", 4, "BGPPeer/tor")
    assert rules == (REJECT_ALL,) and "nope" in errors[0].reason
    v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["nope"])])
    assert reason(v, "10.0.0.254", "0.0.0.0/0", "10.0.0.254", (65000,)) == FILTERED
    assert any(e.path == "spec.filters" for e in v.errors)


def test_a_hand_built_filter_the_model_refuses_rejects_everything_and_says_so() -> None:
    # leaving out only the refused rule would accept what it rejects: the whole filter fails closed
    bad = bgpfilter("f", importV4=[{"cidr": "192.0.2.0/24", "matchOperator": "Equal", "action": "Reject"},
                                   {"cidr": "10.0.0.0/8", "action": "Reject"}])
    v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["f"])], [bad])
    assert v.peer("10.0.0.254").import_rules == (REJECT_ALL,)
    assert reason(v, "10.0.0.254", "198.51.100.0/24", "10.0.0.254", (65000,)) == FILTERED
    assert any(e.path == "spec.importV4[1].matchOperator" for e in v.errors)
    assert any(e.path == "spec.filters" and "'f' is invalid" in e.reason for e in v.errors)


def test_filter_rules_come_from_the_typed_spec_in_order() -> None:
    f = bgpfilter("f", importV4=[{"cidr": "192.0.2.0/24", "matchOperator": "NotIn", "action": "Accept",
                                  "prefixLength": {"min": 8}}, {"action": "Reject"}],
                  importV6=[{"cidr": "fd00::/8", "matchOperator": "In", "action": "Reject"}])
    rules, errors = rules_of({"f": bgpfilter_spec(f)}, ["f"], "import", 4)
    assert errors == [] and rules == (FilterRule("Accept", ipaddress.ip_network("192.0.2.0/24"), "NotIn", 8, None, "f"),
                                      FilterRule("Reject", source="f"))
    assert rules_of({"f": bgpfilter_spec(f)}, ["f"], "export", 6) == ((), [])


def test_bgpfilter_documents_validate() -> None:
    ok = {"importV4": [{"cidr": "0.0.0.0/0", "matchOperator": "Equal", "action": "Accept"}, {"action": "Reject"}],
          "exportV4": [{"cidr": "10.244.0.0/16", "matchOperator": "In", "prefixLength": {"min": 26, "max": 32},
                        "action": "Accept"}]}
    resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter", "metadata": {"name": "f"},
                            "spec": ok})
    for bad, path in [({"importV4": [{"cidr": "fd00::/8", "matchOperator": "In", "action": "Accept"}]},
                       "importV4[0].cidr"),
                      ({"importV4": [{"cidr": "10.0.0.0/8", "action": "Accept"}]}, "matchOperator"),
                      ({"importV4": [{"action": "Allow"}]}, "action"),
                      ({"exportV4": [{"prefixLength": {"min": 30, "max": 20}, "action": "Accept"}]}, "prefixLength")]:
        with pytest.raises(ValidationError) as exc:
            resource_from_document({"apiVersion": "l3net.io/v1", "kind": "BGPFilter", "metadata": {"name": "f"},
                                    "spec": bad})
        assert path in str(exc.value)


# -- safe defaults ---------------------------------------------------------------------------
def test_external_peer_cannot_hijack_pool_routes_but_may_send_outside_routes() -> None:
    v = view_n1([TOR])
    tor = "10.0.0.254"
    assert "not a block" in (reason(v, tor, "10.244.2.0/27", tor, (65000,)) or "")  # more-specific of n2's
    assert "owned by node n2" in (reason(v, tor, N2_BLOCK, tor, (65000,)) or "")     # n2's block, wrong origin
    assert reason(v, tor, N2_POD, tor, (65000,)) is not None          # a pod /32 of n2
    assert reason(v, tor, "10.244.9.0/26", tor, (65000,)) is not None  # nobody's block
    assert reason(v, tor, "0.0.0.0/0", tor, (65000,)) is None          # outside pools: Calico's default
    assert reason(v, tor, "198.51.100.0/24", LOCAL_POD, (65000,)) == "next hop is a local workload"


def test_pool_routes_are_taken_from_their_owner_directly_reflected_or_through_a_router() -> None:
    v = view_n1([TOR, bgppeer("n3peer", peerIP="10.0.1.3", asNumber=65102, ebgpMultihop=2)])
    assert reason(v, "10.0.0.2", N2_BLOCK, "10.0.0.2") is None                     # mesh peer n2, iBGP
    assert reason(v, "10.0.0.2", N2_POD, "10.0.0.2") is None                       # n2's borrowed address
    assert reason(v, "10.0.0.2", "10.244.3.0/26", "10.0.0.2") is not None          # n3's block from n2
    assert reason(v, "10.0.0.254", "10.244.3.0/26", "10.0.0.254", (65000, 65102)) is None   # leaf-spine
    assert reason(v, "10.0.0.254", "10.244.3.0/26", "10.0.0.254", (65000, 65666)) is not None
    assert reason(v, "10.0.0.2", "10.244.3.0/26", "10.0.1.3", (), originator="10.0.1.3") is None  # reflected
    assert reason(v, "10.0.0.2", "10.244.3.0/26", "10.0.1.3", (), originator="10.0.0.2") is not None


# -- rib: limits and re-checks ---------------------------------------------------------------
def update(peer: str, *prefixes: str, nh: str = "10.0.0.254", as_path: tuple[int, ...] = (65000,)) -> UpdateEvent:
    return UpdateEvent(peer=peer, local="10.0.0.1", peer_as=65000, local_as=65101,
                       announces=tuple(Announce(p, nh, PathAttrs(as_path=as_path)) for p in prefixes))


def rib_for(view: Any) -> Rib:
    rib = Rib(local_as=65101, router_id="10.0.0.1", local_addresses=("10.0.0.1",))
    index = view.guard.index()
    facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in view.peers}
    rib.import_check = lambda peer, ann: import_reason(index, facts[peer], ann.prefix, ann.next_hop,
                                                      ann.attrs.as_path, ann.attrs.originator_id)
    rib.limits = {p.address: p.max_prefixes for p in view.peers if p.max_prefixes}
    return rib


def test_prefix_limit_drops_everything_from_the_peer_until_its_session_restarts() -> None:
    v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, maxPrefixes=3)])
    assert v.peer("10.0.0.254").max_prefixes == 3
    rib = rib_for(v)
    assert rib.apply(update("10.0.0.254", "192.0.2.0/24", "198.51.100.0/24")) == {"192.0.2.0/24", "198.51.100.0/24"}
    # junk inside the pool does not count: it is refused, held for re-checks
    rib.apply(update("10.0.0.254", N2_BLOCK, "10.244.2.0/28"))
    assert rib.held("10.0.0.254") == 2 and rib.received("10.0.0.254") == 2
    changed = rib.apply(update("10.0.0.254", *(f"203.0.{i}.0/24" for i in range(5))))
    assert rib.over_limit == {"10.0.0.254": 3} and rib.limit_hits == 1
    assert rib.best_routes() == {} and "192.0.2.0/24" in changed
    assert rib.apply(update("10.0.0.254", "192.0.2.0/24")) == set()      # ignored while over the limit
    rib.apply(StateEvent(peer="10.0.0.254", local=None, state="down"))
    assert rib.over_limit == {}
    assert rib.apply(update("10.0.0.254", "192.0.2.0/24")) == {"192.0.2.0/24"}


def test_cluster_changes_recheck_held_and_accepted_paths() -> None:
    v = view_n1()
    rib = rib_for(v)
    rib.apply(UpdateEvent(peer="10.0.0.2", local="10.0.0.1", peer_as=65101, local_as=65101,
                          announces=(Announce("10.244.7.0/26", "10.0.0.2", PathAttrs()),
                                     Announce(N2_BLOCK, "10.0.0.2", PathAttrs()))))
    assert set(rib.best_routes()) == {N2_BLOCK} and rib.held("10.0.0.2") == 1
    # the block moves to n2 and N2_BLOCK to n3: both paths change their verdict
    moved = IpamFacts(pools=(POOL,), block_owner=(("10.244.7.0/26", "n2"), (N2_BLOCK, "n3")))
    v2 = build_node_view("n1", NODES, [], [], ipam=moved)
    index = v2.guard.index()
    facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in v2.peers}
    rib.import_check = lambda peer, ann: import_reason(index, facts[peer], ann.prefix, ann.next_hop,
                                                      ann.attrs.as_path, ann.attrs.originator_id)
    assert rib.refilter() == {"10.244.7.0/26", N2_BLOCK}
    assert set(rib.best_routes()) == {"10.244.7.0/26"}


def _check_with(rib: Rib, view: Any) -> None:
    index = view.guard.index()
    facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in view.peers}
    rib.import_check = lambda peer, ann: import_reason(index, facts[peer], ann.prefix, ann.next_hop,
                                                      ann.attrs.as_path, ann.attrs.originator_id)


_BLOCKS = [f"10.244.{i}.0/26" for i in range(1, 7)]
_HOSTS = [f"10.244.{i}.9/32" for i in range(1, 7)]
_owner_maps = st.dictionaries(st.sampled_from(_BLOCKS + _HOSTS), st.sampled_from(["n1", "n2", "n3"]), max_size=8)


@settings(max_examples=200, deadline=None)
@given(before=_owner_maps, after=_owner_maps,
       locals_before=st.sets(st.sampled_from(["10.244.1.9", "10.244.2.9", "10.0.0.2"]), max_size=2),
       locals_after=st.sets(st.sampled_from(["10.244.1.9", "10.244.2.9", "10.0.0.2"]), max_size=2))
def test_rechecking_only_the_paths_a_cluster_change_touches_decides_as_a_full_recheck(
        before: dict[str, str], after: dict[str, str], locals_before: set[str], locals_after: set[str]) -> None:
    """A workload added anywhere re-checks only the paths whose owner or next hop it changed, with the
    verdicts a re-check of every path gives."""
    def facts(owners: dict[str, str], local: set[str]) -> IpamFacts:
        return IpamFacts(pools=(POOL,), block_owner=tuple((p, n) for p, n in owners.items() if p.endswith("/26")),
                         address_owner=frozenset((p, n) for p, n in owners.items() if p.endswith("/32")),
                         local_workloads=frozenset(local))
    old = build_node_view("n1", NODES, [], [], ipam=facts(before, locals_before))
    new = build_node_view("n1", NODES, [], [], ipam=facts(after, locals_after))
    ribs = []
    for _ in range(2):
        rib = Rib(local_as=65101, router_id="10.0.0.1", local_addresses=("10.0.0.1",))
        _check_with(rib, old)
        for nh in ("10.0.0.2", "10.244.2.9"):
            rib.apply(UpdateEvent(peer="10.0.0.2", local="10.0.0.1", peer_as=65101, local_as=65101,
                                  announces=tuple(Announce(p, nh, PathAttrs()) for p in _BLOCKS[:3] + _HOSTS[:3])))
            rib.apply(UpdateEvent(peer="10.0.0.2", local="10.0.0.1", peer_as=65101, local_as=65101,
                                  announces=tuple(Announce(p, nh, PathAttrs()) for p in _BLOCKS[3:] + _HOSTS[3:])))
        _check_with(rib, new)
        ribs.append(rib)
    full, narrow = ribs
    assert narrow.refilter(paths_to_recheck(old.guard, new.guard)) == full.refilter()
    assert narrow.best_routes() == full.best_routes()
    assert narrow.held("10.0.0.2") == full.held("10.0.0.2")


def test_a_change_of_pools_or_nodes_rechecks_every_path() -> None:
    v = view_n1()
    assert paths_to_recheck(v.guard, v.guard) is not None
    grown = IpamFacts(pools=(POOL, "10.245.0.0/16"), block_owner=IPAM.block_owner, address_owner=IPAM.address_owner,
                      local_workloads=IPAM.local_workloads)
    assert paths_to_recheck(v.guard, build_node_view("n1", NODES, [], [], ipam=grown).guard) is None
    moved = build_node_view("n1", [*NODES[:2], node("n3", "10.0.1.4/24", 65102)], [], [], ipam=IPAM)
    assert paths_to_recheck(v.guard, moved.guard) is None
    only = paths_to_recheck(v.guard, build_node_view("n1", NODES, [], [], ipam=IpamFacts(
        pools=(POOL,), block_owner=IPAM.block_owner[:2], address_owner=IPAM.address_owner,
        local_workloads=IPAM.local_workloads)).guard)
    assert only is not None
    assert only("10.244.3.0/26", "10.0.0.9") and not only(N2_BLOCK, "10.0.0.9")
    assert only(N2_BLOCK, "not an address") is False and only("bogus", "10.0.0.9") is True


# -- reachability of single-hop eBGP peers ----------------------------------------------------
def test_single_hop_ebgp_peer_off_the_node_subnets_is_refused_unless_multihop() -> None:
    v = view_n1([bgppeer("far", peerIP="192.0.2.1", asNumber=65000)])
    assert v.peer("192.0.2.1") is None
    err = next(e for e in v.errors if e.document.endswith("far"))
    assert err.path == "spec.peerIP" and "10.0.0.0/24" in err.reason and "ebgpMultihop" in err.reason
    # the agent publishes the refusal in the node's BGP status; `l3netctl node status` prints it
    st = bgp_status.decode(bgp_status.encode("n1", [], errors=[str(e) for e in v.errors]))
    table = bgp_status.format_table(st)
    assert "Refused BGP configuration" in table and "BGPPeer/far" in table and "10.0.0.0/24" in table
    v = view_n1([bgppeer("far", peerIP="192.0.2.1", asNumber=65000, ebgpMultihop=3)])
    assert v.peer("192.0.2.1").multihop == 3 and v.errors == ()
    v = view_n1([bgppeer("ibgp", peerIP="192.0.2.1", asNumber=65101)])   # iBGP is multihop by nature
    assert v.peer("192.0.2.1") is not None
    v = view_n1([TOR])                                                    # on the subnet
    assert v.peer("10.0.0.254") is not None


# -- secrets ---------------------------------------------------------------------------------
def test_secret_key_ref_is_read_from_the_secrets_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bgp").mkdir()
    f = tmp_path / "bgp" / "tor"
    f.write_text("t0p-s3cret\n")
    f.chmod(0o600)
    ref = {"secretKeyRef": {"name": "bgp", "key": "tor"}}
    v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, password=ref)],
                secrets=SecretReader(tmp_path))
    assert v.peer("10.0.0.254").password == "t0p-s3cret" and v.errors == ()
    assert "t0p-s3cret" not in repr(v)
    # missing key: the peer is refused, naming the field; the value never appears
    v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000,
                         password={"secretKeyRef": {"name": "bgp", "key": "nope"}})], secrets=SecretReader(tmp_path))
    assert v.peer("10.0.0.254") is None and v.errors[0].path == "spec.password"
    with pytest.raises(ValueError, match=r"outside|not a Secret"):
        SecretReader(tmp_path).read("..", "tor")
    (tmp_path / "bgp" / "link").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="outside"):
        SecretReader(tmp_path).read("bgp", "link")
    f.chmod(0o644)
    with caplog.at_level("WARNING"):
        assert SecretReader(tmp_path).read("bgp", "tor") == "t0p-s3cret"
    assert "0600" in caplog.text and "t0p-s3cret" not in caplog.text


def test_exabgp_conf_and_private_files_are_0600(tmp_path: Path) -> None:
    write_private(tmp_path / "x", "a")
    assert stat.S_IMODE(os.stat(tmp_path / "x").st_mode) == 0o600
    sp = Speaker("n1", tmp_path)
    sp._view = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, password={"value": "pw"})])
    assert sp._write_config() is True
    assert stat.S_IMODE(os.stat(sp.config_path).st_mode) == 0o600
    assert sp._write_config() is False          # same text: no rewrite, no reload
    os.chmod(sp.config_path, 0o644)
    assert sp._write_config() is True and stat.S_IMODE(os.stat(sp.config_path).st_mode) == 0o600


def test_get_redacts_passwords_and_applying_the_placeholder_is_refused() -> None:
    res = bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, password={"value": "s3cret"})
    for out in ("yaml", "json"):
        text = render([res], out, "BGPPeer", True, False)
        assert "s3cret" not in text and REDACTED in text
    assert res.spec["password"]["value"] == "s3cret"    # the resource itself is untouched
    doc = yaml.safe_load(render([res], "yaml", "BGPPeer", True, False))
    with pytest.raises(ValidationError, match=r"spec\.password\.value"):
        resource_from_document(doc)


# -- the bridge connection survives what a peer makes ExaBGP print ------------------------------
def test_bridge_takes_long_update_lines_and_skips_absurd_ones(tmp_path: Path) -> None:
    """A full UPDATE (FRR packs ~16,000 prefixes into one extended message) is one long JSON line; a line
    beyond the limit is skipped and the connection goes on (it used to drop the bridge)."""
    import asyncio

    from bgp.speaker import BRIDGE_LINE_LIMIT

    tor = exabgp.Neighbor(local="10.0.0.1", peer="10.0.0.254", local_as=65101, peer_as=65000)

    def update_line(prefixes: list[str]) -> bytes:
        return tor.announce(*prefixes, origin="igp", as_path=(65000,)).encode() + b"\n"

    many = [f"20.{i // 256}.{i % 256}.0/24" for i in range(16_000)]
    assert len(update_line(many)) > 64 * 1024

    async def scenario() -> None:
        sp = Speaker("n1", tmp_path)
        v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, maxPrefixes=50_000)])
        await sp.start()
        try:
            sp._view = sp.routing.view = v
            sp.routing.peers = {p.address: PeerRecord(p) for p in v.peers}
            sp.routing.apply_import_policy(None)
            _, writer = await asyncio.open_unix_connection(str(sp.socket_path))
            writer.write(update_line(many))
            writer.write(b"x" * (BRIDGE_LINE_LIMIT + 10) + b"\n")
            writer.write(update_line(["192.0.2.0/24"]))
            await writer.drain()
            for _ in range(500):
                if sp.rib.received("10.0.0.254") == len(many) + 1:
                    break
                await asyncio.sleep(0.02)
            assert sp.rib.received("10.0.0.254") == len(many) + 1
            writer.close()
        finally:
            sp._view = sp.routing.view = None
            await sp.stop()

    asyncio.run(scenario())


def test_export_rules_withhold_prefixes_per_peer_and_v6_rules_apply_to_v6_peers(tmp_path: Path) -> None:
    no_borrowed = bgpfilter("no-host-routes", exportV4=[{"prefixLength": {"min": 27}, "action": "Reject"}],
                            importV6=[{"cidr": "fd00:244::/48", "matchOperator": "In", "action": "Reject"}])
    dual = Resource(kind="Node", name="n1", spec={"bgp": {"ipv4Address": "10.0.0.1/24", "ipv6Address": "fd00::1/64",
                                                         "asNumber": 65101}})
    v = build_node_view("n1", [dual], [], [
        bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["no-host-routes"]),
        bgppeer("tor6", peerIP="fd00::fe", asNumber=65000, filters=["no-host-routes"])], [no_borrowed], ipam=IPAM)
    assert v.errors == ()
    tor, tor6 = v.peer("10.0.0.254"), v.peer("fd00::fe")
    assert tor.import_rules == () and len(tor.export_rules) == 1
    assert len(tor6.import_rules) == 1 and tor6.export_rules == ()
    adv = Advertised("n1")
    adv.view = v
    adv.own = {"10.244.1.0/26": Advertisement(), "10.244.5.9/32": Advertisement()}
    assert set(adv.desired(tor)) == {"10.244.1.0/26"}
    assert adv.desired_one(tor, "10.244.5.9/32") is None
    assert adv.desired_one(tor, "10.244.1.0/26") is not None


def test_get_lists_bgpfilters_as_a_table() -> None:
    f = bgpfilter("only-default", importV4=[{"cidr": "0.0.0.0/0", "matchOperator": "Equal", "action": "Accept"},
                                            {"action": "Reject"}])
    lines = render([f], "table", "BGPFilter", False, False).splitlines()
    assert lines[0].split() == ["NAME", "IMPORTV4-RULES", "EXPORTV4-RULES", "IMPORTV6-RULES", "EXPORTV6-RULES"]
    assert lines[1].split() == ["only-default", "2", "0", "0", "0"]


# -- invariants of the Rib under any sequence of updates and policy changes ----------------------
PREFIX_POOL = [N2_BLOCK, "10.244.2.0/27", N2_POD, "10.244.3.0/26", "0.0.0.0/0", "192.0.2.0/24",
               "198.51.100.0/24", "203.0.113.0/24", "10.244.9.0/26"]


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("announce"), st.sampled_from(["10.0.0.254", "10.0.0.2"]),
              st.lists(st.sampled_from(PREFIX_POOL), min_size=1, max_size=5),
              st.sampled_from(["10.0.0.254", "10.0.0.2", LOCAL_POD]), st.sampled_from([(), (65000,), (65101,)])),
    st.tuples(st.just("withdraw"), st.sampled_from(["10.0.0.254", "10.0.0.2"]),
              st.lists(st.sampled_from(PREFIX_POOL), min_size=1, max_size=3)),
    st.tuples(st.just("policy"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("down"), st.sampled_from(["10.0.0.254", "10.0.0.2"]))), max_size=25))
def test_rib_uses_only_what_the_current_policy_accepts_within_limits(steps: list[tuple[Any, ...]]) -> None:
    """Whatever arrives and however policy changes, a used path is one the current import check accepts,
    no peer has more used paths than its limit, a peer over its limit has none, held tables stay bounded."""
    state: dict[str, Any] = {"limit": 3, "reject_doc": False}

    def setup(rib: Rib) -> None:
        filters = [bgpfilter("f", importV4=[{"cidr": "192.0.2.0/24", "matchOperator": "Equal",
                                             "action": "Reject"}])] if state["reject_doc"] else []
        v = view_n1([bgppeer("tor", peerIP="10.0.0.254", asNumber=65000, maxPrefixes=state["limit"],
                             filters=["f"] if filters else [])], filters)
        index = v.guard.index()
        facts = {p.address: PeerFacts(p.address, p.peer_node, p.import_rules) for p in v.peers}
        rib.import_check = lambda peer, ann: import_reason(index, facts[peer], ann.prefix, ann.next_hop,
                                                          ann.attrs.as_path, ann.attrs.originator_id)
        old = dict(rib.limits)
        rib.limits = {p.address: p.max_prefixes for p in v.peers if p.max_prefixes}
        for addr in rib.limits:
            if old.get(addr) != rib.limits[addr]:
                rib.reset_limit(addr)

    rib = Rib(local_as=65101, router_id="10.0.0.1", local_addresses=("10.0.0.1",))
    setup(rib)
    for step in steps:
        if step[0] == "announce":
            _, peer, prefixes, nh, as_path = step
            peer_as = 65000 if peer == "10.0.0.254" else 65101
            rib.apply(UpdateEvent(peer=peer, local="10.0.0.1", peer_as=peer_as, local_as=65101, announces=tuple(
                Announce(p, nh, PathAttrs(as_path=as_path if peer_as != 65101 else ())) for p in prefixes)))
        elif step[0] == "withdraw":
            rib.apply(UpdateEvent(peer=step[1], local="10.0.0.1", withdraws=tuple(step[2])))
        elif step[0] == "policy":
            state["limit"], state["reject_doc"] = step[1], step[2]
            setup(rib)
            rib.refilter()
        else:
            rib.apply(StateEvent(peer=step[1], local=None, state="down"))
        for peer in rib.peers():
            used = [p for pfx in rib.prefixes() for p in rib.candidates(pfx) if p.peer == peer]
            for p in used:
                assert rib.import_check is not None
                assert rib.import_check(peer, Announce(p.prefix, p.next_hop, p.attrs)) is None, p
            limit = rib.limits.get(peer)
            if limit is not None:
                assert len(used) <= limit
                assert rib.held(peer) <= 2 * limit
            if peer in rib.over_limit:
                assert used == []


def test_an_address_two_nodes_claim_has_the_same_owner_whatever_order_the_set_iterates_in() -> None:
    """The context keeps workload addresses as a set; an address held by endpoints on two nodes (a
    hand-written endpoint can do it) gets the last node in sorted order as its owner, every time."""
    for nodes in (("n2", "n3"), ("n3", "n2"), ("n9", "n10")):
        ctx = build_import_context(pools=[POOL], block_owner=[], node_addresses=[], node_as=[], local_workloads=[],
                                   address_owner=frozenset(("10.244.2.5/32", n) for n in nodes))
        assert ctx.index().owner("10.244.2.5/32") == max(nodes)
        assert ctx.index().owner("10.244.2.6/32") is None

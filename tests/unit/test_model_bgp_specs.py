"""l3net.model.bgp_specs: the typed, normalised specs of Node's spec.bgp, BGPConfiguration and BGPPeer (issue 14).

Every field of each kind is converted from a document the model validated (as ``l3netctl`` and the agent's
``decode`` get it), absent fields are None (lists ``()``), values are normalised; the conversion runs once per
Resource object; a Resource the model did not validate is checked with the model's rules, never trusted.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model import bgp_specs
from l3net.model.bgp_specs import (
    BfdLayer,
    BGPConfigurationSpec,
    BGPPeerSpec,
    NamedCommunity,
    NodeBGP,
    Password,
    PrefixAdvertisement,
    SecretKeyRef,
    bfd_settings,
    bgp_configuration_spec,
    bgp_peer_spec,
    checked,
    node_bgp,
    typed_spec,
)
from l3net.model.decode import decode
from l3net.model.resource import Resource
from l3net.model.validate.bfd import BfdSettings
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/l3net-test/")
PLURAL = {"Node": "nodes", "BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers"}


def validated(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name},
                                   "spec": spec})


def decoded(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    """As the agent and the route reflector get it: the one decode of a stored value."""
    doc = {"apiVersion": "l3net.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    got = decode(KEYS, KEYS.resource(PLURAL[kind], name), json.dumps(doc).encode(), 7)
    assert isinstance(got, Resource), got
    return got


# -- Node ------------------------------------------------------------------------------------------
def test_node_every_field_normalised() -> None:
    res = validated("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.11/24", "ipv6Address": "FD00:0::0011/64",
                                           "asNumber": "1.10", "routeReflectorClusterID": "224.0.0.1"}})
    assert node_bgp(res) == NodeBGP(ipv4_address="10.0.0.11", ipv4_network="10.0.0.0/24",
                                    ipv6_address="fd00::11", ipv6_network="fd00::/64", as_number=65546,
                                    route_reflector_cluster_id="224.0.0.1")


def test_node_address_without_prefix_length_has_no_subnet() -> None:
    assert node_bgp(validated("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.11"}})) == \
        NodeBGP(ipv4_address="10.0.0.11")


@pytest.mark.parametrize("spec", [{}, {"bgp": {}}, {"bgp": None}])
def test_node_without_bgp_is_all_absent(spec: dict[str, Any]) -> None:
    assert node_bgp(validated("Node", "n1", spec)) == NodeBGP()


# -- BGPConfiguration ------------------------------------------------------------------------------
FULL_CONFIGURATION: dict[str, Any] = {
    "nodeToNodeMeshEnabled": False, "asNumber": 64513, "listenPort": 1790, "logSeverityScreen": "Debug",
    "keepaliveTime": "2.5s", "holdTime": "1.5m", "gracefulRestart": False, "restartTime": "1h8m15s",
    "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh.pw"}},
    "communities": [{"name": "pods", "value": "64512:100"}, {"name": "big", "value": "1:2:3"}],
    "prefixAdvertisements": [{"cidr": "10.244.0.0/16", "communities": ["pods", "65000:1"]},
                             {"cidr": "FD00:244::/48", "communities": ["big"]}, {"cidr": "10.96.0.0/12"}],
    "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "FD00:96:0::/108"}],
    "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}], "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}],
    "maxPrefixes": 5000,
    "bfd": {"enabled": True, "minRxInterval": "150ms", "minTxInterval": "1.5s", "multiplier": 5},
}


def test_configuration_every_field_normalised() -> None:
    assert bgp_configuration_spec(validated("BGPConfiguration", "default", FULL_CONFIGURATION)) == \
        BGPConfigurationSpec(
            node_to_node_mesh_enabled=False, as_number=64513, listen_port=1790, log_severity_screen="Debug",
            keepalive_time=2.5, hold_time=90, graceful_restart=False, restart_time=4095,
            node_mesh_password=Password(secret_key_ref=SecretKeyRef("bgp-secrets", "mesh.pw")),
            communities=(NamedCommunity("pods", "64512:100"), NamedCommunity("big", "1:2:3")),
            prefix_advertisements=(PrefixAdvertisement("10.244.0.0/16", ("64512:100", "65000:1")),
                                   PrefixAdvertisement("fd00:244::/48", ("1:2:3",)),
                                   PrefixAdvertisement("10.96.0.0/12", ())),
            service_cluster_ips=("10.96.0.0/12", "fd00:96::/108"), service_external_ips=("192.0.2.0/24",),
            service_load_balancer_ips=("198.51.100.0/24",), max_prefixes=5000,
            bfd=BfdLayer(enabled=True, min_rx_us=150_000, min_tx_us=1_500_000, multiplier=5))


def test_configuration_defaults_are_absent() -> None:
    spec = bgp_configuration_spec(validated("BGPConfiguration", "default", {}))
    assert spec == BGPConfigurationSpec()
    assert all(getattr(spec, f.name) in (None, ()) for f in dataclasses.fields(spec))


def test_configuration_inline_password_and_zero_hold_time() -> None:
    spec = bgp_configuration_spec(validated("BGPConfiguration", "default", {
        "nodeMeshPassword": {"value": "m3sh"}, "holdTime": "0", "keepaliveTime": "300ms"}))
    assert spec.node_mesh_password == Password(value="m3sh") and spec.hold_time == 0 and spec.keepalive_time == 0.3


def test_a_repeated_community_name_means_its_last_value() -> None:
    spec = bgp_configuration_spec(validated("BGPConfiguration", "default", {
        "communities": [{"name": "c", "value": "1:1"}, {"name": "c", "value": "2:2"}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}]}))
    assert spec.prefix_advertisements == (PrefixAdvertisement("10.0.0.0/8", ("2:2",)),)


# -- BGPPeer ---------------------------------------------------------------------------------------
FULL_PEER: dict[str, Any] = {
    "nodeSelector": "rack == 'a'", "peerIP": "[FD00::0009]:1790", "asNumber": "1.1", "keepaliveTime": "1m",
    "holdTime": "3m", "password": {"value": "s3cret"}, "sourceAddress": "None", "keepOriginalNextHop": True,
    "maxRestartTime": "2m", "ttlSecurity": 2, "maxPrefixes": 100, "filters": ["f2", "f1"],
    "bfd": {"multiplier": 4},
}


def test_peer_every_field_normalised() -> None:
    assert bgp_peer_spec(validated("BGPPeer", "p", FULL_PEER)) == BGPPeerSpec(
        node_selector="rack == 'a'", peer_ip="fd00::9", peer_port=1790, as_number=65537, keepalive_time=60.0,
        hold_time=180, password=Password(value="s3cret"), source_address="None", keep_original_next_hop=True,
        max_restart_time=120, ttl_security=2, max_prefixes=100, filters=("f2", "f1"), bfd=BfdLayer(multiplier=4))


def test_peer_selector_node_and_multihop() -> None:
    spec = bgp_peer_spec(validated("BGPPeer", "p", {"node": "n1", "peerSelector": "has(rr)"}))
    assert spec == BGPPeerSpec(node="n1", peer_selector="has(rr)")
    spec = bgp_peer_spec(validated("BGPPeer", "p", {"peerIP": "10.0.0.9", "asNumber": 65000, "ebgpMultihop": 3}))
    assert (spec.peer_ip, spec.peer_port, spec.as_number, spec.ebgp_multihop) == ("10.0.0.9", None, 65000, 3)


def test_peer_defaults_are_absent() -> None:
    spec = bgp_peer_spec(validated("BGPPeer", "p", {"peerSelector": "all()"}))
    assert spec == BGPPeerSpec(peer_selector="all()")
    assert spec.filters == () and spec.bfd is None and spec.password is None and spec.peer_port is None


def test_password_value_is_never_in_a_repr() -> None:
    spec = bgp_peer_spec(validated("BGPPeer", "p", {"peerIP": "10.0.0.9", "asNumber": 1,
                                                    "password": {"value": "hunter2"}}))
    assert "hunter2" not in repr(spec) and "hunter2" not in repr(spec.password)


# -- BFD layers ------------------------------------------------------------------------------------
def test_bfd_layers_merge_field_by_field() -> None:
    cluster = BfdLayer(enabled=True, min_rx_us=200_000)
    assert bfd_settings() == BfdSettings()
    assert bfd_settings(cluster, None, BfdLayer(multiplier=4, min_tx_us=1_000_000)) == \
        BfdSettings(True, 200_000, 1_000_000, 4)
    assert bfd_settings(cluster, BfdLayer(enabled=False)).enabled is False


# -- once per Resource, and only for what the model validated ---------------------------------------
def test_validation_marks_the_resource_and_decode_keeps_the_mark() -> None:
    res = decoded("BGPPeer", "p", {"peerIP": "10.0.0.9", "asNumber": 65000})
    assert res.validated and res.resource_version == 7
    assert dataclasses.replace(res, resource_version=8).validated, "same spec object"
    assert not dataclasses.replace(res, spec=dict(res.spec)).validated, "another spec: not what the model checked"
    assert not Resource("BGPPeer", "p", {"peerIP": "10.0.0.9", "asNumber": 65000}).validated
    assert res == Resource("BGPPeer", "p", dict(res.spec), resource_version=7), "the mark is not compared"


def test_a_validated_resource_is_converted_once_and_never_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    res = decoded("BGPConfiguration", "default", {"holdTime": "9s"})

    def no_check(_res: Resource) -> Any:
        raise AssertionError("a validated resource was checked again")

    monkeypatch.setattr(bgp_specs, "_check", no_check)
    first = typed_spec(res)
    assert first is typed_spec(res) is bgp_configuration_spec(res) is checked(res, BGPConfigurationSpec).spec
    assert checked(res, BGPConfigurationSpec).errors == ()


def test_typed_spec_dispatches_by_kind_and_refuses_other_kinds() -> None:
    assert isinstance(typed_spec(decoded("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24"}})), NodeBGP)
    assert isinstance(typed_spec(decoded("BGPPeer", "p", {"peerSelector": "all()"})), BGPPeerSpec)
    with pytest.raises(ValueError, match="no typed spec"):
        typed_spec(validated("IPPool", "p", {"cidr": "10.0.0.0/16"}))
    with pytest.raises(ValueError, match="has no BGPPeerSpec"):
        checked(decoded("Node", "n1", {}), BGPPeerSpec)


# -- the edge: a Resource the model did not validate --------------------------------------------------
def test_a_hand_built_valid_resource_is_checked_and_means_the_same() -> None:
    by_hand = Resource("BGPPeer", "p", dict(FULL_PEER))
    assert checked(by_hand, BGPPeerSpec).errors == ()
    assert bgp_peer_spec(by_hand) == bgp_peer_spec(validated("BGPPeer", "p", FULL_PEER))


def test_a_hand_built_refused_field_is_left_out_with_the_models_reason() -> None:
    res = Resource("BGPConfiguration", "default", {"holdTime": "90", "listenPort": 1790, "keepaliveTime": "3s"})
    got = checked(res, BGPConfigurationSpec)
    assert [(e.document, e.path) for e in got.errors] == [("BGPConfiguration/default", "spec.holdTime")]
    with pytest.raises(ValidationError) as exc:
        validated("BGPConfiguration", "default", dict(res.spec))
    assert [(e.path, e.reason) for e in exc.value.errors] == [(e.path, e.reason) for e in got.errors], "the model's own"
    assert got.spec == BGPConfigurationSpec(listen_port=1790, keepalive_time=3.0)
    with pytest.raises(ValidationError):
        typed_spec(res)


def test_a_hand_built_list_keeps_its_good_items() -> None:
    res = Resource("BGPConfiguration", "default", {
        "communities": [{"name": "ok", "value": "1:1"}, {"name": "bad", "value": "1:70000"}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["1:2", "nope"]}, {"cidr": "bad"}]})
    got = checked(res, BGPConfigurationSpec)
    assert {e.path for e in got.errors} == {"spec.communities[1].value", "spec.prefixAdvertisements[0].communities[1]",
                                            "spec.prefixAdvertisements[1].cidr"}
    assert got.spec.communities == (NamedCommunity("ok", "1:1"),)
    assert got.spec.prefix_advertisements == (PrefixAdvertisement("10.0.0.0/8", ("1:2",)),)


def test_a_hand_built_node_keeps_its_good_bgp_fields() -> None:
    res = Resource("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.1/24", "asNumber": "x",
                                          "routeReflectorClusterID": "1.1.1.1%x"}, "addresses": [{"address": "a"}]})
    got = checked(res, NodeBGP)
    assert {e.path for e in got.errors} == {"spec.bgp.asNumber", "spec.bgp.routeReflectorClusterID",
                                            "spec.addresses"}
    assert got.spec == NodeBGP(ipv4_address="10.0.0.1", ipv4_network="10.0.0.0/24")


@pytest.mark.parametrize("spec", ["text", 5, ["a"], {"bgp": "x"}])
def test_a_hand_built_spec_of_the_wrong_shape_is_refused_never_a_crash(spec: Any) -> None:
    for kind, typ in (("Node", NodeBGP), ("BGPConfiguration", BGPConfigurationSpec), ("BGPPeer", BGPPeerSpec)):
        got = checked(Resource(kind, "default", spec), typ)  # type: ignore[type-var]
        assert got.errors and got.spec == typ()


def test_a_per_node_configuration_follows_the_naming_rule() -> None:
    got = checked(Resource("BGPConfiguration", "node.n1", {"asNumber": 65001, "holdTime": "9s"}),
                  BGPConfigurationSpec)
    assert [e.path for e in got.errors] == ["spec.asNumber"] and got.spec == BGPConfigurationSpec(hold_time=9)

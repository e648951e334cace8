"""l3netctl's table: columns that echo a stored field show it as written; columns that interpret a spec (a BGP
peer's scope, a BGPFilter's rule counts) read the model's typed spec and print what they always printed."""

from __future__ import annotations

from typing import Any

import pytest

from l3net.cli.ctl import render_table
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def validated(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name},
                                   "spec": spec})


def test_bgp_peer_scope_is_node_then_node_selector_then_global() -> None:
    peers = [validated("BGPPeer", "a-node", {"peerIP": "10.0.0.1", "asNumber": 65001, "node": "n1"}),
             validated("BGPPeer", "b-racks", {"peerIP": "10.0.0.2:1790", "asNumber": "1.10",
                                              "nodeSelector": "rack == 'r1'"}),
             validated("BGPPeer", "c-global", {"peerIP": "fd00:0::3", "asNumber": 65003}),
             validated("BGPPeer", "d-mesh", {"peerSelector": "all()"})]
    assert render_table("BGPPeer", peers, all_namespaces=False) == (
        "NAME       PEERIP          NODE           ASN     PEERSELECTOR\n"
        "a-node     10.0.0.1        n1             65001\n"
        "b-racks    10.0.0.2:1790   rack == 'r1'   65546\n"
        "c-global   fd00:0::3       (global)       65003\n"
        "d-mesh                     (global)               all()\n")


def test_bgp_filter_rule_counts_per_direction_and_family() -> None:
    accept = {"action": "Accept"}
    filters = [validated("BGPFilter", "f1", {"importV4": [accept, {"action": "Reject", "cidr": "10.0.0.0/8",
                                                                    "matchOperator": "In"}],
                                             "exportV6": [accept]}),
               validated("BGPFilter", "f2", {})]
    assert render_table("BGPFilter", filters, all_namespaces=False) == (
        "NAME   IMPORTV4-RULES   EXPORTV4-RULES   IMPORTV6-RULES   EXPORTV6-RULES\n"
        "f1     2                0                0                1\n"
        "f2     0                0                0                0\n")


def test_echoed_fields_are_shown_as_written() -> None:
    pool = validated("IPPool", "v6", {"cidr": "fd00:0:0:1::/64", "disabled": True})
    node = validated("Node", "n1", {"bgp": {"ipv4Address": "10.0.0.11/24", "asNumber": 65001}})
    assert render_table("IPPool", [pool], all_namespaces=False).splitlines()[1].split() == [
        "v6", "fd00:0:0:1::/64", "122", "false", "true", "all()"]
    assert render_table("Node", [node], all_namespaces=False).splitlines()[1].split() == ["n1", "65001",
                                                                                           "10.0.0.11/24"]

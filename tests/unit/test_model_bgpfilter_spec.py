"""l3net.model.bgpfilter_spec: a BGPFilter's typed spec, the one parse of the rules bgp.policy compiles."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.bgpfilter_spec import BGPFilterRule, BGPFilterSpec, PrefixLength, bgpfilter_spec
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def bgpfilter(spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter",
                                   "metadata": {"name": "edge"}, "spec": spec})


FULL = {
    "exportV4": [{"action": "Reject", "matchOperator": "NotEqual", "cidr": "10.244.1.0/26"}],
    "importV4": [{"action": "Accept", "matchOperator": "Equal", "cidr": "0.0.0.0/0"},
                 {"action": "Accept", "matchOperator": "NotIn", "cidr": "192.168.0.0/16",
                  "prefixLength": {"min": 16, "max": 24}},
                 {"action": "Reject", "prefixLength": {"max": 8}},
                 {"action": "Reject"}],
    "exportV6": [{"action": "Accept", "prefixLength": {"min": 48}}],
    "importV6": [{"action": "Reject", "matchOperator": "In", "cidr": "FD00:0::/8"}],
}


def test_every_rule_parsed_once_in_order() -> None:
    res = bgpfilter(FULL)
    spec = bgpfilter_spec(res)
    assert spec == BGPFilterSpec(
        export_v4=(BGPFilterRule("Reject", ipaddress.ip_network("10.244.1.0/26"), "NotEqual"),),
        import_v4=(BGPFilterRule("Accept", ipaddress.ip_network("0.0.0.0/0"), "Equal"),
                   BGPFilterRule("Accept", ipaddress.ip_network("192.168.0.0/16"), "NotIn", PrefixLength(16, 24)),
                   BGPFilterRule("Reject", prefix_length=PrefixLength(max=8)),
                   BGPFilterRule("Reject")),
        export_v6=(BGPFilterRule("Accept", prefix_length=PrefixLength(min=48)),),
        import_v6=(BGPFilterRule("Reject", ipaddress.ip_network("fd00::/8"), "In"),))
    assert bgpfilter_spec(res) is spec
    assert spec.rules("import", 4) == spec.import_v4 and spec.rules("export", 6) == spec.export_v6


def test_absent_lists_are_empty() -> None:
    assert bgpfilter_spec(bgpfilter({})) == BGPFilterSpec()


@pytest.mark.parametrize(("rule", "path"), [
    ({"cidr": "fd00::/8", "matchOperator": "In", "action": "Accept"}, "spec.importV4[1].cidr"),
    ({"cidr": "10.0.0.1/8", "matchOperator": "In", "action": "Accept"}, "spec.importV4[1].cidr"),
    ({"cidr": "10.0.0.0/8", "action": "Reject"}, "spec.importV4[1].matchOperator"),
    ({"action": "Allow"}, "spec.importV4[1].action"),
    ({"prefixLength": {"min": 30, "max": 20}, "action": "Reject"}, "spec.importV4[1].prefixLength"),
    ({"prefixLength": {"max": 33}, "action": "Reject"}, "spec.importV4[1].prefixLength.max"),
])
def test_a_hand_built_filter_the_model_refuses_gets_no_typed_spec(rule: dict[str, Any], path: str) -> None:
    # a filter without its refused rule would pass what that rule rejects: no part of it is typed
    res = Resource(kind="BGPFilter", name="edge", spec={"importV4": [{"action": "Accept"}, rule]})
    with pytest.raises(ValidationError) as err:
        bgpfilter_spec(res)
    assert any(e.path == path for e in err.value.errors), err.value.errors


def test_a_hand_built_filter_the_model_accepts() -> None:
    res = Resource(kind="BGPFilter", name="edge", spec={"importV4": [{"action": "Reject"}]})
    assert bgpfilter_spec(res) == BGPFilterSpec(import_v4=(BGPFilterRule("Reject"),))


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind BGPFilter"):
        bgpfilter_spec(Resource(kind="BGPPeer", name="p", spec={"peerIP": "10.0.0.9", "asNumber": 65000}))

"""l3net.model.ippool_spec: an IPPool's typed spec, the one parse IPAM and the agent share."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.ipam.pools import pool_from_resource
from l3net.model.ippool_spec import IPPoolSpec, ippool_spec
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def pool(spec: dict[str, Any], name: str = "p1") -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                                   "metadata": {"name": name}, "spec": spec})


def test_defaults_are_the_models() -> None:
    assert ippool_spec(pool({"cidr": "10.244.0.0/16"})) == IPPoolSpec(
        cidr=ipaddress.ip_network("10.244.0.0/16"), block_size=26, node_selector="all()")
    assert ippool_spec(pool({"cidr": "fd00:244::/64"})).block_size == 122
    assert ippool_spec(pool({"cidr": "10.9.0.0/28"})).block_size == 28   # a pool smaller than a block


def test_every_field() -> None:
    spec = ippool_spec(pool({"cidr": "10.244.0.0/16", "blockSize": 24, "disabled": True, "natOutgoing": True,
                             "nodeSelector": "rack == 'a'", "namespaceSelector": "team == 'x'",
                             "disableBGPExport": True}))
    assert spec == IPPoolSpec(cidr=ipaddress.ip_network("10.244.0.0/16"), block_size=24, disabled=True,
                              nat_outgoing=True, node_selector="rack == 'a'", namespace_selector="team == 'x'",
                              disable_bgp_export=True)


def test_computed_once_per_resource() -> None:
    res = pool({"cidr": "10.244.0.0/16"})
    assert ippool_spec(res) is ippool_spec(res)


def test_a_hand_built_pool_is_validated_with_the_models_rules() -> None:
    ok = Resource(kind="IPPool", name="p", spec={"cidr": "10.244.0.0/16"})
    assert ippool_spec(ok).block_size == 26   # the model's default, not a reader's own
    for spec, path in (({"cidr": "10.244.0.1/16"}, "spec.cidr"), ({"cidr": "10.0.0.0/8", "blockSize": 40},
                                                                   "spec.blockSize"),
                       ({"cidr": "169.254.0.0/16"}, "spec.cidr"), ({}, "spec.cidr")):
        with pytest.raises(ValidationError) as err:
            ippool_spec(Resource(kind="IPPool", name="p", spec=spec))
        assert any(e.path == path for e in err.value.errors), (spec, err.value.errors)
    with pytest.raises(ValueError, match="not of kind IPPool"):
        ippool_spec(Resource(kind="Node", name="n", spec={}))


def test_ipam_and_the_agent_read_the_same_pool() -> None:
    from felix.calc import _pool

    res = pool({"cidr": "10.244.0.0/16", "blockSize": 28, "nodeSelector": "all()", "natOutgoing": True})
    ipam, agent = pool_from_resource(res), _pool("k", res)
    assert ipam.cidr == agent.cidr == ipaddress.ip_network("10.244.0.0/16")
    assert ipam.block_size == 28 and agent.nat_outgoing and ipam.namespace_selector == ""

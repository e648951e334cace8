"""l3net.model.networkset_spec: a (Global)NetworkSet's typed spec, the one parse of the nets policy matches."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.networkset_spec import NetworkSetSpec, networkset_spec
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def netset(kind: str, spec: dict[str, Any]) -> Resource:
    meta: dict[str, Any] = {"name": "s1", **({"namespace": "shop"} if kind == "NetworkSet" else {})}
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                                   "spec": spec})


@pytest.mark.parametrize("kind", ["NetworkSet", "GlobalNetworkSet"])
def test_every_net_parsed_once(kind: str) -> None:
    res = netset(kind, {"nets": ["192.0.2.0/24", "2001:db8:0::/64", "198.51.100.7/32"]})
    spec = networkset_spec(res)
    assert spec == NetworkSetSpec(nets=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/64"),
                                        ipaddress.ip_network("198.51.100.7/32")))
    assert networkset_spec(res) is spec


def test_absent_nets_are_empty() -> None:
    assert networkset_spec(netset("GlobalNetworkSet", {})) == NetworkSetSpec()


@pytest.mark.parametrize("nets", [["192.0.2.1/24"], ["192.0.2.1"], ["fe80::/64%eth0"], ["not-a-net"], [7]])
def test_a_hand_built_set_the_model_refuses_gets_no_typed_spec(nets: list[Any]) -> None:
    # policy once skipped an unparsable net and kept the rest; now the model refuses the set, naming the field
    res = Resource(kind="GlobalNetworkSet", name="s1", spec={"nets": ["10.0.0.0/8", *nets]})
    with pytest.raises(ValidationError) as err:
        networkset_spec(res)
    assert any(e.path == "spec.nets[1]" for e in err.value.errors), err.value.errors


def test_a_hand_built_set_the_model_accepts() -> None:
    res = Resource(kind="NetworkSet", name="s1", namespace="shop", spec={"nets": ["10.0.0.0/8"]})
    assert networkset_spec(res).nets == (ipaddress.ip_network("10.0.0.0/8"),)


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind NetworkSet or GlobalNetworkSet"):
        networkset_spec(Resource(kind="HostEndpoint", name="h", spec={"node": "n1", "interfaceName": "eth1"}))

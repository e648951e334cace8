"""l3net.model.hostendpoint_spec: a HostEndpoint's typed spec, the only way host policy reads its interface."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.hostendpoint_spec import HostEndpointSpec, hostendpoint_spec
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def hep(spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                                   "metadata": {"name": "n1-eth1"}, "spec": spec})


FULL = {"node": "n1", "interfaceName": "eth1", "expectedIPs": ["10.0.0.11", "fd00::11"], "profiles": [],
        "ports": []}


def test_every_field_parsed_once() -> None:
    res = hep(FULL)
    spec = hostendpoint_spec(res)
    assert spec == HostEndpointSpec(node="n1", interface_name="eth1",
                                    expected_ips=(ipaddress.ip_address("10.0.0.11"),
                                                  ipaddress.ip_address("fd00::11")))
    assert hostendpoint_spec(res) is spec


def test_absent_addresses_are_empty() -> None:
    assert hostendpoint_spec(hep({"node": "n1", "interfaceName": "eth1"})) == HostEndpointSpec("n1", "eth1")


@pytest.mark.parametrize(("field", "value"), [("interfaceName", "*"), ("interfaceName", "cali0123"),
                                              ("interfaceName", "eth1 -j ACCEPT"),
                                              ("expectedIPs", ["10.0.0.0/24"]), ("expectedIPs", ["fe80::1%eth1"]),
                                              ("ports", [{"name": "web", "port": 80, "protocol": "TCP"}])])
def test_a_hand_built_endpoint_the_model_refuses_gets_no_typed_spec(field: str, value: Any) -> None:
    # the interface name reaches iptables as -i/-o: a wildcard or a workload's interface must never pass
    res = Resource(kind="HostEndpoint", name="n1-eth1", spec={**FULL, field: value})
    with pytest.raises(ValidationError) as err:
        hostendpoint_spec(res)
    assert any(e.path.startswith(f"spec.{field}") for e in err.value.errors)


def test_a_hand_built_endpoint_the_model_accepts() -> None:
    res = Resource(kind="HostEndpoint", name="n1-eth1", spec={"node": "n1", "interfaceName": "eth1"})
    assert hostendpoint_spec(res).interface_name == "eth1"


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind HostEndpoint"):
        hostendpoint_spec(Resource(kind="WorkloadEndpoint", name="w", spec={"node": "n1"}))

"""l3net.model.workload_spec: a WorkloadEndpoint's typed spec, the only way the agent reads what it wires."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document
from l3net.model.workload_spec import WorkloadPort, WorkloadSpec, workload_spec

pytestmark = pytest.mark.unit


def wep(spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
                                   "metadata": {"name": "n1-k8s-web-eth0", "namespace": "shop"}, "spec": spec})


FULL = {"node": "n1", "orchestrator": "k8s", "pod": "web", "endpoint": "eth0", "containerID": "c1",
        "ipNetworks": ["10.244.1.2/32", "fd00::2/128"], "interfaceName": "cali0123456789a",
        "mac": "EE:EE:EE:EE:EE:01", "ports": [{"name": "http", "port": 80}, {"name": "dns", "protocol": "UDP",
                                                                              "port": 53}],
        "serviceAccountName": "web"}


def test_every_field_parsed_once() -> None:
    res = wep(FULL)
    spec = workload_spec(res)
    assert spec == WorkloadSpec(
        node="n1", interface_name="cali0123456789a",
        ip_networks=(ipaddress.ip_network("10.244.1.2/32"), ipaddress.ip_network("fd00::2/128")),
        orchestrator="k8s", pod="web", endpoint="eth0", container_id="c1", mac="ee:ee:ee:ee:ee:01",
        ports=(WorkloadPort("http", "TCP", 80), WorkloadPort("dns", "UDP", 53)), service_account_name="web")
    assert workload_spec(res) is spec


def test_absent_is_none() -> None:
    assert workload_spec(wep({"node": "n1"})) == WorkloadSpec(node="n1")


@pytest.mark.parametrize(("field", "value"), [("interfaceName", "eth0"), ("interfaceName", "cali+"),
                                              ("ipNetworks", ["10.244.1.0/24"]), ("ipNetworks", ["127.0.0.1/32"]),
                                              ("ipNetworks", ["fe80::1%eth0/128"])])
def test_a_hand_built_endpoint_the_model_refuses_gets_no_typed_spec(field: str, value: Any) -> None:
    # the agent routes and proxy-ARPs what this returns: a node interface or a foreign network must never pass
    res = Resource(kind="WorkloadEndpoint", name="n1-k8s-web-eth0", namespace="shop",
                   spec={**FULL, field: value})
    with pytest.raises(ValidationError) as err:
        workload_spec(res)
    assert any(e.path.startswith(f"spec.{field}") for e in err.value.errors)


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind WorkloadEndpoint"):
        workload_spec(Resource(kind="IPPool", name="p", spec={}))

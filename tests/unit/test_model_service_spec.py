"""l3net.model.service_spec: a Service's typed spec, the one parse of the addresses the agent may announce."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.resource import Resource
from l3net.model.service_spec import ServiceSpec, service_spec
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

ip = ipaddress.ip_address


def svc(spec: dict[str, Any]) -> Resource:
    return resource_from_document({"apiVersion": "l3net.io/v1", "kind": "Service",
                                   "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})


FULL = {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"], "externalIPs": ["192.0.2.7"],
        "loadBalancerIPs": ["198.51.100.5", "2001:db8::5"], "externalTrafficPolicy": "Local",
        "selector": {"tier": "1", "app": "web"}}


def test_every_field_parsed_once() -> None:
    res = svc(FULL)
    spec = service_spec(res)
    assert spec == ServiceSpec(cluster_ip=ip("10.96.0.10"), cluster_ips=(ip("10.96.0.10"), ip("fd00:96::a")),
                               external_ips=(ip("192.0.2.7"),), load_balancer_ips=(ip("198.51.100.5"),
                                                                                  ip("2001:db8::5")),
                               external_traffic_policy="Local", selector=(("app", "web"), ("tier", "1")))
    assert service_spec(res) is spec


def test_absent_is_none() -> None:
    assert service_spec(svc({})) == ServiceSpec()


@pytest.mark.parametrize(("spec", "want"), [
    ({"clusterIP": "10.96.0.10"}, (ip("10.96.0.10"),)),                     # clusterIPs defaulted from it
    ({"clusterIPs": ["fd00:96::a", "10.96.0.10"]}, (ip("fd00:96::a"), ip("10.96.0.10"))),   # primary first
])
def test_cluster_ips_as_the_api_server_fills_them_in(spec: dict[str, Any], want: tuple[Any, ...]) -> None:
    got = service_spec(svc(spec))
    assert got.cluster_ips == want and got.cluster_ip == want[0] and not got.headless


@pytest.mark.parametrize("spec", [{"clusterIP": "None"}, {"clusterIPs": ["None"]},
                                  {"clusterIP": "None", "clusterIPs": ["None"]}])
def test_headless_has_no_cluster_ip(spec: dict[str, Any]) -> None:
    assert service_spec(svc(spec)) == ServiceSpec(headless=True)


@pytest.mark.parametrize(("field", "value"), [("clusterIP", "10.96.0.300"), ("clusterIPs", ["None", "10.96.0.2"]),
                                              ("externalIPs", ["192.0.2.0/24"]),
                                              ("loadBalancerIPs", ["fd00::5%eth0"]),
                                              ("externalTrafficPolicy", "Nearby"), ("selector", {"app": 3})])
def test_a_hand_built_service_the_model_refuses_gets_no_typed_spec(field: str, value: Any) -> None:
    res = Resource(kind="Service", name="web", namespace="shop", spec={**FULL, field: value})
    with pytest.raises(ValidationError) as err:
        service_spec(res)
    assert any(e.path.startswith(f"spec.{field}") for e in err.value.errors), err.value.errors


def test_a_hand_built_service_the_model_accepts() -> None:
    res = Resource(kind="Service", name="web", namespace="shop", spec={"clusterIP": "10.96.0.10"})
    assert service_spec(res).cluster_ips == (ip("10.96.0.10"),)


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind Service"):
        service_spec(Resource(kind="WorkloadEndpoint", name="w", spec={"node": "n1"}))

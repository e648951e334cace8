"""l3net.model: the Service kind and the BGPConfiguration service fields, validated like every kind."""

from __future__ import annotations

from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.documents import load_documents
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def _svc(spec: dict[str, Any], namespace: str | None = "shop") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "l3net.io/v1", "kind": "Service", "metadata": meta, "spec": spec}


def _errors(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as ei:
        resource_from_document(doc)
    return {e.path: e.reason for e in ei.value.errors}


def test_a_service_applies_with_every_field() -> None:
    text = """
apiVersion: l3net.io/v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::a"]
  externalIPs: [192.0.2.7]
  loadBalancerIPs: [198.51.100.5]
  externalTrafficPolicy: Local
  selector: {app: web}
"""
    [res] = load_documents(text, "svc.yaml")
    assert (res.kind, res.namespace, res.name) == ("Service", "shop", "web")
    assert res.spec["loadBalancerIPs"] == ["198.51.100.5"]
    assert resource_from_document(_svc({"clusterIP": "None"})).spec == {"clusterIP": "None"}


@pytest.mark.parametrize(("spec", "path", "words"), [
    ({"clusterIP": "10.96.0.300"}, "spec.clusterIP", "not a valid IP address"),
    ({"clusterIP": 7}, "spec.clusterIP", "must be an IP address or 'None'"),
    ({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"]}, "spec.clusterIPs[0]", "must equal clusterIP"),
    ({"clusterIPs": ["None", "10.96.0.2"]}, "spec.clusterIPs", "headless"),
    ({"externalIPs": ["192.0.2.0/24"]}, "spec.externalIPs[0]", "not a valid IP address"),
    ({"loadBalancerIPs": ["198.51.100.5", "198.51.100.5"]}, "spec.loadBalancerIPs[1]", "duplicate"),
    ({"externalTrafficPolicy": "Nearby"}, "spec.externalTrafficPolicy", ""),
    ({"selector": {"app": 3}}, "spec.selector.app", ""),
    ({"ports": [{"port": 80}]}, "spec.ports", "unknown field"),
])
def test_bad_service_fields_are_refused_by_name(spec: dict[str, Any], path: str, words: str) -> None:
    errors = _errors(_svc(spec))
    assert path in errors, errors
    assert words in errors[path]


def test_a_service_is_namespaced_in_default_unless_told() -> None:
    assert resource_from_document(_svc({}, namespace=None)).namespace == "default"
    assert resource_from_document(_svc({})).ref == "Service/shop/web"


def _bgpconf(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": name},
            "spec": spec}


def test_service_cidrs_apply_on_the_default_configuration_only() -> None:
    spec = {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}], "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
            "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]}
    assert resource_from_document(_bgpconf("default", spec)).spec == spec
    errors = _errors(_bgpconf("node.n1", spec))
    for field in spec:
        assert "only be set in the BGPConfiguration named 'default'" in errors[f"spec.{field}"]
    assert "cidr" in " ".join(_errors(_bgpconf("default", {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]})))

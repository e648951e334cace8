"""IPPool ``namespaceSelector`` (as Calico 3.31): a pod's namespace labels choose its pool (real etcd)."""

from __future__ import annotations

import pytest

from l3net.datastore import EtcdDatastore
from l3net.errors import ValidationError
from l3net.ipam import IPAM, NoAddresses
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.integration


def doc(kind: str, name: str, spec: dict | None = None, labels: dict | None = None) -> dict:
    api = "v1" if kind == "Namespace" else "l3net.io/v1"
    out: dict = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "labels": labels or {}}}
    if spec is not None:
        out["spec"] = spec
    return out


def test_namespace_selector_chooses_the_pool(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    client = ResourceClient(datastore, key_layout)
    client.apply([resource_from_document(d) for d in (
        doc("IPPool", "team-a", {"cidr": "10.50.0.0/24", "namespaceSelector": "team == 'a'"}),
        doc("IPPool", "rest", {"cidr": "10.60.0.0/24", "namespaceSelector": "!has(team)"}),
        doc("IPPool", "kube-system-only", {"cidr": "10.70.0.0/24",
                                           "namespaceSelector": "projectcalico.org/name == 'kube-system'"}),
        doc("Node", "n1", {}),
        doc("Namespace", "shop", labels={"team": "a"}),
        doc("Namespace", "blue", labels={"team": "b"}),
    )])
    ipam = IPAM(datastore, key_layout)
    shop = ipam.auto_assign("net.c1", "n1", {"namespace": "shop", "pod": "p"})[0]
    other = ipam.auto_assign("net.c2", "n1", {"namespace": "default", "pod": "p"})[0]
    assert shop.startswith("10.50.0.") and other.startswith("10.60.0.")
    with pytest.raises(NoAddresses, match="namespace 'blue'"):
        ipam.auto_assign("net.c3", "n1", {"namespace": "blue", "pod": "p"})
    assert ipam.handle_ips("net.c3") == []
    # without a namespace (l3netctl, the lab's plain pods) the selector does not narrow
    assert ipam.auto_assign("net.c4", "n1", {"pod": "p"})


def test_bad_namespace_selector_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"spec\.namespaceSelector"):
        resource_from_document(doc("IPPool", "x", {"cidr": "10.80.0.0/24", "namespaceSelector": "team == "}))


def test_an_invalid_node_or_namespace_is_absent_and_only_pools_selecting_everything_serve_it(
        datastore: EtcdDatastore, key_layout: KeyLayout, caplog: pytest.LogCaptureFixture) -> None:
    client = ResourceClient(datastore, key_layout)
    client.apply([resource_from_document(d) for d in (
        doc("IPPool", "zone-a", {"cidr": "10.51.0.0/24", "nodeSelector": "zone == 'a'"}),
        doc("IPPool", "no-zone", {"cidr": "10.52.0.0/24", "nodeSelector": "!has(zone)"}),
        doc("IPPool", "team-a", {"cidr": "10.53.0.0/24", "namespaceSelector": "team == 'a'"}),
    )])
    node_key = key_layout.resource("nodes", "n1")
    ns_key = key_layout.resource("namespaces", "shop")
    # Written behind the model's back (as a broken tool would): the labels read fine, the objects do not.
    datastore.put(node_key, b'{"apiVersion": "l3net.io/v1", "kind": "Node", "metadata": {"name": "n1", '
                            b'"labels": {"zone": "a"}}, "spec": {"bgp": {"asNumber": "x"}}}')
    datastore.put(ns_key, b'{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", '
                          b'"labels": {"team": "a"}}, "spec": {"x": 1}}')
    ipam = IPAM(datastore, key_layout)
    with pytest.raises(NoAddresses, match="no enabled IPv4 pool selects node 'n1'"):
        ipam.auto_assign("net.c1", "n1", {"namespace": "default", "pod": "p"})
    assert f"treating malformed resource as absent key={node_key}" in caplog.text
    assert "spec.bgp.asNumber" in caplog.text

    client.apply([resource_from_document(doc("Node", "n1", {}, labels={"zone": "a"}))])   # the Node fixed
    assert ipam.auto_assign("net.c2", "n1", {"namespace": "default", "pod": "p"})[0].startswith("10.51.0.")
    with pytest.raises(NoAddresses, match="namespace 'shop'"):   # team-a cannot read it; zone-a is not for it
        ipam.auto_assign("net.c3", "n1", {"namespace": "shop", "pod": "p"}, pools=["team-a"])
    assert f"treating malformed resource as absent key={ns_key}" in caplog.text and "spec.x" in caplog.text
    client.apply([resource_from_document(doc("Namespace", "shop", labels={"team": "a"}))])   # fixed
    assert ipam.auto_assign("net.c4", "n1", {"namespace": "shop", "pod": "p"},
                            pools=["team-a"])[0].startswith("10.53.0.")

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

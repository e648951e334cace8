"""ResourceClient logic against the in-memory datastore (the same behaviour runs on real etcd in
tests/integration/test_ctl_etcd.py)."""

from __future__ import annotations

import json

import pytest

from l3net.datastore import Create, Put
from l3net.datastore.memory import MemoryDatastore
from l3net.errors import Conflict, ValidationError
from l3net.keys import KeyLayout
from l3net.model.client import AlreadyExists, NotFound, ResourceClient
from l3net.model.documents import load_documents

pytestmark = pytest.mark.unit


def _pool(name: str, cidr: str) -> str:
    return f"apiVersion: l3net.io/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n"


@pytest.fixture
def client() -> ResourceClient:
    return ResourceClient(MemoryDatastore(), KeyLayout("/t/"))


def _dump(c: ResourceClient) -> list[tuple[str, bytes]]:
    kvs, _ = c.ds.list("/t/")
    return [(kv.key, kv.value) for kv in kvs]


def test_apply_get_list_delete_roundtrip(client: ResourceClient) -> None:
    (stored,) = client.apply(load_documents(_pool("a", "10.0.0.0/16"), "f"))
    got = client.get("IPPool", "a")
    assert got is not None and got.spec["cidr"] == "10.0.0.0/16" and got.resource_version == stored.resource_version
    uid = got.extra_metadata["uid"]
    assert got.extra_metadata["creationTimestamp"].endswith("Z")
    client.apply(load_documents(_pool("a", "10.0.0.0/16").replace("cidr", "natOutgoing: true\n  cidr"), "f"))
    again = client.get("ippools", "a")
    assert again is not None and again.spec["natOutgoing"] is True and again.extra_metadata["uid"] == uid
    assert [r.name for r in client.list("IPPool")] == ["a"]
    client.delete_one("IPPool", "a")
    assert client.get("IPPool", "a") is None
    with pytest.raises(NotFound):
        client.delete_one("IPPool", "a")


def test_create_and_replace_semantics_change_nothing_on_failure(client: ResourceClient) -> None:
    client.create(load_documents(_pool("a", "10.0.0.0/16"), "f"))
    before = _dump(client)
    with pytest.raises(AlreadyExists):
        client.create(load_documents(_pool("b", "10.1.0.0/16") + "---\n" + _pool("a", "10.0.0.0/16"), "f"))
    with pytest.raises(NotFound):
        client.replace(load_documents(_pool("a", "10.0.0.0/16") + "---\n" + _pool("c", "10.2.0.0/16"), "f"))
    assert _dump(client) == before


def test_stored_pool_overlap_is_refused_naming_both(client: ResourceClient) -> None:
    client.apply(load_documents(_pool("a", "10.0.0.0/16"), "f"))
    before = _dump(client)
    with pytest.raises(ValidationError) as ei:
        client.apply(load_documents(_pool("ok", "10.9.0.0/16") + "---\n" + _pool("b", "10.0.4.0/24"), "f"))
    (err,) = ei.value.errors
    assert err.path == "spec.cidr" and "IPPool b" in err.reason and "IPPool a" in err.reason
    assert _dump(client) == before
    # a pool's CIDR is immutable (its blocks would be orphaned)
    with pytest.raises(ValidationError, match="cannot be changed"):
        client.apply(load_documents(_pool("a", "10.0.0.0/15"), "f"))
    assert _dump(client) == before


def test_bgppeer_with_nodes_own_address_is_refused(client: ResourceClient) -> None:
    node = "apiVersion: l3net.io/v1\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {ipv4Address: 10.0.0.11/24}}\n"
    client.apply(load_documents(node, "n"))
    peer = ("apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: p}\n"
            "spec: {node: n1, peerIP: '10.0.0.11:179', asNumber: 65000}\n")
    with pytest.raises(ValidationError) as ei:
        client.apply(load_documents(peer, "p"))
    assert ei.value.errors[0].path == "spec.peerIP" and "own address" in ei.value.errors[0].reason
    client.apply(load_documents(peer.replace("10.0.0.11", "10.0.0.12"), "p"))


def test_resource_version_is_a_cas(client: ResourceClient) -> None:
    (stored,) = client.apply(load_documents(_pool("a", "10.0.0.0/16"), "f"))
    client.apply(load_documents(_pool("a", "10.0.0.0/16").replace("cidr", "disabled: true\n  cidr"), "f"))
    stale = load_documents(_pool("a", "10.0.0.0/16").replace("name: a", f"name: a\n  resourceVersion: "
                                                                        f"'{stored.resource_version}'"), "f")
    with pytest.raises(Conflict):
        client.replace(stale)


def test_namespaced_defaults_and_listing(client: ResourceClient) -> None:
    np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {n}\n{ns}spec: {{}}\n"
    client.apply(load_documents(np.format(n="a", ns="") + "---\n" + np.format(n="b", ns="  namespace: prod\n"), "f"))
    assert [r.ref for r in client.list("NetworkPolicy", "default")] == ["NetworkPolicy/default/a"]
    assert [r.ref for r in client.list("NetworkPolicy")] == ["NetworkPolicy/default/a", "NetworkPolicy/prod/b"]
    assert client.get("NetworkPolicy", "a") is not None and client.get("NetworkPolicy", "b") is None


def test_malformed_stored_values(client: ResourceClient) -> None:
    keys = client.keys
    client.ds.commit([Create(keys.resource("ippools", "junk"), b"{not json"),
                      Put(keys.resource("ippools", "wrong"), json.dumps(
                          {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "other"},
                           "spec": {"cidr": "10.0.0.0/16"}}).encode())])
    with pytest.raises(ValidationError):
        client.get("IPPool", "junk")
    with pytest.raises(ValidationError, match="does not match its key"):
        client.get("IPPool", "wrong")
    assert client.list("IPPool") == []  # bad data is absence
    client.delete_one("IPPool", "junk")  # and can still be cleaned up

"""The agent's own records in a real etcd: Node registration (CAS), the default pool, the leased status."""

from __future__ import annotations

import json
import time

import pytest

from felix.registration import ensure_default_pool, register_node
from l3net.datastore import EtcdDatastore
from l3net.errors import DatastoreUnavailable
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.nodestatus import StatusPublisher

pytestmark = pytest.mark.integration


def test_register_creates_then_updates_keeping_other_fields(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    key = key_layout.resource("nodes", "n1")
    register_node(datastore, key_layout, "n1", "10.0.0.1/24", None)
    doc = json.loads(datastore.get(key).value)
    assert doc["spec"] == {"bgp": {"ipv4Address": "10.0.0.1/24"}}
    # An operator adds a route reflector cluster ID and a label; re-registration keeps both.
    other = Resource(kind="Node", name="n1", labels={"rack": "r1"},
                     spec={"bgp": {"ipv4Address": "10.0.0.1/24", "routeReflectorClusterID": "224.0.0.1"}})
    datastore.put(key, other.to_json())
    rev = datastore.get(key).mod_revision
    register_node(datastore, key_layout, "n1", "10.0.0.1/24", None)
    assert datastore.get(key).mod_revision == rev  # nothing changed: no write
    register_node(datastore, key_layout, "n1", "10.0.0.9/24", 64600)
    doc = json.loads(datastore.get(key).value)
    assert doc["spec"]["bgp"] == {"ipv4Address": "10.0.0.9/24", "routeReflectorClusterID": "224.0.0.1",
                                  "asNumber": 64600}
    assert doc["metadata"]["labels"] == {"rack": "r1"}


def test_default_pool_only_when_asked_and_none_exists(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    assert ensure_default_pool(datastore, key_layout, "192.168.0.0/16")
    assert not ensure_default_pool(datastore, key_layout, "10.0.0.0/8")
    kvs, _ = datastore.list(key_layout.resource_dir("ippools"))
    assert [json.loads(kv.value)["spec"]["cidr"] for kv in kvs] == ["192.168.0.0/16"]


def test_status_is_leased_and_updated(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    pub = StatusPublisher(datastore, key_layout, "n1", ttl=5)
    pub.start()
    key = key_layout.node_status("n1", "agent")
    try:
        pub.update(ready=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kv = datastore.get(key)
            if kv is not None and json.loads(kv.value).get("ready") is True:
                break
            time.sleep(0.05)
        assert kv is not None and json.loads(kv.value).get("ready") is True, kv
        assert kv.lease != 0
        assert json.loads(kv.value)["node"] == "n1"
    finally:
        pub.stop()
    assert datastore.get(key) is None  # lease revoked on a clean stop


class _BuggyPuts:
    """The real datastore, except that ``put`` raises what it is told to (an outage or a bug)."""

    def __init__(self, ds: EtcdDatastore, exc: BaseException) -> None:
        self._ds, self.exc, self.puts = ds, exc, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._ds, name)

    def put(self, *args: object, **kwargs: object) -> object:
        self.puts += 1
        raise self.exc


def test_status_outage_is_retried_but_a_bug_is_handed_to_on_fatal(datastore: EtcdDatastore,
                                                                 key_layout: KeyLayout) -> None:
    died: list[BaseException] = []
    outage = _BuggyPuts(datastore, DatastoreUnavailable("etcd down"))
    pub = StatusPublisher(outage, key_layout, "n1", ttl=5)  # type: ignore[arg-type]
    pub.start(on_fatal=died.append)
    try:
        deadline = time.monotonic() + 10
        while outage.puts < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outage.puts >= 2 and not died and pub._thread.is_alive()  # retried, still running
    finally:
        pub.stop()
    bug = _BuggyPuts(datastore, TypeError("not JSON serializable"))
    pub = StatusPublisher(bug, key_layout, "n2", ttl=5)  # type: ignore[arg-type]
    pub.start(on_fatal=died.append)
    pub._thread.join(timeout=10)
    assert not pub._thread.is_alive() and len(died) == 1 and isinstance(died[0], TypeError)
    pub.stop()

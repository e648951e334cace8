"""The agent's own records in a real etcd: Node registration (CAS), the default pool, the leased status."""

from __future__ import annotations

import collections
import dataclasses
import json
import time

import pytest

from bgp import status as bgp_status
from bgp.bfd import status as bfd_status
from bgp.bfd.speaker import SessionStatus
from bgp.peer_status import PeerStatus
from felix.registration import ensure_default_pool, register_node
from l3net.datastore import EtcdDatastore
from l3net.errors import DatastoreUnavailable
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.nodestatus import StatusPublisher
from tests.waiting import wait_for

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
        kv = wait_for(lambda: (got := datastore.get(key)) is not None and json.loads(got.value).get("ready") is True
                      and got, 10, "the status key to say ready")
        assert kv.lease != 0
        assert json.loads(kv.value)["node"] == "n1"
    finally:
        pub.stop()
    assert datastore.get(key) is None  # lease revoked on a clean stop


class _CountingPuts:
    """The real datastore, counting the puts per key."""

    def __init__(self, ds: EtcdDatastore) -> None:
        self._ds, self.puts = ds, collections.Counter[str]()

    def __getattr__(self, name: str) -> object:
        return getattr(self._ds, name)

    def put(self, key: str, *args: object, **kwargs: object) -> object:
        self.puts[key] += 1
        return self._ds.put(key, *args, **kwargs)


def test_status_batches_the_per_workload_counts_and_writes_the_rest_at_once(datastore: EtcdDatastore,
                                                                            key_layout: KeyLayout) -> None:
    counting = _CountingPuts(datastore)
    pub = StatusPublisher(counting, key_layout, "n1", ttl=30, batch_interval=60)  # type: ignore[arg-type]
    key, bgp_key = key_layout.node_status("n1", "agent"), key_layout.node_status("n1", "bgp")

    def record() -> dict[str, object]:
        kv = datastore.get(key)
        return json.loads(kv.value) if kv is not None else {}

    pub.update(ready=True, routes=1, localEndpoints=1)
    pub.start()
    try:
        wait_for(lambda: record().get("routes") == 1, what="the first record, at once")
        first = counting.puts[key]
        for n in range(2, 12):  # what every ADD anywhere in the cluster does to every agent's record
            pub.update(routes=n, localEndpoints=n)
        time.sleep(1.5)
        assert counting.puts[key] == first and record()["routes"] == 1, "route counts alone must wait their turn"
        pub.update(ready=False, notReady=["bgp"])  # readiness is written at once, the pending counts with it
        got = wait_for(lambda: record() if record().get("ready") is False else None, what="readiness at once")
        assert got["routes"] == 11 and got["localEndpoints"] == 11 and counting.puts[key] == first + 1
        def table() -> dict[str, object]:
            kv = datastore.get(bgp_key)
            return json.loads(kv.value) if kv is not None else {}

        pub.put_extra(bgp_key, {"peer": "up", "routes": 1}, urgent_part="up")
        wait_for(lambda: table().get("routes") == 1, what="an extra key at once")
        stamped = table()["updated"]
        assert isinstance(stamped, float) and abs(stamped - time.time()) < 60, "the write carries its time"
        pub.put_extra(bgp_key, {"peer": "up", "routes": 1}, urgent_part="up")  # unchanged: not written again
        pub.put_extra(bgp_key, {"peer": "up", "routes": 2}, urgent_part="up")  # only the counts moved: it waits
        time.sleep(1.5)
        assert counting.puts[bgp_key] == 1 and table() == {"peer": "up", "routes": 1, "updated": stamped}
        pub.put_extra(bgp_key, {"peer": "down", "routes": 2}, urgent_part="down")  # the state moved: at once
        wait_for(lambda: table().get("peer") == "down" and table().get("routes") == 2, what="a peer's state at once")
        pub.update(ready=True)  # the record changes, the extra key does not
        wait_for(lambda: record().get("ready") is True, what="readiness back")
        assert counting.puts[bgp_key] == 2 and counting.puts[key] == first + 2
    finally:
        pub.stop()


def test_tables_handed_over_on_every_tick_are_written_only_when_they_change(datastore: EtcdDatastore,
                                                                            key_layout: KeyLayout) -> None:
    """The route reflector hands its BGP and BFD tables to the publisher on every tick of its loop (2 s). A
    standing table must write nothing: each write reaches every watcher of the key, and the tables once
    carried the time they were encoded, so every tick rewrote both keys."""
    counting = _CountingPuts(datastore)
    pub = StatusPublisher(counting, key_layout, "rr1", ttl=30, batch_interval=0.2)  # type: ignore[arg-type]
    bgp_key, bfd_key = key_layout.node_status("rr1", "bgp"), key_layout.node_status("rr1", "bfd")
    peer = PeerStatus(name="n1", address="10.0.0.1", peer_type="route reflector client", state="up", since=1.0,
                      info="Established", received=3, advertised=5, peer_as=64512)
    session = SessionStatus(peer="10.0.0.1", multihop=False, state="up", remote_state="up", local_diag="none",
                            local_discr=1, remote_discr=2, tx_interval_ms=300.0, detection_time_ms=900.0,
                            transitions=1, down_events=0, since=1.0)

    def tick(advertised: int = 5) -> None:
        bgp_status.keep(pub, key_layout, "rr1", [dataclasses.replace(peer, advertised=advertised)],
                        as_number=64512, router_id="10.0.0.9", errors=[])
        pub.put_extra(bfd_key, bfd_status.document("rr1", [session]))

    pub.start()
    try:
        tick()
        wait_for(lambda: datastore.get(bgp_key) is not None and datastore.get(bfd_key) is not None,
                 what="both tables, at once")
        for _ in range(8):  # 8 ticks of a standing table, well past the batch interval
            tick()
            time.sleep(0.1)
        assert counting.puts[bgp_key] == 1 and counting.puts[bfd_key] == 1, dict(counting.puts)
        tick(advertised=6)  # a count moved: written with the next batch
        wait_for(lambda: bgp_status.read(datastore, key_layout, "rr1").peers[0].advertised == 6,  # type: ignore[union-attr]
                 what="the new count")
        assert counting.puts[bgp_key] == 2 and counting.puts[bfd_key] == 1
        assert bfd_status.read(datastore, key_layout, "rr1")[0]["state"] == "up"  # type: ignore[index]
    finally:
        pub.stop()


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
        wait_for(lambda: outage.puts >= 2, 10, "two status writes")
        assert outage.puts >= 2 and not died and pub._thread.is_alive()  # retried, still running
    finally:
        pub.stop()
    bug = _BuggyPuts(datastore, TypeError("not JSON serializable"))
    pub = StatusPublisher(bug, key_layout, "n2", ttl=5)  # type: ignore[arg-type]
    pub.start(on_fatal=died.append)
    pub._thread.join(timeout=10)
    assert not pub._thread.is_alive() and len(died) == 1 and isinstance(died[0], TypeError)
    pub.stop()

"""Issue 12 against a real etcd: keys and values no decoder can read, written raw, are absent for every
consumer (etcd client listing and watch, the syncer, the agent's model, the resource client) while the
other keys of the same listing and watch batch arrive and the syncer stays alive."""

from __future__ import annotations

import base64

import pytest

from felix.calc import Model
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.resource import Resource
from l3net.syncer import Syncer
from tests.waiting import seconds_until

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000 + b"]" * 100_000


def put_raw(ds: EtcdDatastore, key: bytes, value: bytes) -> None:
    """A key exactly as given (not necessarily UTF-8), as another etcd client could write it."""
    ds._post("/kv/put", {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()},
             write=True)


def pool(name: str, cidr: str) -> Resource:
    return Resource(kind="IPPool", name=name, spec={"cidr": cidr})


class ModelSink:
    """The agent's model behind a real syncer (what felix.loop does, minus the dataplane)."""

    def __init__(self, keys: KeyLayout) -> None:
        self.model = Model(keys)
        self.in_sync = 0

    def on_updates(self, updates: list) -> None:
        self.model.apply(updates)

    def on_in_sync(self) -> None:
        self.in_sync += 1

    def on_status(self, status: str) -> None:
        pass


def test_undecodable_keys_and_values_are_absent_and_the_rest_arrives(datastore: EtcdDatastore,
                                                                      key_layout: KeyLayout) -> None:
    k = key_layout
    prefix = k.prefix.encode()
    good = [pool("a", "10.70.0.0/16"), pool("b", "10.71.0.0/16")]
    for r in good:
        datastore.put(k.resource("ippools", r.name), r.to_json())
    # In the first listing: a key that is not UTF-8, a value nested deep enough for a RecursionError,
    # a value that is not UTF-8 and one that is not JSON.
    put_raw(datastore, prefix + b"resources/ippools/\xff\xfe-bad", pool("x", "10.72.0.0/16").to_json())
    put_raw(datastore, k.resource("ippools", "deep").encode(), DEEP)
    put_raw(datastore, k.resource("ippools", "latin1").encode(), b'{"kind": "IPPool\xe9"}')
    put_raw(datastore, k.resource("ippools", "notjson").encode(), b"{")

    kvs, _ = datastore.list(k.prefix)
    assert all(kv.key.startswith(k.prefix) for kv in kvs) and len(kvs) == 5  # the non-UTF-8 key is left out

    client = ResourceClient(datastore, k)
    assert sorted(r.name for r in client.list("IPPool")) == ["a", "b"]

    sink = ModelSink(k)
    syncer = Syncer(datastore, k.prefix, sink, retry_initial=0.05, retry_max=0.5)
    syncer.start()
    try:
        assert seconds_until(lambda: sink.in_sync == 1, timeout=10) is not None
        model = sink.model
        assert sorted(model.pools) == sorted(k.resource("ippools", n) for n in ("a", "b"))
        assert sorted(model.invalid) == sorted(k.resource("ippools", n) for n in ("deep", "latin1", "notjson"))
        # The same through the watch: bad keys in the middle of live changes.
        put_raw(datastore, prefix + b"resources/ippools/\xc3\x28", pool("y", "10.73.0.0/16").to_json())
        put_raw(datastore, k.resource("ippools", "a").encode(), DEEP)  # a valid pool turns bad: it goes
        datastore.put(k.resource("ippools", "c"), pool("c", "10.74.0.0/16").to_json())
        assert seconds_until(lambda: k.resource("ippools", "c") in model.pools, timeout=10) is not None
        assert sorted(model.pools) == sorted(k.resource("ippools", n) for n in ("b", "c"))
        assert k.resource("ippools", "a") in model.invalid
        # Repaired values come back; the syncer never stopped.
        datastore.put(k.resource("ippools", "deep"), pool("deep", "10.75.0.0/16").to_json())
        assert seconds_until(lambda: k.resource("ippools", "deep") in model.pools, timeout=10) is not None
        assert syncer.alive and syncer.fatal is None and syncer.status == "in-sync"
    finally:
        syncer.stop()

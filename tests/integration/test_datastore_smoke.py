import threading

import pytest

from l3net.datastore import Create, Delete, EtcdDatastore, Update
from l3net.errors import Compacted, Conflict, DatastoreUnavailable

pytestmark = pytest.mark.integration


def test_put_get_list_cas_and_commit(datastore: EtcdDatastore, key_layout) -> None:
    p = key_layout.prefix
    rev = datastore.create(p + "a", b"1")
    with pytest.raises(Conflict):
        datastore.create(p + "a", b"2")
    kv = datastore.get(p + "a")
    assert kv is not None and kv.value == b"1" and kv.mod_revision == rev
    datastore.update(p + "a", b"3", rev)
    with pytest.raises(Conflict):
        datastore.update(p + "a", b"4", rev)
    with pytest.raises(Conflict):
        datastore.commit([Create(p + "b", b"x"), Update(p + "a", b"5", rev)])
    assert datastore.get(p + "b") is None, "a failed commit must write nothing"
    datastore.commit([Create(p + "b", b"x"), Delete(p + "a")])
    kvs, _ = datastore.list(p)
    assert [(k.key, k.value) for k in kvs] == [(p + "b", b"x")]


def test_watch_sees_events_and_reports_compaction(datastore: EtcdDatastore, key_layout) -> None:
    p = key_layout.prefix
    start = datastore.revision() + 1
    datastore.put(p + "w1", b"v")
    watch = datastore.watch(p, start)
    got = []

    def reader() -> None:
        for batch in watch:
            got.extend(batch)
            if len(got) >= 2:
                return

    t = threading.Thread(target=reader)
    t.start()
    datastore.delete(p + "w1")
    t.join(5)
    watch.cancel()
    assert [(e.type, e.key) for e in got] == [("put", p + "w1"), ("delete", p + "w1")]
    rev = datastore.put(p + "w2", b"v")
    datastore.compact(rev)
    with pytest.raises(Compacted):
        for _ in datastore.watch(p, start):
            break


def test_unreachable_endpoint_is_named() -> None:
    ds = EtcdDatastore("http://127.0.0.1:1")
    with pytest.raises(DatastoreUnavailable, match=r"127\.0\.0\.1:1"):
        ds.get("/x")

"""EtcdDatastore against a real etcd: both transports, watch cancel and outage, leases, failover."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import Check, CheckPrefix, Create, EtcdDatastore, Put, Update
from l3net.datastore import etcd as etcd_module
from l3net.datastore.base import WatchEvent
from l3net.errors import Conflict, DatastoreError, DatastoreUnavailable
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import IDENT_FILE, EtcdServer, free_port, kill_recorded

pytestmark = pytest.mark.integration


@pytest.fixture(params=["unix", "tcp"])
def endpoint(request: pytest.FixtureRequest, etcd_server: EtcdServer) -> str:
    ep = etcd_server.unix_endpoint if request.param == "unix" else etcd_server.tcp_endpoint
    assert ep is not None
    return ep


@pytest.fixture
def private_etcd(tmpfs_dir: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be stopped and restarted."""
    server = EtcdServer(tmpfs_dir / f"etcd-ds-{uuid.uuid4().hex[:6]}", client_port=free_port(), name="ds")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.run_dir, ignore_errors=True)


class Reader:
    """Iterates a watch on a thread of its own, recording events and how it ended."""

    def __init__(self, watch) -> None:
        self.watch = watch
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        self.got = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.watch:
                with self.got:
                    self.events.extend(batch)
                    self.got.notify_all()
        except DatastoreError as exc:
            self.error = exc

    def wait_events(self, n: int, timeout: float = 20.0) -> bool:
        with self.got:
            return self.got.wait_for(lambda: len(self.events) >= n, timeout)

    def ended(self, timeout: float = 20.0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


def test_kv_cas_commit_and_watch_over_each_transport(endpoint: str, key_layout: KeyLayout) -> None:
    ds = EtcdDatastore(endpoint)
    p = key_layout.prefix
    try:
        start = ds.revision() + 1
        reader = Reader(ds.watch(p, start))
        r1 = ds.create(p + "a", b"1")
        with pytest.raises(Conflict):
            ds.create(p + "a", b"x")
        r2 = ds.update(p + "a", b"2", r1)
        with pytest.raises(Conflict):
            ds.update(p + "a", b"stale", r1)
        with pytest.raises(Conflict):
            ds.delete(p + "a", mod_revision=r1)
        ds.commit([Put(p + "b", b"b"), Put(p + "c", b"c")])
        assert ds.delete(p + "a", mod_revision=r2) is True
        assert ds.delete(p + "a") is False
        kvs, rev = ds.list(p)
        assert [(kv.key, kv.value) for kv in kvs] == [(p + "b", b"b"), (p + "c", b"c")]
        assert rev >= kvs[-1].mod_revision
        assert reader.wait_events(5)
        assert [(e.type, e.key, e.value) for e in reader.events] == [
            ("put", p + "a", b"1"), ("put", p + "a", b"2"), ("put", p + "b", b"b"), ("put", p + "c", b"c"),
            ("delete", p + "a", None)]
        # The two puts of one commit share a revision; revisions never go down.
        revs = [e.mod_revision for e in reader.events]
        assert revs == sorted(revs) and revs[2] == revs[3]
        # cancel() from another thread wakes a reader blocked in recv, and the iteration ends quietly.
        reader.watch.cancel()
        assert reader.ended(), "cancel() did not unblock the watch reader"
        assert reader.error is None
        reader.watch.cancel()  # idempotent
    finally:
        ds.close()


def test_leases_grant_refresh_revoke(endpoint: str, key_layout: KeyLayout) -> None:
    ds = EtcdDatastore(endpoint)
    key = key_layout.prefix + "leased"
    try:
        lease = ds.grant_lease(30)
        assert lease.id > 0 and 0 < lease.time_to_live() <= 30
        ds.put(key, b"alive", lease=lease.id)
        kv = ds.get(key)
        assert kv is not None and kv.lease == lease.id
        lease.refresh()
        lease.revoke()
        assert ds.get(key) is None, "revoking a lease deletes its keys"
        assert lease.time_to_live() == -1
        with pytest.raises(DatastoreError, match="expired"):
            lease.refresh()
        lease.revoke()  # idempotent
    finally:
        ds.close()


def test_checks_pass_on_fresh_reads_and_refuse_stale_ones(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    """Check compares one key's revision (0: absent); CheckPrefix that nothing under a prefix was written since."""
    p = key_layout.prefix
    rev = datastore.put(p + "k", b"1")
    datastore.commit([Check(p + "k", rev), Check(p + "absent", 0), CheckPrefix(p + "r/", datastore.revision()),
                      Create(p + "n", b"")])  # an empty prefix passes too
    datastore.put(p + "r/x", b"2")
    after = datastore.revision()
    datastore.commit([CheckPrefix(p + "r/", after), Update(p + "k", b"2", rev)])
    for stale in (CheckPrefix(p + "r/", rev), Check(p + "k", rev), Check(p + "n", 0)):
        with pytest.raises(Conflict):
            datastore.commit([stale, Put(p + "k", b"3")])
    kv = datastore.get(p + "k")
    assert kv is not None and kv.value == b"2"


def test_compact_is_idempotent(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    rev = datastore.put(key_layout.prefix + "c", b"1")
    datastore.compact(rev)
    datastore.compact(rev)
    datastore.compact(rev - 1)
    with pytest.raises(DatastoreError):
        datastore.compact(rev + 1000)  # the future is not compactable: a real error


def test_stopped_etcd_fails_watches_and_calls_promptly(private_etcd: EtcdServer) -> None:
    for ep in (private_etcd.unix_endpoint, private_etcd.tcp_endpoint):
        assert ep is not None
        ds = EtcdDatastore(ep)
        ds.put("/s/" + ep[-6:], b"kept")
        reader = Reader(ds.watch("/s/", ds.revision() + 1))
        private_etcd.pause()
        assert reader.ended(), "a watch on a stopped etcd must not hang"
        assert isinstance(reader.error, DatastoreUnavailable) and ep in str(reader.error)
        with pytest.raises(DatastoreUnavailable, match="datastore unreachable"):
            ds.watch("/s/", 1)
        with pytest.raises(DatastoreUnavailable):
            ds.get("/s/x")
        private_etcd.start()
        kv = ds.get("/s/" + ep[-6:])
        assert kv is not None and kv.value == b"kept", "pause()/start() keeps the data"
        ds.close()


def test_fails_over_to_the_next_endpoint(etcd_server: EtcdServer, key_layout: KeyLayout, tmp_path: Path) -> None:
    dead = f"unix://{tmp_path / 'no-etcd.sock'}"
    ds = EtcdDatastore(f"{dead},{etcd_server.tcp_endpoint}")
    try:
        rev = ds.put(key_layout.prefix + "f", b"1")
        watch = ds.watch(key_layout.prefix, rev)
        assert [e.key for e in next(iter(watch))] == [key_layout.prefix + "f"]
        watch.cancel()
    finally:
        ds.close()
    with pytest.raises(DatastoreUnavailable, match=r"no-etcd\.sock"):
        EtcdDatastore(dead).get("/x")


def test_writes_fail_over_only_before_they_are_sent(etcd_server: EtcdServer, datastore: EtcdDatastore,
                                                   key_layout: KeyLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that may have been applied must not be re-sent elsewhere: it would come back as a bogus Conflict."""
    key = key_layout.prefix + "once"
    refused = f"http://127.0.0.1:{free_port()}"
    ds = EtcdDatastore(f"{refused},{etcd_server.tcp_endpoint}")
    try:
        ds.create(key, b"1")  # connection refused: never sent, so the next endpoint gets it
        assert ds.delete(key)
    finally:
        ds.close()
    monkeypatch.setattr(etcd_module, "_REQUEST_TIMEOUT", 0.5)
    # The kernel completes the handshake and buffers the request, nobody ever answers: outcome unknown.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        ds = EtcdDatastore(f"http://127.0.0.1:{silent.getsockname()[1]},{etcd_server.tcp_endpoint}")
        try:
            with pytest.raises(DatastoreUnavailable, match="outcome unknown"):
                ds.create(key, b"1")
            with pytest.raises(DatastoreUnavailable, match="outcome unknown"):
                ds.delete(key)
            assert datastore.get(key) is None, "the write must not have been re-sent to the next endpoint"
            assert ds.get(key) is None  # reads fail over past the silent endpoint ...
            ds.create(key, b"2")  # ... and later writes go where the reads succeeded
            kv = datastore.get(key)
            assert kv is not None and kv.value == b"2"
        finally:
            ds.close()


def test_bad_endpoints_are_rejected() -> None:
    for bad in ("ftp://h:1", "unix://", "http://:2379", ""):
        with pytest.raises(ValueError):
            EtcdDatastore(bad)


def test_a_silent_watch_stream_is_declared_dead(datastore: EtcdDatastore, key_layout: KeyLayout,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A wedged etcd still answers TCP keepalives; silence past the progress interval must end the watch."""
    monkeypatch.setattr(etcd_module, "WATCH_IDLE_TIMEOUT", 0.3)
    reader = Reader(datastore.watch(key_layout.prefix, datastore.revision() + 1))
    assert reader.ended(), "a silent stream must fail, not hang"
    assert isinstance(reader.error, DatastoreUnavailable) and "timed out" in str(reader.error)


def test_kill_recorded_kills_only_the_very_etcd_it_recorded(private_etcd: EtcdServer, tmp_path: Path) -> None:
    """After a PID is recycled it may be another engineer's etcd: start time and --data-dir must both match."""
    run, proc = private_etcd.run_dir, private_etcd.proc
    assert proc is not None
    ident = json.loads((run / IDENT_FILE).read_text())
    assert ident["pid"] == proc.pid and ident["data_dir"] == str(private_etcd.data_dir)
    for other in ({"starttime": ident["starttime"] + 1}, {"data_dir": str(tmp_path)}, {"starttime": None}):
        (run / "etcd.pid").write_text(str(proc.pid))
        (run / IDENT_FILE).write_text(json.dumps({**ident, **other}))
        kill_recorded(run)
        assert proc.poll() is None, f"killed an etcd that is not the recorded one ({other})"
        assert not (run / "etcd.pid").exists() and not (run / IDENT_FILE).exists()
    (run / "etcd.pid").write_text(str(proc.pid))
    (run / IDENT_FILE).write_text(json.dumps(ident))
    kill_recorded(run)
    assert proc.wait(10) == -9
    kill_recorded(run)  # nothing recorded any more: a no-op


@pytest.fixture
def three_members(tmpfs_dir: Path) -> Iterator[dict[str, EtcdServer]]:
    """A 3-member etcd cluster of this test's own."""
    base = tmpfs_dir / f"etcd-3m-{uuid.uuid4().hex[:6]}"
    ports = {n: free_port() for n in ("e1", "e2", "e3")}
    cluster = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    members = {n: EtcdServer(base / n, name=n, peer_port=p, cluster=cluster) for n, p in ports.items()}
    try:
        for m in members.values():
            m.start(wait=False)
        for m in members.values():
            m.wait_healthy(30)
        yield members
    finally:
        for m in members.values():
            m.stop()


def test_probe_rides_out_a_killed_leader(three_members: dict[str, EtcdServer]) -> None:
    """SIGKILL the leader: a surviving member answers the probe's read with HTTP 503 "leader changed"
    (code 14) until the election ends. That is a member to fail over from or ask again, not a malformed
    answer: the probe returns the revision (CI once saw a CNI ADD refused right after a leader kill)."""
    from l3net.lab.etcdserver import member_status

    ds = EtcdDatastore([m.unix_endpoint for m in three_members.values()])
    try:
        ds.put("/l3nx-probe/a", b"1")
        status = {n: member_status(m.socket_path) for n, m in three_members.items()}
        leader = next(n for n, s in status.items() if s and s["member_id"] == s["leader"])
        survivors = [n for n in three_members if n != leader]
        # The leader's endpoint last, so the probe meets an electing survivor first.
        ds = EtcdDatastore([three_members[n].unix_endpoint for n in [*survivors, leader]])
        proc = three_members[leader].proc
        assert proc is not None
        proc.kill()
        proc.wait()
        assert ds.probe(2.0) >= 2
        assert ds.put("/l3nx-probe/b", b"2") > 0
    finally:
        ds.close()


def test_probe_waits_out_an_election_that_holds_its_reads(three_members: dict[str, EtcdServer]) -> None:
    """Right after the leader dies, the survivors still believe in it and hold a linearizable read
    until they miss it and elect another (about 1-2 s), which a short read timeout alone cannot tell
    from a hung etcd (CI saw a CNI ADD refused with "Read timed out" after a leader kill). The probe
    asks such a member for a local read, finds it alive and asks again: it returns once the new
    leader serves, and with no quorum at all it still fails, within its bounded wait."""
    from l3net.lab.etcdserver import member_status

    status = {n: member_status(m.socket_path) for n, m in three_members.items()}
    leader = next(n for n, s in status.items() if s and s["member_id"] == s["leader"])
    survivors = [n for n in three_members if n != leader]
    ds = EtcdDatastore([three_members[n].unix_endpoint for n in [*survivors, leader]])
    try:
        ds.put("/l3nx-probe/a", b"1")
        proc = three_members[leader].proc
        assert proc is not None
        proc.kill()
        proc.wait()
        assert ds.probe(0.3) >= 2
        assert ds.put("/l3nx-probe/b", b"2") > 0
        three_members[survivors[1]].pause()
        started = time.monotonic()
        with pytest.raises(DatastoreUnavailable):
            ds.probe(0.3)
        assert time.monotonic() - started < 15
    finally:
        ds.close()

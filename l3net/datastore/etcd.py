"""l3net.datastore.etcd: the etcd v3 client behind :class:`Datastore`.

KV, transactions, leases and watches go through etcd's v3 JSON gateway (TLS, no protobuf, no grpc),
spoken by :mod:`l3net.datastore.gateway`. The watch stream reports compaction and cancel responses:
a syncer that misses a compaction silently diverges.

Endpoints: ``http://host:port``, ``https://host:port`` (with CA, cert, key) or
``unix:///path/to/socket``; several, comma-separated, are tried in order. Reads and watches fail
over on any connection error; a write (txn) fails over only when it never left this host (connect
refused or timed out): once sent, its outcome is unknown and re-sending it elsewhere would turn an
applied write into a bogus Conflict, so the caller gets DatastoreUnavailable and must re-read.

TLS notes, both paid for in tests: TLS comes only from :class:`TLSFiles`, never from the environment
(``REQUESTS_CA_BUNDLE`` and the like would silently override a given CA); and an etcd run
with ``--client-cert-auth`` needs a server certificate that also allows ``clientAuth``, because its JSON
gateway dials etcd's own gRPC port with it (otherwise every request fails with ``connection closed``, code 14).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from l3net import metrics
from l3net.datastore.base import (
    Check,
    CheckPrefix,
    Create,
    Delete,
    KeyValue,
    Op,
    Put,
    Update,
    WatchEvent,
    check_range,
)
from l3net.datastore.gateway import Answered, Endpoint, GatewayError, Lost, NotSent, Stream, tls_context
from l3net.errors import Compacted, Conflict, DatastoreError, DatastoreUnavailable

_log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = 5.0


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return _b64(bytes(raw))
        raw.pop()
    return _b64(b"\0")


def _range_end(prefix: str, before: str | None) -> str:
    """The range end of ``prefix``'s keys, cut at ``before`` when given (which must lie under ``prefix``)."""
    if before is None:
        return _prefix_end(prefix)
    check_range(prefix, before)
    return _b64(before.encode())


@dataclass(frozen=True)
class TLSFiles:
    """Client TLS material for ``https://`` endpoints: CA bundle, client certificate and its key (paths).

    Without ``ca`` the system trust store verifies the server; ``cert`` and ``key`` go together.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the field when the files cannot be used."""
        if bool(self.cert) != bool(self.key):
            raise ValueError("etcd TLS: the client certificate (cert) and its key (key) must be given together")
        for field, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path and not os.path.isfile(path):
                raise ValueError(f"etcd TLS {field} file {path!r}: no such file")

    def __bool__(self) -> bool:
        return bool(self.ca or self.cert or self.key)


def _endpoint(endpoint: str, tls: TLSFiles) -> Endpoint:
    context = tls_context(tls.ca, tls.cert, tls.key) if endpoint.startswith("https://") else None
    return Endpoint(endpoint, context)


# TCP keepalive on watch sockets (idle, interval, probes): a watch is quiet for long stretches, and
# without probes a vanished peer (host down, partition: no FIN, no RST) would block the reader forever.
_KEEPALIVE = (10, 5, 3)
# A live but wedged etcd still answers keepalives. Watches ask for progress notifications, which etcd
# sends to idle watchers every 10 minutes (its default): silence for longer means the stream is dead.
WATCH_IDLE_TIMEOUT = 11 * 60.0


def _tune_stream_socket(sock: socket.socket) -> None:
    """The stream may be quiet for minutes: only a silence past etcd's progress interval fails it."""
    sock.settimeout(WATCH_IDLE_TIMEOUT)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        idle, interval, count = _KEEPALIVE
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


class _EtcdWatch:
    """One watch stream over the v3 JSON gateway. Iterating yields event batches in revision order.

    Owns one HTTP connection. Iteration raises :class:`Compacted` when ``start_revision`` is gone and
    :class:`DatastoreUnavailable` when the stream breaks, errs or is closed by the server; it ends
    quietly once :meth:`cancel` was called. ``cancel()`` may come from any thread and is idempotent: it
    shuts the socket down, which wakes a reader blocked in ``recv`` (closing the response alone does
    not: it waits for the reader's buffer lock, a deadlock).
    Constructing raises the gateway's errors unwrapped so that the caller can fail over.
    """

    def __init__(self, client: Endpoint, prefix: str, start_revision: int, before: str | None = None):
        self._endpoint = client.endpoint
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._iterating = False
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _range_end(prefix, before),
                "start_revision": start_revision,
                "progress_notify": True,
            }
        }
        # The timeout bounds the wait for the response headers (etcd answers "created" at once); the
        # stream itself then runs without one (see _tune_stream_socket).
        try:
            self._stream: Stream = client.stream("/v3/watch", request, _REQUEST_TIMEOUT)
        except Answered as exc:
            if exc.unavailable:
                raise
            raise DatastoreError(f"etcd at {self._endpoint} refused the watch: {exc}") from exc
        self._sock = self._stream.sock
        _tune_stream_socket(self._sock)

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        with self._lock:
            if self._closed.is_set():
                self._stream.close()
                return
            self._iterating = True
        buf = b""
        try:
            while chunk := self._stream.read():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    batch = self._parse(line)
                    if batch:
                        yield batch
        except (http.client.HTTPException, OSError, AttributeError, ValueError) as exc:
            # AttributeError: http.client drops its file object when the response is closed under us.
            if self._closed.is_set():
                return
            raise DatastoreUnavailable(self._endpoint, f"watch stream lost: {exc!r}") from exc
        finally:
            self._stream.close()
        if not self._closed.is_set():
            raise DatastoreUnavailable(self._endpoint, "watch stream closed by server")

    def _parse(self, line: bytes) -> list[WatchEvent]:
        if not line.strip():
            return []
        msg = json.loads(line)
        if "error" in msg:
            raise DatastoreUnavailable(self._endpoint, f"watch error: {msg['error']}")
        try:
            result = msg.get("result", {})
            if int(result.get("compact_revision", 0) or 0) > 0:
                raise Compacted(int(result["compact_revision"]))
            if result.get("canceled"):
                raise DatastoreUnavailable(self._endpoint,
                                           f"watch canceled: {result.get('cancel_reason', '')}")
            events = []
            for ev in result.get("events", []):
                kv = ev["kv"]
                try:
                    key = _unb64(kv["key"]).decode()
                    revision = int(kv["mod_revision"])
                    value = None if ev.get("type") == "DELETE" else _unb64(kv.get("value", ""))
                except (ValueError, TypeError, KeyError) as exc:
                    # One undecodable key (not UTF-8, bad base64) is absent; the rest of the batch stands.
                    _skip_undecodable(kv, exc)
                    continue
                if value is None:
                    events.append(WatchEvent("delete", key, None, revision))
                else:
                    events.append(WatchEvent("put", key, value, revision))
            return events
        except (KeyError, TypeError, AttributeError) as exc:
            raise DatastoreUnavailable(self._endpoint, f"malformed watch response: {exc!r}") from exc

    def cancel(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            iterating = self._iterating
        # socket.socket.shutdown, not SSLSocket's: that one also drops the TLS object under the reader.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        if not iterating:
            self._stream.close()


class _EtcdLease:
    """A granted lease. ``refresh()`` raises DatastoreError once it has expired; ``revoke()`` is idempotent."""

    def __init__(self, store: EtcdDatastore, lease_id: int, ttl: int):
        self._store = store
        self.id = lease_id
        self.ttl = ttl

    def refresh(self) -> None:
        result = self._store._post("/lease/keepalive", {"ID": self.id})
        if int(result.get("result", {}).get("TTL", -1)) <= 0:
            raise DatastoreError(f"lease {self.id} has expired")

    def time_to_live(self) -> int:
        """Seconds left (-1 once expired or revoked)."""
        result = self._store._post("/kv/lease/timetolive", {"ID": self.id})
        return int(result.get("TTL", -1))

    def revoke(self) -> None:
        try:
            self._store._post("/lease/revoke", {"ID": self.id})
        except DatastoreError as exc:
            if "lease not found" not in str(exc):
                raise
            _log.debug("lease already gone lease=%d", self.id)


def _skip_undecodable(raw: Any, exc: BaseException) -> None:
    """Log and count one key of an etcd response that does not decode (it is treated as absent)."""
    key = raw.get("key") if isinstance(raw, dict) else None
    _log.warning("undecodable datastore key left out key_b64=%s error=%r", key, exc)
    metrics.DECODE_FAILURES.labels(where="etcd").inc()


def _probe_answer(client: Endpoint, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A probe's answer; an error answer raises so that :meth:`EtcdDatastore._call` fails over.

    etcd's gateway answers a read during a leader election with HTTP 503 and
    ``{"error": "etcdserver: leader changed", "code": 14}``: that member is alive but cannot serve
    (``Answered.unavailable``).
    """
    doc = client.post_json("/v3/kv/range", body, timeout)
    if not isinstance(doc, dict) or "header" not in doc:
        raise Answered(200, f"no header in the answer: {str(doc)[:200]}")
    return doc


# Missing the leader takes one election timeout and electing another one to two more (1 s by default):
# a probe that meets live members without a leader keeps asking this long before it calls the store down.
_PROBE_ELECTION_WAIT = 5.0
_PROBE_ELECTION_PAUSE = 0.1
# A live member answers a serializable read from its own state, in milliseconds even on a loaded node.
_LOCAL_READ_TIMEOUT = 0.5


def _answers_locally(client: Endpoint, timeout: float) -> bool:
    """Whether the member answers a serializable read (no leader needed): alive, as a hung member is not."""
    try:
        _probe_answer(client, {"key": _b64("\0"), "count_only": True, "serializable": True}, timeout)
    except GatewayError:
        return False
    return True


class EtcdDatastore:
    """Implements :class:`l3net.datastore.base.Datastore` against etcd v3. Thread-safe."""

    def __init__(self, endpoints: str | Sequence[str], tls: TLSFiles | None = None):
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        tls = tls or TLSFiles()
        tls.check()
        self._clients = [_endpoint(e, tls) for e in endpoints]
        self._current = 0
        self.endpoint = ",".join(endpoints)
        if tls and not any(e.startswith("https://") for e in endpoints):
            _log.warning("etcd TLS files given but no https:// endpoint: they are ignored endpoints=%s",
                         self.endpoint)

    # -- plumbing ----------------------------------------------------------
    def _call(self, fn: Any, write: bool = False) -> Any:
        """Run ``fn(client)``, failing over between endpoints on connection errors.

        With ``write``, only a failure before the request was sent fails over; after that the outcome is
        unknown and :class:`DatastoreUnavailable` says so (the caller re-reads, then decides).
        """
        last: Exception | None = None
        for i in range(len(self._clients)):
            idx = (self._current + i) % len(self._clients)
            client = self._clients[idx]
            try:
                result = fn(client)
                self._current = idx
                return result
            except Answered as exc:
                if not exc.unavailable:
                    raise DatastoreError(f"etcd at {client.endpoint} refused the request: {exc.detail}") from exc
                if write:  # etcd answered 503 or a timeout: the write may still be applied
                    raise self._unknown(client, exc) from exc
                last = exc
            except Lost as exc:
                if write:
                    raise self._unknown(client, exc) from exc
                last = exc
            except NotSent as exc:
                last = exc
            _log.debug("etcd endpoint failed endpoint=%s error=%s", client.endpoint, last)
        raise DatastoreUnavailable(self.endpoint, str(last) if last else "")

    @staticmethod
    def _unknown(client: Endpoint, exc: GatewayError) -> DatastoreUnavailable:
        _log.warning("etcd write outcome unknown endpoint=%s error=%s", client.endpoint, exc)
        return DatastoreUnavailable(client.endpoint, f"write outcome unknown (sent, then {exc}); re-read before "
                                    "retrying")

    def _post(self, path: str, body: dict[str, Any], write: bool = False) -> dict[str, Any]:
        return self._call(lambda c: c.post_json("/v3" + path, body, _REQUEST_TIMEOUT), write=write)

    @staticmethod
    def _kv(raw: dict[str, Any]) -> KeyValue:
        """One key-value of a range response; ValueError/TypeError/KeyError when it does not decode."""
        return KeyValue(
            key=_unb64(raw["key"]).decode(),
            value=_unb64(raw.get("value", "")),
            mod_revision=int(raw.get("mod_revision", 0)),
            create_revision=int(raw.get("create_revision", 0)),
            version=int(raw.get("version", 0)),
            lease=int(raw.get("lease", 0)),
        )

    def _header_revision(self, result: dict[str, Any]) -> int:
        try:
            return int(result["header"]["revision"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatastoreError(f"etcd at {self.endpoint}: malformed response (no header revision): {exc!r}") \
                from exc

    # -- reads -------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        result = self._post("/kv/range", {"key": _b64(key)})
        kvs = result.get("kvs", [])
        if not kvs:
            return None
        try:
            return self._kv(kvs[0])
        except (ValueError, TypeError, KeyError) as exc:
            raise DatastoreError(f"etcd at {self.endpoint}: key {key!r} does not decode: {exc!r}") from exc

    def list(self, prefix: str, *, before: str | None = None) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (and before ``before``); a key that does not decode (not UTF-8) is left
        out, logged and counted."""
        result = self._post("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix, before),
                                          "sort_order": "ASCEND", "sort_target": "KEY"})
        out = []
        for raw in result.get("kvs", []):
            try:
                out.append(self._kv(raw))
            except (ValueError, TypeError, KeyError) as exc:
                _skip_undecodable(raw, exc)
        return out, self._header_revision(result)

    def revision(self) -> int:
        result = self._post("/kv/range", {"key": _b64("\0"), "count_only": True})
        return self._header_revision(result)

    def probe(self, timeout: float) -> int:
        """The store's revision, asked of each endpoint with a short ``timeout`` (a hung etcd keeps its TCP
        connections open and answers nothing: only a timeout notices). DatastoreUnavailable when none answers.

        While the members elect a leader (after the leader died) they are alive but cannot serve a
        linearizable read: some answer HTTP 503 "leader changed", others hold the read until a leader
        exists, which a short timeout cannot tell from a hung etcd. A member that then answers a local
        (serializable) read is alive, so the probe asks again, for up to :data:`_PROBE_ELECTION_WAIT` seconds;
        a hung member answers neither, and the probe fails as before.
        """
        body = {"key": _b64("\0"), "count_only": True}
        leaderless: list[Endpoint] = []

        def ask(c: Endpoint) -> dict[str, Any]:
            try:
                return _probe_answer(c, body, timeout)
            except Answered as exc:
                if exc.unavailable:
                    leaderless.append(c)
                raise
            except Lost:  # the read was held past the timeout (or the member died mid-read)
                leaderless.append(c)
                raise

        deadline = time.monotonic() + _PROBE_ELECTION_WAIT
        while True:
            leaderless.clear()
            try:
                return self._header_revision(self._call(ask))
            except DatastoreUnavailable:
                alive = [c.endpoint for c in leaderless if _answers_locally(c, min(timeout, _LOCAL_READ_TIMEOUT))]
                if not alive or time.monotonic() >= deadline:
                    raise
                _log.info("etcd probe: members alive but without a leader, asking again endpoints=%s",
                          ",".join(alive))
                time.sleep(_PROBE_ELECTION_PAUSE)

    # -- writes ------------------------------------------------------------
    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.commit([Put(key, value, lease)])

    def create(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.commit([Create(key, value, lease)])

    def update(self, key: str, value: bytes, mod_revision: int) -> int:
        return self.commit([Update(key, value, mod_revision)])

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        compare = []
        if mod_revision is not None:
            compare.append({"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision})
        txn = {"compare": compare,
               "success": [{"request_delete_range": {"key": _b64(key)}}],
               "failure": []}
        result = self._post("/kv/txn", txn, write=True)
        if not result.get("succeeded", False):
            raise Conflict(f"{key} changed since revision {mod_revision}")
        responses = result.get("responses", [])
        deleted = responses[0].get("response_delete_range", {}).get("deleted", 0) if responses else 0
        return int(deleted) > 0

    def commit(self, ops: Sequence[Op]) -> int:
        compare: list[dict[str, Any]] = []
        success: list[dict[str, Any]] = []
        for op in ops:
            key = _b64(op.key)
            if isinstance(op, Check):
                compare.append({"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": op.mod_revision})
                continue
            if isinstance(op, CheckPrefix):  # every key in the range written at or before op.revision
                compare.append({"key": key, "range_end": _prefix_end(op.key), "result": "LESS", "target": "MOD",
                                "mod_revision": op.revision + 1})
                continue
            if isinstance(op, Create):
                compare.append({"key": key, "result": "EQUAL", "target": "VERSION", "version": 0})
            elif isinstance(op, Update) or (isinstance(op, Delete) and op.mod_revision is not None):
                compare.append({"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": op.mod_revision})
            if isinstance(op, Delete):
                success.append({"request_delete_range": {"key": key}})
            else:
                put: dict[str, Any] = {"key": key, "value": _b64(op.value)}
                if op.lease:
                    put["lease"] = op.lease
                success.append({"request_put": put})
        result = self._post("/kv/txn", {"compare": compare, "success": success, "failure": []}, write=True)
        if not result.get("succeeded", False):
            raise Conflict("compare failed for " + ", ".join(op.key for op in ops))
        return int(result["header"]["revision"])

    # -- watch / compaction / leases --------------------------------------
    def watch(self, prefix: str, start_revision: int, *, before: str | None = None) -> _EtcdWatch:
        return self._call(lambda c: _EtcdWatch(c, prefix, start_revision, before))

    def compact(self, revision: int) -> None:
        """Drop history up to ``revision``. Idempotent: an already compacted revision is not an error."""
        try:
            self._post("/kv/compaction", {"revision": revision, "physical": True})
        except DatastoreError as exc:
            if "has been compacted" not in str(exc):
                raise
            _log.debug("compaction already done revision=%d", revision)

    def grant_lease(self, ttl: int) -> _EtcdLease:
        result = self._post("/lease/grant", {"TTL": ttl})
        if result.get("error"):
            raise DatastoreError(f"etcd at {self.endpoint} refused the lease: {result['error']}")
        return _EtcdLease(self, int(result["ID"]), int(result.get("TTL", ttl)))

    def close(self) -> None:
        for c in self._clients:
            c.close()

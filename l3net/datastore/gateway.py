"""l3net.datastore.gateway: HTTP/1.1 to etcd's v3 JSON gateway, on the standard library alone.

The agent holds this client for its whole life, so it is kept small: ``http.client`` and ``ssl``
instead of requests, urllib3 and etcd3gw (7 to 8 MiB of resident memory in every agent, measured by
``bench footprint``). What the store needs from HTTP is little: POST a JSON body, read a JSON answer,
keep connections alive between requests, and stream one long response per watch.

Every failure says whether the request may have reached etcd, because a write may be re-sent to
another endpoint only when it never left this host: :class:`NotSent` (connect refused or timed out,
no socket file, TLS handshake refused), :class:`Lost` (sent, then the connection broke or the answer
timed out) and :class:`Answered` (etcd answered with an error status).
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

# Idle keep-alive connections kept per endpoint; more concurrent requests than this open and then close extra ones.
_IDLE_MAX = 8
# etcd's gateway answers these when the member cannot serve now (no leader, overloaded): another may.
UNAVAILABLE_STATUSES = frozenset({408, 503, 504})
_GRPC_UNAVAILABLE = 14
# A TLS connection cut, as opposed to a TLS alert refusing this client.
_TLS_BROKEN = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class GatewayError(Exception):
    """A request to one endpoint failed; ``str()`` says why."""


class NotSent(GatewayError):
    """The connection never came up, so etcd acted on nothing: safe to send elsewhere."""


class Lost(GatewayError):
    """The request was sent, then the connection broke or the answer did not come in time: outcome unknown."""


class Answered(GatewayError):
    """etcd answered with an error status. ``detail`` is its answer's text."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def unavailable(self) -> bool:
        """The member is alive but cannot serve now (no leader, timed out inside etcd): ask another one."""
        if self.status in UNAVAILABLE_STATUSES:
            return True
        try:
            doc = json.loads(self.detail)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("code") == _GRPC_UNAVAILABLE


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        """The answer's JSON; ValueError when it is not JSON."""
        return json.loads(self.body)


class _OneWrite:
    """Headers and a bytes body in one write: ``http.client`` (3.11) writes them apart, which on a local etcd
    costs a second syscall and a second wake-up of the server per request (an IPAM ADD's ~8 KiB commit
    spent more time in those two writes than in anything else on the client)."""

    _buffer: list[bytes]   # http.client.HTTPConnection's, as are send() and _send_output()

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)   # type: ignore[misc]
            return
        self._buffer.extend((b"", b""))
        head = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(head + message_body)   # type: ignore[attr-defined]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class _UnixConnection(_OneWrite, http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the server (readable while idle: EOF or junk)."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _refused_handshake(exc: ssl.SSLError) -> NotSent:
    """A TLS error on a connection's first request: the server refused the handshake, so it acted on nothing.

    With TLS 1.3 the server judges the client certificate after the client's side of the handshake is
    done, so its refusal arrives with the first request: as an alert, or as a bare close when the alert
    is lost. On a connection that already carried a request, a cut (EOF) is a lost request instead.
    """
    return NotSent(f"TLS handshake failed (check the CA, client certificate and key): {exc}")


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client context verifying the server by ``ca`` (the system trust store without it), with a client
    certificate when ``cert`` and ``key`` are given. Never from the environment: a CA named here is the CA used."""
    context = ssl.create_default_context(cafile=ca)
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


class Endpoint:
    """One etcd endpoint (``http://``, ``https://`` or ``unix://``) and its pool of keep-alive connections.

    Thread-safe: each request takes a connection of its own from the pool, or opens one.
    """

    def __init__(self, endpoint: str, tls: ssl.SSLContext | None = None):
        url = urlparse(endpoint)
        self.endpoint = endpoint
        self._unix_path = ""
        self._host = ""
        self._port = 0
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "unix":
            self._unix_path = url.netloc + url.path
            if not self._unix_path:
                raise ValueError(f"etcd endpoint {endpoint!r}: no socket path")
        elif url.scheme in ("http", "https"):
            if not url.hostname:
                raise ValueError(f"etcd endpoint {endpoint!r}: no host")
            self._host = url.hostname
            self._port = url.port or 2379
            if url.scheme == "https":
                self._tls = tls or tls_context(None, None, None)
        else:
            raise ValueError(f"etcd endpoint {endpoint!r}: scheme must be http, https or unix")
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []

    # -- connections -------------------------------------------------------------
    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new, connected connection; NotSent when it cannot be had."""
        conn: http.client.HTTPConnection
        if self._unix_path:
            conn = _UnixConnection(self._unix_path, timeout)
        elif self._tls is not None:
            conn = _HTTPSConnection(self._host, self._port, timeout=timeout, context=self._tls)
        else:
            conn = _HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise _refused_handshake(exc) from exc
        except OSError as exc:
            conn.close()
            raise NotSent(f"cannot connect: {exc}") from exc
        return conn

    def _acquire(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection for one request, and whether it is new (its TLS handshake not yet confirmed)."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.sock is not None and not _dropped(conn):
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn, False
                conn.close()
        return self._connect(timeout), True

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append(conn)
                return
        conn.close()

    # -- requests ----------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None, timeout: float) -> Reply:
        """Send one request and read the whole answer. Any status is returned (the caller decides)."""
        conn, new = self._acquire(timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLError as exc:
            conn.close()
            if new or not isinstance(exc, _TLS_BROKEN):
                raise _refused_handshake(exc) from exc
            raise Lost(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Lost(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if resp.will_close:
            conn.close()
        else:
            self._release(conn)
        return Reply(resp.status, data)

    def post_json(self, path: str, doc: Any, timeout: float) -> Any:
        """POST ``doc`` and return the answer's JSON; Answered on an error status or an answer that is not JSON."""
        reply = self.request("POST", path, json.dumps(doc).encode(), timeout)
        if reply.status != 200:
            raise Answered(reply.status, reply.body.decode(errors="replace")[:500])
        try:
            return reply.json()
        except ValueError as exc:
            raise Answered(reply.status, f"not JSON: {reply.body[:200]!r}") from exc

    def stream(self, path: str, doc: Any, timeout: float) -> Stream:
        """POST ``doc`` on a connection of its own and hand back its response to read as it comes.

        ``timeout`` bounds connecting and the wait for the response headers.
        """
        conn = self._connect(timeout)
        sock = conn.sock
        try:
            conn.request("POST", path, body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
        except ssl.SSLError as exc:  # a new connection: see _refused_handshake
            conn.close()
            raise _refused_handshake(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Lost(f"POST {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status != 200:
            detail = resp.read(300).decode(errors="replace")
            conn.close()
            raise Answered(resp.status, detail)
        return Stream(conn, resp, sock)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Stream:
    """A streamed response and the socket under it (to tune, and to shut down from another thread)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, sock: socket.socket):
        self._conn = conn
        self._resp = resp
        self.sock = sock

    def read(self) -> bytes:
        """The next bytes that arrived (b"" at the end); OSError, HTTPException or ValueError when it breaks."""
        return self._resp.read1(65536)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

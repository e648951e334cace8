"""l3net.datastore.gateway: keep-alive reuse, dropped connections and the sent / not-sent split, against a
small HTTP server on a unix socket (the real etcd is in tests/integration/test_datastore_*.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore.gateway import Answered, Endpoint, Lost, NotSent

pytestmark = pytest.mark.unit


class _Server:
    """Answers each request with the next scripted reply; ``None`` closes the connection without answering.

    Counts accepted connections, so that a test can tell reuse from reconnecting.
    """

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.replies: list[tuple[int, bytes, bool] | None] = []
        self.connections = 0
        self.bodies: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        with conn:
            while True:
                request_line = f.readline()
                if not request_line:
                    return
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                self.bodies.append(f.read(length))
                reply = self.replies.pop(0) if self.replies else (200, b"{}", False)
                if reply is None:
                    return
                status, body, close = reply
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                if close:
                    head += "Connection: close\r\n"
                conn.sendall(head.encode() + b"\r\n" + body)
                if close:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[_Server, Endpoint]]:
    srv = _Server(tmp_path / "gw.sock")
    endpoint = Endpoint(f"unix://{tmp_path / 'gw.sock'}")
    yield srv, endpoint
    endpoint.close()
    srv.close()


def test_requests_reuse_one_keepalive_connection(server: tuple[_Server, Endpoint]) -> None:
    srv, endpoint = server
    srv.replies = [(200, b'{"n": 1}', False), (200, b'{"n": 2}', False)]
    assert endpoint.post_json("/v3/kv/range", {"key": "a"}, 2.0) == {"n": 1}
    assert endpoint.post_json("/v3/kv/range", {"key": "b"}, 2.0) == {"n": 2}
    assert srv.connections == 1
    assert [json.loads(b) for b in srv.bodies] == [{"key": "a"}, {"key": "b"}]


def test_a_connection_the_server_closed_is_not_reused(server: tuple[_Server, Endpoint]) -> None:
    srv, endpoint = server
    srv.replies = [(200, b"{}", True), (200, b'{"ok": true}', False)]
    endpoint.post_json("/x", {}, 2.0)
    assert endpoint.post_json("/x", {}, 2.0) == {"ok": True}
    assert srv.connections == 2


def test_an_idle_connection_dropped_by_the_server_is_noticed_before_sending(
        server: tuple[_Server, Endpoint]) -> None:
    """The server ends a keep-alive connection while it is idle: the next request opens a new one instead of
    failing as 'sent, outcome unknown'."""
    srv, endpoint = server
    srv.replies = [(200, b"{}", False), None]
    endpoint.post_json("/x", {}, 2.0)
    with pytest.raises(Lost):  # the scripted close, answered to a sent request
        endpoint.post_json("/x", {}, 2.0)
    srv.replies = [(200, b"{}", False)]
    endpoint.post_json("/x", {}, 2.0)  # a fresh connection
    held = endpoint._idle[0]
    held.sock.shutdown(socket.SHUT_RD)  # as if the server had closed it: readable (EOF) while idle
    srv.replies = [(200, b'{"again": 1}', False)]
    assert endpoint.post_json("/x", {}, 2.0) == {"again": 1}
    assert srv.connections == 3


def test_error_answers_say_whether_another_member_may_serve(server: tuple[_Server, Endpoint]) -> None:
    srv, endpoint = server
    srv.replies = [
        (503, b'{"error": "etcdserver: leader changed", "code": 14}', False),
        (500, b'{"error": "etcdserver: request is too large", "code": 8}', False),
        (400, b'{"error": "leader lost", "code": 14}', False),
        (200, b"not json", False),
    ]
    answers = []
    for _ in range(4):
        with pytest.raises(Answered) as err:
            endpoint.post_json("/x", {}, 2.0)
        answers.append((err.value.status, err.value.unavailable))
    assert answers == [(503, True), (500, False), (400, True), (200, False)]


def test_no_socket_file_is_not_sent(tmp_path: Path) -> None:
    endpoint = Endpoint(f"unix://{tmp_path / 'absent.sock'}")
    with pytest.raises(NotSent, match="cannot connect"):
        endpoint.post_json("/x", {}, 1.0)


def test_a_silent_server_is_a_lost_request(tmp_path: Path) -> None:
    """Accepted and never answered: the request was sent, so its outcome is unknown (Lost, not NotSent)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "mute.sock"))
    listener.listen(1)
    try:
        with pytest.raises(Lost, match="timed out"):
            Endpoint(f"unix://{tmp_path / 'mute.sock'}").post_json("/x", {}, 0.3)
    finally:
        listener.close()


@pytest.mark.parametrize(("url", "reason"), [
    ("unix://", "no socket path"),
    ("http://:2379", "no host"),
    ("ftp://etcd:2379", "scheme must be http, https or unix"),
])
def test_bad_endpoints_name_the_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Endpoint(url)


class _RecordingSocket:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def test_a_request_is_one_write_of_headers_and_body() -> None:
    from l3net.datastore.gateway import _UnixConnection

    conn = _UnixConnection("/nonexistent", 1.0)
    sock = _RecordingSocket()
    conn.sock = sock   # type: ignore[assignment]
    body = json.dumps({"key": "a" * 6000}).encode()   # an IPAM block's size: http.client alone writes it apart
    conn.request("POST", "/v3/kv/txn", body=body, headers={"Content-Type": "application/json"})
    assert len(sock.writes) == 1
    head, _, sent = sock.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/kv/txn HTTP/1.1") and f"Content-Length: {len(body)}".encode() in head
    assert sent == body

"""felix.cniserver: one deadline per request frame, so trickling clients cannot pin the workers (issue 13)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from felix.cniserver import CNIServer
from l3net.cni import shim

pytestmark = pytest.mark.unit

DEADLINE = 1.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[CNIServer, list[str]]]:
    served: list[str] = []

    def handler(env: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
        served.append(env.get("CNI_CONTAINERID", ""))
        return 0, '{"ok": true}\n'

    srv = CNIServer(str(tmp_path / "cni.sock"), handler, max_workers=2, read_timeout=DEADLINE)
    srv.start()
    try:
        yield srv, served
    finally:
        srv.stop()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _trickle(path: str, frame: bytes, every: float, results: list[tuple[int, bool]], idx: int) -> None:
    """Send ``frame`` one byte every ``every`` s (each read alone is fast); record bytes sent and whether
    the server cut the connection."""
    s = _connect(path)
    sent, cut = 0, False
    try:
        for b in frame:
            s.sendall(bytes([b]))
            sent += 1
            time.sleep(every)
    except OSError:
        cut = True
    finally:
        if not cut:
            s.settimeout(0.5)
            try:
                cut = s.recv(1) == b""  # closed without a reply
            except OSError:
                cut = True
        s.close()
        results[idx] = (sent, cut)


def test_trickling_clients_are_cut_at_the_request_deadline_and_others_are_served(
        server: tuple[CNIServer, list[str]]) -> None:
    srv, served = server
    frame = shim.request_frame({"CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "slow"}, b"{}")
    every = 0.25  # each byte well inside the old per-read timeout; the whole frame far beyond the deadline
    results: list[tuple[int, bool]] = [(0, False)] * 2
    t0 = time.monotonic()
    threads = [threading.Thread(target=_trickle, args=(srv.path, frame, every, results, i)) for i in range(2)]
    for t in threads:
        t.start()
    # Both workers are held by trickling clients now; a well-behaved request must still be answered once the
    # deadline has freed them (with per-read timeouts they would be held for len(frame) * every seconds).
    time.sleep(0.2)
    s = _connect(srv.path)
    s.settimeout(10 * DEADLINE)
    s.sendall(shim.request_frame({"CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "fast"}, b"{}"))
    reply = shim.read_frame(s)
    waited = time.monotonic() - t0
    s.close()
    for t in threads:
        t.join(timeout=len(frame) * every + 5)
    assert reply["code"] == 0 and served == ["fast"]
    assert len(frame) * every > 10 * DEADLINE  # the trickle would have lasted far longer than the deadline
    assert waited < len(frame) * every / 2     # the fast request was not stuck behind the whole trickle
    for sent, cut in results:
        assert cut and sent < len(frame), results  # cut off before its frame was complete, never served


def test_read_frame_deadline_is_for_the_whole_frame() -> None:
    a, b = socket.socketpair()
    try:
        frame = shim.encode_frame({"v": 1})
        a.sendall(frame[:3])
        with pytest.raises(TimeoutError):
            shim.read_frame(b, deadline=time.monotonic() + 0.3)
        a.sendall(frame[3:])
    finally:
        a.close()
        b.close()

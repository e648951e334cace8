"""bench.tcpconn: new TCP connections per second, run inside workload namespaces.

``python -m bench.tcpconn server PORT`` accepts connections and closes each at once;
``python -m bench.tcpconn client HOST PORT SECONDS`` opens connections one after the
other for SECONDS: connect, wait for the server's close (so every connection is a whole
connect/accept/close cycle), close. It prints ``{"connections": N, "seconds": S,
"errors": E}``. The server closes first, so the client never holds TIME_WAIT and its
ports come back at once. Python on both ends costs the same on every path: compare
paths, not absolute rates.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any


def server(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(4096)
    while True:
        conn, _peer = sock.accept()
        conn.close()


def one(host: str, port: int, timeout: float = 1.0) -> None:
    """One whole cycle: connect, read the server's close (EOF), close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        if s.recv(1) != b"":
            raise OSError("the server sent data instead of closing")


def client(host: str, port: int, seconds: float) -> dict[str, Any]:
    count = errors = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        try:
            one(host, port)
        except OSError:
            errors += 1
            continue
        count += 1
    return {"connections": count, "seconds": time.perf_counter() - t0, "errors": errors}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "server":
        server(int(argv[1]))
        return 0
    if len(argv) >= 4 and argv[0] == "client":
        print(json.dumps(client(argv[1], int(argv[2]), float(argv[3]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

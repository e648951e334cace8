"""bench.udpecho: a UDP request/response round-trip timer, run inside workload namespaces.

``python -m bench.udpecho server PORT`` echoes every datagram back;
``python -m bench.udpecho client HOST PORT COUNT`` sends COUNT 64-byte
datagrams one at a time and prints the round-trip times in microseconds as a
JSON list (lost ones are skipped after a 1 s timeout). Python adds the same
constant cost on every path, so compare paths, not absolute values.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def server(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def client(host: str, port: int, count: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect((host, port))
    rtts: list[float] = []
    payload = b"x" * 64
    for i in range(count + 5):
        t0 = time.perf_counter_ns()
        sock.send(payload)
        try:
            sock.recv(2048)
        except TimeoutError:
            continue
        if i >= 5:  # the first few carry neighbour resolution and cold caches
            rtts.append((time.perf_counter_ns() - t0) / 1000.0)
    return rtts


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "server":
        server(int(argv[1]))
        return 0
    if len(argv) >= 4 and argv[0] == "client":
        print(json.dumps(client(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""bgp.bridge: the thin API process ExaBGP runs; relays lines between ExaBGP and the agent.

``python3 -S -I bgp/bridge.py --socket PATH`` (standard library only: ``bgp.exabgp_proc.bridge_argv``).
ExaBGP writes JSON events and acks to our stdin and reads commands from our
stdout. We connect to the agent's unix socket and copy lines both ways. The bridge holds no state:

- stdin is always drained (also while the agent is away), so ExaBGP never
  blocks on us; lines read while disconnected are dropped (the speaker
  re-sends its whole desired state when we reconnect);
- the agent socket is re-connected with a short backoff if the agent restarts;
- stdin EOF (ExaBGP gone) ends the process, status 0.

Runs two threads: the main thread reads stdin, a daemon thread owns the socket
connection and copies agent lines to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time

_log = logging.getLogger("bgp.bridge")


class Bridge:
    """Relays stdin -> agent socket and agent socket -> stdout. Stateless; survives agent restarts."""

    def __init__(self, path: str, stdin: object = None, stdout: object = None) -> None:
        self.path = path
        self._stdin = stdin or sys.stdin.buffer
        self._stdout = stdout or sys.stdout.buffer
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        return sock

    def _connect_loop(self, first: socket.socket | None) -> None:
        delay = 0.05
        sock = first
        while not self._stop.is_set():
            if sock is None:
                sock = self._connect()
            if sock is None:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            with self._lock:
                self._sock = sock
            _log.info("connected to agent socket=%s", self.path)
            self._pump_agent(sock)
            with self._lock:
                self._sock = None
            with contextlib.suppress(OSError):
                sock.close()
            sock = None
            _log.warning("agent connection lost socket=%s; reconnecting", self.path)

    def _pump_agent(self, sock: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if line.strip())
            if out:
                try:
                    self._stdout.write(out)  # type: ignore[attr-defined]
                    self._stdout.flush()  # type: ignore[attr-defined]
                except (BrokenPipeError, ValueError):
                    self._stop.set()
                    return

    def run(self, first_connect_timeout: float = 5.0) -> int:
        # Connect before reading stdin: ExaBGP's first lines (session state) must reach the
        # agent; the pipe holds them meanwhile. Later disconnections drop lines instead.
        deadline = time.monotonic() + first_connect_timeout
        first = self._connect()
        while first is None and time.monotonic() < deadline:
            time.sleep(0.02)
            first = self._connect()
        if first is not None:
            with self._lock:
                self._sock = first
        threading.Thread(target=self._connect_loop, args=(first,), name="bridge-agent", daemon=True).start()
        while True:
            line = self._stdin.readline()  # type: ignore[attr-defined]
            if not line:
                self._stop.set()
                return 0
            with self._lock:
                sock = self._sock
            if sock is None:
                continue  # drained and dropped: the agent re-sends all on reconnect
            try:
                sock.sendall(line if line.endswith(b"\n") else line + b"\n")
            except OSError:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bgp.bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the agent's unix socket")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"bridge[{os.getpid()}] %(levelname)s %(message)s")
    return Bridge(args.socket).run()


if __name__ == "__main__":
    sys.exit(main())

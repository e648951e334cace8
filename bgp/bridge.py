"""bgp.bridge: the thin API process ExaBGP runs; relays lines between ExaBGP and the agent.

``python3 -S -I bgp/bridge.py --socket PATH`` (``bgp.exabgp_proc.bridge_argv``). ExaBGP writes JSON
events and acks to our stdin and reads commands from our stdout. We connect to the agent's unix
socket and copy lines both ways. The bridge holds no state:

- stdin is always drained (also while the agent is away), so ExaBGP never
  blocks on us; lines read while disconnected are dropped (the speaker
  re-sends its whole desired state when we reconnect);
- the agent socket is re-connected with a short backoff if the agent restarts;
- stdin EOF (ExaBGP gone) ends the process, status 0.

Runs two threads: the main thread reads stdin, a second thread owns the socket
connection and copies agent lines to stdout.

One runs beside every node's ExaBGP for the node's whole life, so it imports only built-in modules
(``_socket``, ``_thread``, ``time``): ``socket``, ``threading``, ``argparse`` and ``logging`` would add
3.4 MiB to its resident memory (12.0 against 8.6 MiB, measured with ``-S -I``).
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys
import time

_AF_UNIX = _socket.AF_UNIX
_SOCK_STREAM = _socket.SOCK_STREAM
_SHUT_RDWR = _socket.SHUT_RDWR


def _log(level: str, message: str) -> None:
    try:
        sys.stderr.write(f"bridge[{os.getpid()}] {level} {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _ignoring_os_errors(call: object, *args: object) -> None:
    """``call(*args)``, an OSError ignored (contextlib.suppress would import functools and collections)."""
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        _log("DEBUG", f"ignored: {exc}")


class Bridge:
    """Relays stdin -> agent socket and agent socket -> stdout. Stateless; survives agent restarts."""

    def __init__(self, path: str, stdin: object = None, stdout: object = None) -> None:
        self.path = path
        self._stdin = stdin or sys.stdin.buffer
        self._stdout = stdout or sys.stdout.buffer
        self._lock = _thread.allocate_lock()
        self._sock: _socket.socket | None = None
        self._stopped = False

    def _connect(self) -> _socket.socket | None:
        sock = _socket.socket(_AF_UNIX, _SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        return sock

    def _connect_loop(self, first: _socket.socket | None) -> None:
        delay = 0.05
        sock = first
        while not self._stopped:
            if sock is None:
                sock = self._connect()
            if sock is None:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            with self._lock:
                self._sock = sock
            _log("INFO", f"connected to agent socket={self.path}")
            self._pump_agent(sock)
            with self._lock:
                self._sock = None
            _ignoring_os_errors(sock.close)
            sock = None
            _log("WARNING", f"agent connection lost socket={self.path}; reconnecting")

    def _pump_agent(self, sock: _socket.socket) -> None:
        buf = b""
        while not self._stopped:
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
                    self._stopped = True
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
        # A _thread thread does not keep the process alive: returning from run() ends the bridge.
        _thread.start_new_thread(self._connect_loop, (first,))
        while True:
            line = self._stdin.readline()  # type: ignore[attr-defined]
            if not line:
                self._stopped = True
                return 0
            with self._lock:
                sock = self._sock
            if sock is None:
                continue  # drained and dropped: the agent re-sends all on reconnect
            try:
                sock.sendall(line if line.endswith(b"\n") else line + b"\n")
            except OSError:
                _ignoring_os_errors(sock.shutdown, _SHUT_RDWR)


_USAGE = "usage: bgp.bridge --socket PATH (the agent's unix socket)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--socket" and args[1]:
        path = args[1]
    elif len(args) == 1 and args[0].startswith("--socket=") and len(args[0]) > len("--socket="):
        path = args[0][len("--socket="):]
    else:
        sys.stderr.write(f"{_USAGE}\n")
        return 2
    return Bridge(path).run()


if __name__ == "__main__":
    sys.exit(main())

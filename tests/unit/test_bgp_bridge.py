"""bgp.bridge run as ExaBGP runs it (``python -S -I bridge.py --socket PATH``): lines relayed both ways,
the agent's socket re-connected after a restart, stdin's end ending the bridge, and built-in imports only."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp.exabgp_proc import bridge_argv

pytestmark = pytest.mark.unit


def _accept(listener: socket.socket, timeout: float = 5.0) -> socket.socket:
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    conn.settimeout(timeout)
    return conn


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _relayed_after_reconnect(bridge: subprocess.Popen[bytes], agent: socket.socket, line: bytes) -> bytes:
    """Write ``line`` to the bridge's stdin until the reconnected agent receives it: a line read while the
    bridge is between connections is dropped by design (the agent re-sends its state on reconnect), and the
    agent's accept can return before the bridge has taken the new connection into use."""
    assert bridge.stdin is not None
    agent.settimeout(0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        bridge.stdin.write(line)
        bridge.stdin.flush()
        try:
            got = agent.recv(4096)
        except TimeoutError:
            continue
        agent.settimeout(5.0)
        return got[:len(line)]
    raise AssertionError(f"{line!r} never reached the reconnected agent")


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "bgp.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    yield path, listener
    listener.close()


def _start(path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*bridge_argv(sys.executable, path), *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_relays_both_ways_and_reconnects_after_an_agent_restart(agent_socket: tuple[Path, socket.socket]) -> None:
    path, listener = agent_socket
    bridge = _start(path)
    try:
        assert bridge.stdin is not None and bridge.stdout is not None
        agent = _accept(listener)
        bridge.stdin.write(b'{"type": "state", "neighbor": "n1"}\n')
        bridge.stdin.flush()
        assert _read_line(agent) == b'{"type": "state", "neighbor": "n1"}\n'
        agent.sendall(b"announce route 10.0.0.0/26 next-hop self\n\n")  # the blank line is not relayed
        assert bridge.stdout.readline() == b"announce route 10.0.0.0/26 next-hop self\n"

        agent.close()  # the agent restarts: the bridge connects again
        agent = _accept(listener)
        assert _relayed_after_reconnect(bridge, agent, b"done\n") == b"done\n"
        agent.sendall(b"withdraw route 10.0.0.0/26\n")
        assert bridge.stdout.readline() == b"withdraw route 10.0.0.0/26\n"

        bridge.stdin.close()  # ExaBGP gone
        assert bridge.wait(timeout=5) == 0
        agent.close()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


def test_imports_only_built_in_modules(agent_socket: tuple[Path, socket.socket]) -> None:
    """The bridge lives as long as its node: it must not pull in socket, threading, argparse or logging."""
    path, _listener = agent_socket
    cmd = bridge_argv(sys.executable, path)
    cmd.insert(1, "-X")
    cmd.insert(2, "importtime")
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=True)
    imported = {line.split("|")[-1].strip() for line in out.stderr.decode().splitlines() if "|" in line}
    assert "_socket" in imported  # the census sees the bridge's own imports
    assert not imported & {"socket", "threading", "argparse", "logging", "selectors", "enum", "re"}


@pytest.mark.parametrize("args", [[], ["--socket"], ["--socket", ""], ["--sock", "x"], ["--socket="]])
def test_bad_arguments_exit_2_with_usage(tmp_path: Path, args: list[str]) -> None:
    argv = bridge_argv(sys.executable, tmp_path / "x.sock")[:-2] + args
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert out.returncode == 2 and b"usage: bgp.bridge --socket PATH" in out.stderr


def test_stdin_is_drained_while_the_agent_is_away(tmp_path: Path) -> None:
    """No agent socket at all: ExaBGP's lines are read and dropped, never left to fill the pipe."""
    bridge = _start(tmp_path / "absent.sock")
    try:
        assert bridge.stdin is not None
        bridge.stdin.write(b"x" * 100 + b"\n" * 20_000)  # more than a pipe buffer holds
        bridge.stdin.close()
        assert bridge.wait(timeout=15) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()

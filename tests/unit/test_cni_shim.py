"""The l3net-cni shim's protocol: fallback rules, exact relay, clear errors for bad replies; the agent's server."""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from felix import cniserver
from l3net.cni import hostlock, shim
from tests.waiting import seconds_until

pytestmark = pytest.mark.unit

CONF = {"cniVersion": "0.4.0", "name": "net", "type": "l3net-cni"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "L3NET_NODENAME": "n1", "HOME": "/root", "PATH": "/bin"}


def stdin_for(path: str | None, **extra: object) -> bytes:
    doc: dict[str, object] = {**CONF, **extra}
    if path is not None:
        doc["agentSocket"] = path
    return json.dumps(doc).encode()


class FakeAgent:
    """A unix socket server in a thread that records the request and answers with ``respond(conn, request)``."""

    def __init__(self, path: str, respond: Callable[[socket.socket, dict], None]) -> None:
        self.path = path
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.respond = respond
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:  # closed without a client
            return
        with conn:
            req = shim.read_frame(conn)
            self.requests.append(req)
            self.respond(conn, req)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "cni.sock")


def run_shim(stdin: bytes, environ: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = shim.run(environ or ENV, stdin, out, err)
    return code, out.getvalue(), err.getvalue()


# -- fallback rules ----------------------------------------------------------------------------
def test_no_socket_file_falls_back_quietly(sock_path: str) -> None:
    assert run_shim(stdin_for(sock_path)) == (None, "", "")


def test_refused_socket_falls_back(sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # a socket file nobody listens on (a crashed agent's)
    stale.close()
    code, out, err = run_shim(stdin_for(sock_path))
    assert (code, out) == (None, "") and "running the plugin in-process" in err


def test_empty_agent_socket_switches_the_fast_path_off(sock_path: str) -> None:
    agent = FakeAgent(sock_path, lambda conn, _r: conn.sendall(shim.reply_frame(0, "{}")))
    try:
        assert run_shim(stdin_for(""))[0] is None
        assert agent.requests == []
    finally:
        agent.close()


def test_default_socket_path_comes_from_env_then_constant() -> None:
    assert shim.socket_path({}, b"{}") == shim.DEFAULT_AGENT_SOCKET
    assert shim.socket_path({"L3NET_CNI_AGENT_SOCKET": "/x/s"}, b"not json") == "/x/s"
    assert shim.socket_path({}, stdin_for("/y/s")) == "/y/s"
    assert shim.socket_path({}, stdin_for(None, agentSocket=5)) == shim.DEFAULT_AGENT_SOCKET


# -- relay ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,text", [(0, '{"cniVersion": "0.4.0", "ips": []}\n'),
                                       (1, '{"cniVersion": "0.4.0", "code": 7, "msg": "mtu: bad"}\n')])
def test_reply_text_and_exit_code_are_relayed_exactly(sock_path: str, code: int, text: str) -> None:
    agent = FakeAgent(sock_path, lambda conn, _r: conn.sendall(shim.reply_frame(code, text)))
    try:
        raw = stdin_for(None) + b"\xff\x00 trailing bytes"  # not even UTF-8: must arrive byte for byte
        assert run_shim(raw, {**ENV, "L3NET_CNI_AGENT_SOCKET": sock_path}) == (code, text, "")
        env, stdin = shim.decode_request(agent.requests[0])
        assert stdin == raw
        # the shim's start stamp (the agent's ADD trace origin) rides along with the request's own variables
        started = float(env.pop(shim.ENV_CNI_STARTED))
        assert 0 <= time.monotonic() - started < 60
        assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "L3NET_NODENAME": "n1",
                       "L3NET_CNI_AGENT_SOCKET": sock_path}
    finally:
        agent.close()


def _bad_header(conn: socket.socket, _r: dict) -> None:
    conn.sendall(struct.pack(">I", shim.MAX_FRAME + 1) + b"x" * 16)


def _garbled(conn: socket.socket, _r: dict) -> None:
    conn.sendall(struct.pack(">I", 5) + b"{nope")


def _bad_code(conn: socket.socket, _r: dict) -> None:
    conn.sendall(shim.encode_frame({"v": 1, "code": "zero", "stdout": ""}))


def _closed(conn: socket.socket, _r: dict) -> None:
    conn.close()


def _truncated(conn: socket.socket, _r: dict) -> None:
    conn.sendall(shim.reply_frame(0, "{}")[:-1])


@pytest.mark.parametrize("respond,reason", [(_bad_header, "exceeds the limit"), (_garbled, "not JSON"),
                                            (_bad_code, "code: 'zero'"), (_closed, "connection closed"),
                                            (_truncated, "connection closed")])
def test_a_bad_reply_after_sending_is_try_again_later_never_a_fallback(sock_path: str, respond, reason) -> None:
    agent = FakeAgent(sock_path, respond)
    try:
        code, out, err = run_shim(stdin_for(sock_path))
    finally:
        agent.close()
    assert code == 1 and len(agent.requests) == 1
    obj = json.loads(out)
    assert obj["code"] == 11 and obj["cniVersion"] == "0.4.0" and reason in obj["details"]
    assert "no valid reply" in err


def test_a_reply_that_never_comes_times_out_as_try_again_later(sock_path: str) -> None:
    hold = threading.Event()
    agent = FakeAgent(sock_path, lambda _c, _r: hold.wait(5))
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            shim.call_agent(sock_path, ENV, stdin_for(sock_path), reply_timeout=0.3)
        assert time.monotonic() - t0 < 4
    finally:
        hold.set()
        agent.close()


def test_request_decoding_names_the_bad_part() -> None:
    with pytest.raises(shim.FrameError, match="protocol version"):
        shim.decode_request({"v": 2, "env": {}, "stdin": ""})
    with pytest.raises(shim.FrameError, match="env"):
        shim.decode_request({"v": 1, "env": {"A": 1}, "stdin": ""})
    with pytest.raises(shim.FrameError, match="stdin"):
        shim.decode_request({"v": 1, "env": {}, "stdin": "***"})


def test_the_shim_imports_nothing_heavy() -> None:
    code = ("import sys, l3net.cni.shim; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2', 'etcd3gw', 'requests', 'prometheus_client', 'yaml')] "
            "+ [m for m in sys.modules if m.startswith('l3net.') and m not in "
            "('l3net.cni', 'l3net.cni.shim', 'l3net.cni.errors', 'l3net.constants')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_json_is_a_value_error_without_the_json_package_loaded() -> None:
    """The C scanner's error path needs json.decoder in sys.modules; the shim runs without it (-S, no json)."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(shim.__file__).resolve().parents[2])!r})\n"
        "from l3net.cni import shim\n"
        "assert 'json.decoder' not in sys.modules\n"
        "for text in ('{not json', '[1,', '1 2', '', '{\"a\": }'):\n"
        "    try:\n"
        "        shim.json_loads(text)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise SystemExit(f'no error for {text!r}')\n"
        "print(shim.socket_path({}, b'{not json') == shim.DEFAULT_AGENT_SOCKET)\n")
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "True", out


def test_the_shims_path_through_the_agent_imports_no_slow_stdlib_module(sock_path: str) -> None:
    """With -S (as nodes run it) and a whole ADD relayed: none of json, re, enum, socket, base64 or typing."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(shim.__file__).resolve().parents[2])!r})\n"
        "from l3net.cni import shim\n"
        "code = shim.run({'L3NET_CNI_AGENT_SOCKET': sys.argv[1], 'CNI_COMMAND': 'ADD'}, b'{\"cniVersion\": \"1.0.0\"}',"
        " sys.stdout, sys.stderr)\n"
        "slow = ('json', 're', 'enum', 'socket', 'base64', 'typing', 'collections')\n"
        "print(code, sorted(m for m in slow if m in sys.modules), file=sys.stderr)\n")
    agent = FakeAgent(sock_path, lambda conn, _r: conn.sendall(shim.reply_frame(0, '{"ips": []}\n')))
    try:
        out = subprocess.run([sys.executable, "-S", "-c", script, sock_path], capture_output=True, text=True,
                             check=True, timeout=30)
    finally:
        agent.close()
    assert out.stdout == '{"ips": []}\n' and out.stderr.strip() == "0 []", out


# -- the agent's server (a fake handler: the real plugin is in tests/netns/test_cni_agent.py) -----------
def test_server_socket_is_0600_and_serves_the_handler(sock_path: str) -> None:
    seen: list[tuple[dict, bytes]] = []

    def handler(env, stdin):
        seen.append(({k: v for k, v in env.items() if k != shim.ENV_CNI_STARTED}, stdin))
        return 3, "out-text\n"
    server = cniserver.CNIServer(sock_path, handler)
    server.start()
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock_path).st_mode)
        assert run_shim(stdin_for(sock_path)) == (3, "out-text\n", "")
        assert seen == [({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "L3NET_NODENAME": "n1"},
                         stdin_for(sock_path))]
    finally:
        server.stop()
    assert not os.path.exists(sock_path)


def test_server_drops_a_garbled_request_and_survives_a_handler_bug(sock_path: str) -> None:
    def handler(env, stdin):
        raise RuntimeError("bug")
    server = cniserver.CNIServer(sock_path, handler)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            s.sendall(struct.pack(">I", 3) + b"abc")
            assert s.recv(10) == b""  # no reply to garbage
        code, out, _ = run_shim(stdin_for(sock_path))  # a handler bug: outcome unknown
        assert code == 1 and json.loads(out)["code"] == 11
        assert cniserver.REQUESTS.labels(command="unknown", result="bad_request")._value.get() >= 1
        assert cniserver.REQUESTS.labels(command="ADD", result="bug")._value.get() >= 1
    finally:
        server.stop()


def test_server_replaces_a_stale_socket_but_never_a_regular_file(sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    server = cniserver.CNIServer(sock_path, lambda e, s: (0, ""))
    server.start()
    with pytest.raises(ValueError, match="another live process"):
        cniserver.CNIServer(sock_path, lambda e, s: (0, "")).start()
    assert run_shim(stdin_for(sock_path))[0] == 0  # the first one still serves
    server.stop()
    Path(sock_path).write_text("precious")
    with pytest.raises(ValueError, match="not a socket"):
        cniserver.CNIServer(sock_path, lambda e, s: (0, "")).start()
    assert Path(sock_path).read_text() == "precious"
    with pytest.raises(ValueError, match="longer than"):
        cniserver.CNIServer("/tmp/" + "x" * 120, lambda e, s: (0, "")).start()


# -- the per-node IPAM lock: threads of one process and separate processes -------------------------
def test_node_lock_excludes_threads_of_one_process(tmp_path: Path) -> None:
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with hostlock.node_lock("n1", directory=str(tmp_path)):
            held.set()
            release.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(TimeoutError), hostlock.node_lock("n1", timeout=0.2, directory=str(tmp_path)):
            pass
    finally:
        release.set()
        t.join(5)
    with hostlock.node_lock("n1", timeout=1, directory=str(tmp_path)):
        pass


def test_node_lock_waiter_enters_after_the_holder_leaves(tmp_path: Path) -> None:
    order: list[str] = []
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with hostlock.node_lock("n1", directory=str(tmp_path)):
            held.set()
            release.wait(5)
            order.append("holder out")

    def waiter() -> None:
        with hostlock.node_lock("n1", timeout=10, directory=str(tmp_path)):
            order.append("waiter in")

    h = threading.Thread(target=holder)
    h.start()
    assert held.wait(5)
    w = threading.Thread(target=waiter)
    w.start()
    w.join(0.3)
    assert w.is_alive() and order == []  # still blocked behind the holder
    release.set()
    h.join(5)
    w.join(5)
    assert order == ["holder out", "waiter in"]


def test_node_lock_abandoned_waiter_lets_go_when_it_gets_the_lock(tmp_path: Path) -> None:
    """A waiter that timed out must not keep the lock when its blocked flock finally returns."""
    path = hostlock.lock_path("n1", str(tmp_path))
    code = ("import sys, time; from l3net.cni import hostlock\n"
            "with hostlock.node_lock('n1', directory=sys.argv[1]):\n"
            "    print('held', flush=True); sys.stdin.readline()\n")

    def waiters() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"flock-wait {path}"]
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="still held"), \
                hostlock.node_lock("n1", timeout=0.2, directory=str(tmp_path)):
            pass
        assert len(waiters()) == 1  # the abandoned waiter, still in its flock
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait(10)
    # the waiter wakes, lets go and ends; then the lock is free to a non-blocking attempt
    assert seconds_until(lambda: not waiters(), 10) is not None, "the abandoned waiter never ended"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if the waiter kept it
    finally:
        os.close(fd)


def test_node_lock_excludes_another_process(tmp_path: Path) -> None:
    code = ("import sys, time; from l3net.cni import hostlock\n"
            "with hostlock.node_lock('n1', directory=sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError), hostlock.node_lock("n1", timeout=0.2, directory=str(tmp_path)):
            pass
    finally:
        proc.kill()
        proc.wait(10)
    with hostlock.node_lock("n1", timeout=2, directory=str(tmp_path)):
        pass

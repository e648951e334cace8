"""l3net.cni.shim: the ``l3net-cni`` entry point: hand the request to the node agent, or run the plugin here.

Standard library only, and only its C-backed parts on the path through the agent: ``_json``,
``binascii`` and ``_socket`` rather than ``json``, ``base64`` and ``socket``, whose imports (``re``,
``enum``) cost ~12 ms of every ADD's start on top of the interpreter's ~8 ms. The full plugin imports
~0.5 s of pyroute2, the etcd client and the model. When the agent's CNI socket (netconf field
``agentSocket``, default :data:`DEFAULT_AGENT_SOCKET`; ``""`` switches the fast
path off) accepts a connection, the shim sends ``{env, stdin}`` in one frame and
relays the agent's stdout text and exit code exactly. The agent runs the very
same :func:`l3net.cni.plugin.run` (``felix.cniserver``).

Fallback rule (Calico's robustness, Cilium's speed): only while the request has
certainly not reached the agent (no socket file, connection refused, connect
timed out, or the frame could not be written completely: the agent acts only on
a complete frame) does the shim run the plugin in its own process. Once the
frame is sent, the outcome is unknown on any failure (timeout, reset, garbled or
oversized reply): the shim prints CNI error 11 "try again later" and never runs
the request a second time.

Wire format (both directions): a 4-byte big-endian length, then that many bytes
of UTF-8 JSON. Request ``{"v": 1, "env": {CNI_* and L3NET_* variables},
"stdin": base64}``; reply ``{"v": 1, "code": exit status, "stdout": text}``.
"""

from __future__ import annotations

import _socket
import binascii
import os
import struct
import sys
import time

from l3net.cni.errors import TRY_AGAIN_LATER
from l3net.constants import ENV_CNI_STARTED

try:
    import _json
except ImportError:  # an interpreter without CPython's accelerator: the json package, re and all
    _json = None

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is what this avoids
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms of every ADD's start
    import socket
    from collections.abc import Mapping
    from typing import IO, Any

PROTOCOL_VERSION = 1
DEFAULT_AGENT_SOCKET = "/var/run/l3net/cni.sock"
NETCONF_FIELD = "agentSocket"
ENV_AGENT_SOCKET = "L3NET_CNI_AGENT_SOCKET"
ENV_PREFIXES = ("CNI_", "L3NET_")
MAX_FRAME = 4 << 20  # a CNI result or request is a few KiB; anything near this is garbage
CONNECT_TIMEOUT = 1.0
# ADD may wait up to 60 s for the node's IPAM lock, then talks to etcd: leave room for both.
REPLY_TIMEOUT = 120.0
_HEADER = struct.Struct(">I")
_SUPPORTED = ("0.4.0", "1.0.0", "1.1.0")


class _ScanContext:
    """What ``_json.make_scanner`` reads from json.JSONDecoder: the defaults of ``json.loads``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_SCAN = _json.make_scanner(_ScanContext()) if _json is not None else None
_JSON_SPACE = " \t\n\r"


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` for UTF-8 text without importing json (its decoder imports ``re``); ValueError if bad."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")  # as json.loads reads bytes: a UTF-8 BOM is allowed
    if _SCAN is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        obj, end = _SCAN(text, start)
    except StopIteration as exc:
        raise ValueError(f"expecting a JSON value at char {exc.value}") from None
    except SystemError:
        # The accelerator raises json.decoder.JSONDecodeError only when json.decoder is loaded already;
        # without it (this module's point) it returns NULL with no exception. The json package names the error.
        import json

        return json.loads(text)
    if text[end:].strip(_JSON_SPACE):
        raise ValueError(f"extra data after the JSON value at char {end}")
    return obj


def json_dumps(obj: object) -> str:
    """Compact ``json.dumps`` (ASCII, separators ``,`` and ``:``) of objects of strings, ints and bools."""
    if _json is None:
        import json

        return json.dumps(obj, separators=(",", ":"))
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    if obj is None or isinstance(obj, bool):
        return {None: "null", True: "true", False: "false"}[obj]
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return "{" + ",".join(f"{_json.encode_basestring_ascii(k)}:{json_dumps(v)}" for k, v in obj.items()) + "}"
    raise TypeError(f"not encodable in a frame: {type(obj).__name__}")


class FrameError(Exception):
    """A frame that is truncated, too large or not the JSON object the protocol expects."""


class NotSent(Exception):
    """The request certainly did not reach the agent (the caller may run the plugin itself)."""


# -- framing (shared with felix.cniserver) ----------------------------------------------
def encode_frame(obj: Mapping[str, Any]) -> bytes:
    body = json_dumps(obj).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            # One deadline for the whole frame, not per read: a client trickling a byte at a time
            # cannot hold the reader longer than the deadline.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"frame not complete by its deadline ({got} of {n} bytes)")
            sock.settimeout(remaining)
        chunk = sock.recv(min(n - got, 1 << 16))
        if not chunk:
            raise FrameError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, limit: int = MAX_FRAME, deadline: float | None = None) -> dict[str, Any]:
    """One frame from ``sock``; FrameError when short, over ``limit`` or not a JSON object.

    ``deadline`` (``time.monotonic()`` value): the whole frame must arrive by then
    (TimeoutError otherwise), however the sender splits it.
    """
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if length > limit:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {limit}")
    body = _recv_exact(sock, length, deadline)
    try:
        obj = json_loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is a JSON {type(obj).__name__}, not an object")
    return obj


def request_frame(environ: Mapping[str, str], stdin: bytes) -> bytes:
    env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES)}
    return encode_frame({"v": PROTOCOL_VERSION, "env": env,
                         "stdin": binascii.b2a_base64(stdin, newline=False).decode("ascii")})


def decode_request(obj: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """The agent's side: (env, stdin) of a request frame; FrameError naming what is wrong."""
    if obj.get("v") != PROTOCOL_VERSION:
        raise FrameError(f"v: protocol version {obj.get('v')!r} is not {PROTOCOL_VERSION}")
    env = obj.get("env")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise FrameError("env: must be an object of strings")
    try:
        stdin = binascii.a2b_base64(str(obj.get("stdin", "")).encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FrameError(f"stdin: not base64: {exc}") from None
    return env, stdin


def reply_frame(code: int, stdout: str) -> bytes:
    return encode_frame({"v": PROTOCOL_VERSION, "code": code, "stdout": stdout})


def decode_reply(obj: Mapping[str, Any]) -> tuple[int, str]:
    code, out = obj.get("code"), obj.get("stdout")
    if obj.get("v") != PROTOCOL_VERSION:
        raise FrameError(f"v: protocol version {obj.get('v')!r} is not {PROTOCOL_VERSION}")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise FrameError(f"code: {code!r} is not an exit status")
    if not isinstance(out, str):
        raise FrameError("stdout: must be a string")
    return code, out


# -- the client -------------------------------------------------------------------------
def socket_path(environ: Mapping[str, str], stdin: bytes) -> str | None:
    """Where the agent listens, or None when the fast path is off (``"agentSocket": ""``).

    A netconf that does not parse, or a field that is not a string, gives the
    default: the agent (or the fallback plugin) reports the error with its field path.
    """
    try:
        doc = json_loads(stdin)
    except ValueError:  # UnicodeDecodeError is one
        doc = None
    value = doc.get(NETCONF_FIELD) if isinstance(doc, dict) else None
    if isinstance(value, str):
        return value or None
    return environ.get(ENV_AGENT_SOCKET) or DEFAULT_AGENT_SOCKET


def call_agent(path: str, environ: Mapping[str, str], stdin: bytes, *, connect_timeout: float = CONNECT_TIMEOUT,
               reply_timeout: float = REPLY_TIMEOUT) -> tuple[int, str]:
    """Send one request to the agent at ``path``; (exit code, stdout text).

    Raises NotSent when the agent certainly did not get it, FrameError or OSError
    (outcome unknown) after it was sent.
    """
    frame = request_frame(environ, stdin)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(path)
        except OSError as exc:  # missing, refused, not a socket, timed out: nothing was sent
            raise NotSent(f"connect {path}: {exc}") from None
        sock.settimeout(reply_timeout)
        try:
            sock.sendall(frame)
        except OSError as exc:
            # An incomplete frame is never acted on (the agent reads the whole frame first).
            raise NotSent(f"send to {path}: {exc}") from None
        return decode_reply(read_frame(sock))
    finally:
        sock.close()


def peek_version(stdin: bytes) -> str:
    try:
        v = json_loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return "1.0.0"
    return v if isinstance(v, str) and v in _SUPPORTED else "1.0.0"


def try_later(stdin: bytes, why: str) -> str:
    err = {"cniVersion": peek_version(stdin), "code": TRY_AGAIN_LATER,
           "msg": "the l3net agent did not answer; outcome unknown, try again later", "details": why}
    return json_dumps(err) + "\n"


def run(environ: Mapping[str, str], stdin: bytes, out: IO[str], err: IO[str],
        started: float | None = None) -> int | None:
    """One invocation through the agent: the exit code, or None when the caller must run the plugin itself.

    ``started``: this process's time.monotonic() at its start (now when None), sent as ``L3NET_CNI_STARTED``.
    """
    path = socket_path(environ, stdin)
    if path is None:
        return None
    # The agent's ADD trace starts here (CLOCK_MONOTONIC is one clock for every process on the host).
    environ = {**environ, ENV_CNI_STARTED: repr(started if started is not None else time.monotonic())}
    try:
        code, text = call_agent(path, environ, stdin)
    except NotSent as exc:
        if not isinstance(exc.__context__, FileNotFoundError):
            # No socket file at all is the ordinary "agent not running": stay quiet then.
            err.write(f"l3net-cni: agent socket unusable, running the plugin in-process: {exc}\n")
        return None
    except (FrameError, OSError) as exc:
        text, code = try_later(stdin, f"{path}: {type(exc).__name__}: {exc}"), 1
        err.write(f"l3net-cni: request sent to the agent but no valid reply: {exc}\n")
    out.write(text)
    out.flush()
    return code


def main() -> None:
    started = time.monotonic()
    stdin = sys.stdin.buffer.read()
    code = run(os.environ, stdin, sys.stdout, sys.stderr, started)
    if code is not None:
        sys.exit(code)
    from l3net.cni import plugin  # the slow import, only when the agent is not there

    plugin.main(stdin)

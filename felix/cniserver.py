"""felix.cniserver: the agent serves CNI requests on a unix socket (the ``l3net-cni`` fast path).

The ``l3net-cni`` shim (``l3net.cni.shim``) sends one frame ``{env, stdin}``;
a worker thread runs the very same :func:`l3net.cni.plugin.run` the plugin runs
in its own process, with the request's environment as a mapping and the
agent's warm datastore connection, and answers ``{code, stdout}``. Nothing here
runs on the agent's asyncio loop: one accept thread plus a small pool of worker
threads. The per-node IPAM lock (``l3net.cni.hostlock``, flock per open file)
excludes those threads from each other and from fallback plugin processes.

The socket is created mode 0600 (bound under a temporary name, chmod-ed, then
renamed into place, so it is never reachable with looser permissions). A stale
socket file left by a crashed agent (nobody accepts on it) is replaced; a socket
another live process serves, or any other file at the path, is refused
(ValueError). A request frame that does not decode, or does not arrive whole within one
request deadline (:data:`REQUEST_READ_TIMEOUT`, for the frame, not per read), gets no reply (the shim
then reports CNI error 11); a failure inside the plugin is its CNI error
object, as in the plugin's own process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from felix.endpointready import ProgrammedEndpoints
from l3net.cni import plugin, shim
from l3net.cni.config import COMMANDS
from l3net.datastore.base import Datastore

_log = logging.getLogger(__name__)

SOCKET_NAME = "cni.sock"
MAX_WORKERS = 4
# One deadline for the whole request frame (not per read), so a slow or trickling client holds a
# worker for at most this long; the reply gets the same bound for its one sendall.
REQUEST_READ_TIMEOUT = 10.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL

REQUESTS = Counter("l3net_cni_requests", "CNI requests served by the agent's socket, by command and result "
                   "(ok, error: a CNI error object, bad_request: the frame did not decode).",
                   ["command", "result"], registry=None)
REQUEST_TIME = Histogram("l3net_cni_request_seconds", "Wall time of one CNI request served by the agent, by command.",
                         ["command"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
                         registry=None)
POLICY_SETUP_TIME = Histogram(
    "l3net_cni_policy_setup_seconds", "Time a CNI ADD served by the agent held its result until the agent had "
    "programmed the new pod's route and policy (policy_setup_timeout_seconds), by result (programmed, timeout).",
    ["result"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=None)
ALL = (REQUESTS, REQUEST_TIME, POLICY_SETUP_TIME)

Handler = Callable[[Mapping[str, str], bytes], tuple[int, str]]


def register_into(registry: CollectorRegistry) -> None:
    """Expose the CNI metrics through ``registry`` (the agent's); idempotent."""
    for collector in ALL:
        with contextlib.suppress(ValueError):  # already registered there
            registry.register(collector)


def default_socket_path(run_dir: str) -> str:
    """``<run_dir>/cni.sock``: with the default run dir that is the shim's default, /var/run/l3net/cni.sock."""
    return str(Path(run_dir) / SOCKET_NAME)


def plugin_handler(ds: Datastore, endpoints: str, *, programmed: ProgrammedEndpoints | None = None,
                   tracer: plugin.AddTracer | None = None) -> Handler:
    """Run a request exactly as the plugin process would, on the agent's datastore connection.

    ``programmed``: the agent's record of programmed workloads; an ADD whose netconf sets
    ``policy_setup_timeout_seconds`` holds its result until the new pod is in it.
    ``tracer``: the agent's ADD trace book (``felix.addtrace``), which each ADD opens and marks.
    """
    shared = plugin.SharedDatastore(ds, endpoints)
    wait = None if programmed is None else _timed_wait(programmed)

    def handle(env: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
        out = io.StringIO()
        code = plugin.run(env, stdin, out, shared=shared, set_log_level=False, wait_programmed=wait, tracer=tracer)
        return code, out.getvalue()
    return handle


def _timed_wait(programmed: ProgrammedEndpoints) -> plugin.ProgrammedWait:
    def wait(interface: str, revision: int, timeout: float) -> bool:
        t0 = time.monotonic()
        ok = programmed.wait(interface, revision, timeout)
        POLICY_SETUP_TIME.labels(result="programmed" if ok else "timeout").observe(time.monotonic() - t0)
        return ok
    return wait


class CNIServer:
    """Owns the CNI unix socket, its accept thread and worker threads; never touches the asyncio loop.

    ``start()`` binds (ValueError for a path that is too long or is not a socket;
    OSError when the directory is not writable) and starts accepting; ``stop()``
    closes the socket, removes its file and waits for requests in progress.
    A bug in ``handler`` (an exception it lets through) is logged with its
    traceback and the connection closed without a reply: the shim reports
    "outcome unknown, try again later".
    """

    def __init__(self, path: str, handler: Handler, *, max_workers: int = MAX_WORKERS,
                 read_timeout: float = REQUEST_READ_TIMEOUT) -> None:
        self.path = path
        self.handler = handler
        self.max_workers = max_workers
        self.read_timeout = read_timeout
        self._sock: socket.socket | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ValueError(f"CNI socket path {self.path!r} is longer than {SUN_PATH_MAX} bytes")
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._remove_stale()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        if len(os.fsencode(tmp)) > SUN_PATH_MAX:
            tmp = os.path.join(os.path.dirname(self.path), f".cni{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, self.path)
            sock.listen(64)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sock = sock
        self._pool = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="l3net-cni")
        self._thread = threading.Thread(target=self._accept_loop, name="l3net-cni-accept", daemon=True)
        self._thread.start()
        _log.info("serving CNI requests path=%s workers=%d", self.path, self.max_workers)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ValueError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: a crashed agent's leftover
            return
        finally:
            probe.close()
        raise ValueError(f"{self.path} is served by another live process (a second agent with the same run dir?)")

    def stop(self) -> None:
        self._stopping.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _accept_loop(self) -> None:
        sock, pool = self._sock, self._pool
        assert sock is not None and pool is not None
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                _log.exception("CNI socket accept failed path=%s", self.path)
                time.sleep(0.1)
                continue
            try:
                pool.submit(self._serve, conn)
            except RuntimeError:  # pool shut down: we are stopping
                conn.close()
                return

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            deadline = time.monotonic() + self.read_timeout
            try:
                env, stdin = shim.decode_request(shim.read_frame(conn, deadline=deadline))
            except (shim.FrameError, OSError) as exc:
                REQUESTS.labels(command="unknown", result="bad_request").inc()
                _log.warning("CNI request dropped: %s", exc)
                return
            command = env.get("CNI_COMMAND", "") if env.get("CNI_COMMAND") in COMMANDS else "unknown"
            t0 = time.monotonic()
            try:
                code, out = self.handler(env, stdin)
            except Exception:
                REQUESTS.labels(command=command, result="bug").inc()
                _log.exception("CNI request handler failed command=%s container=%s", command,
                               env.get("CNI_CONTAINERID", "")[:12])
                return
            REQUEST_TIME.labels(command=command).observe(time.monotonic() - t0)
            REQUESTS.labels(command=command, result="ok" if code == 0 else "error").inc()
            _log.info("CNI %s served container=%s code=%d ms=%.1f", command, env.get("CNI_CONTAINERID", "")[:12],
                      code, (time.monotonic() - t0) * 1000)
            try:
                conn.settimeout(self.read_timeout)  # sendall: one bound for the whole reply
                conn.sendall(shim.reply_frame(code, out))
            except (OSError, shim.FrameError) as exc:
                _log.warning("CNI reply not delivered command=%s: %s", command, exc)

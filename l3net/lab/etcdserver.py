"""l3net.lab.etcdserver: start and stop a private etcd server (the lab's and the tests').

The server listens on a unix socket in its run directory (reachable from every
network namespace) and, when asked, on a loopback TCP port as well. Its data
directory sits on tmpfs when the caller gives one, since etcd 3.4 has no
switch to skip fsync.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from l3net.datastore.gateway import Endpoint, GatewayError
from l3net.lab.procs import cmdline, starttime

_log = logging.getLogger(__name__)

SOCKET_NAME = "etcd.sock:0"
IDENT_FILE = "etcd.ident.json"  # {pid, starttime, data_dir} of the running etcd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerTLS:
    """TLS for the loopback client listener: server certificate and key, and the CA that signs client
    certificates (given: etcd demands a client certificate signed by it, ``--client-cert-auth``)."""

    cert: str
    key: str
    client_ca: str | None = None


class EtcdServer:
    """One etcd process. Not thread-safe; ``stop()`` is idempotent.

    ``run_dir`` holds the socket, the log and (unless ``data_dir`` is given)
    the data. ``client_port`` adds a loopback listener for tools on the host;
    with ``tls`` that listener speaks ``https://`` (the unix socket stays plain
    HTTP: it is guarded by file permissions, and etcd ignores TLS on ``unix://``).
    """

    def __init__(self, run_dir: str | Path, *, data_dir: str | Path | None = None,
                 client_port: int | None = None, name: str = "l3net", tls: ServerTLS | None = None,
                 peer_port: int | None = None, cluster: Mapping[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir) if data_dir else self.run_dir / "etcd-data"
        self.client_port = client_port
        self.peer_port = peer_port or free_port()
        self.name = name
        self.tls = tls
        # Member name -> peer URL of every member (this one included); None: a cluster of one.
        self.cluster = dict(cluster) if cluster else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.run_dir / SOCKET_NAME

    @property
    def endpoints(self) -> str:
        """What clients should use: the socket first, then the TCP port if any."""
        eps = [f"unix://{self.socket_path}"]
        if self.tcp_endpoint:
            eps.append(self.tcp_endpoint)
        return ",".join(eps)

    @property
    def unix_endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_endpoint(self) -> str | None:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}" if self.client_port else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self, binary: str = "etcd") -> list[str]:
        """The etcd command line (relative socket name: run it with ``run_dir`` as working directory)."""
        listen = [f"unix://{SOCKET_NAME}"]
        advertise = self.tcp_endpoint or f"http://127.0.0.1:{free_port()}"
        if self.tcp_endpoint:
            listen.append(self.tcp_endpoint)
        cluster = self.cluster or {self.name: self.peer_url}
        cmd = [
            binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", ",".join(listen),
            "--advertise-client-urls", advertise,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{n}={u}" for n, u in sorted(cluster.items())),
            "--auto-compaction-retention", "0",
        ]
        if self.tls:
            cmd += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
            if self.tls.client_ca:
                cmd += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.client_ca)]
        return cmd

    def start(self, timeout: float = 15.0, *, wait: bool = True,
              preexec_fn: Callable[[], None] | None = None) -> None:
        """Start etcd (again, after ``pause()``: same ports, same data) and wait until it is healthy.

        ``wait=False`` returns once the process runs: a cluster member is healthy only once a quorum
        runs, so a caller starting several members waits with :meth:`wait_healthy` after the last.
        ``preexec_fn`` runs in the child before etcd (the lab puts it in its cgroup there).
        """
        if self.running:
            raise RuntimeError(f"etcd {self.name} is already running (pid {self.proc.pid if self.proc else '?'})")
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd not found on PATH: install Debian's etcd-server (make setup does)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        cmd = self.argv(binary)
        log = open(self.run_dir / "etcd.log", "ab")  # noqa: SIM115 - owned by the child
        # The socket name is relative: etcd creates it in its working directory.
        self.proc = subprocess.Popen(cmd, cwd=self.run_dir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=preexec_fn)
        log.close()
        (self.run_dir / "etcd.pid").write_text(str(self.proc.pid))
        # The identity kill_recorded() checks before it signals anything (etcd.pid stays a plain PID for tools).
        (self.run_dir / IDENT_FILE).write_text(json.dumps({
            "pid": self.proc.pid, "starttime": starttime(self.proc.pid), "data_dir": str(self.data_dir)}))
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Return once etcd answers ``/health`` true on its socket; RuntimeError (with its log) otherwise."""
        member = Endpoint(f"unix://{self.socket_path}")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    tail = (self.run_dir / "etcd.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{tail}")
                try:
                    r = member.request("GET", "/health", None, 1.0)
                    if r.status == 200 and r.json().get("health") == "true":
                        return
                except (GatewayError, ValueError, AttributeError):
                    pass
                time.sleep(0.02)
        finally:
            member.close()
        raise RuntimeError(f"etcd did not become healthy within {timeout}s (log: {self.run_dir / 'etcd.log'})")

    def pause(self) -> None:
        """Stop the process but keep its data, so ``start()`` resumes the same store."""
        self._terminate()

    def stop(self) -> None:
        self._terminate()

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        (self.run_dir / "etcd.pid").unlink(missing_ok=True)
        (self.run_dir / IDENT_FILE).unlink(missing_ok=True)

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_recorded_etcd(pid: int, ident: dict[str, object]) -> bool:
    """``pid`` is still the recorded etcd: same start time, and its command line names the recorded data dir."""
    if ident.get("pid") != pid or ident.get("starttime") is None or starttime(pid) != ident["starttime"]:
        return False
    argv = cmdline(pid)
    return any(a == "--data-dir" and b == ident.get("data_dir") for a, b in itertools.pairwise(argv))


def kill_recorded(run_dir: str | Path) -> None:
    """SIGKILL the etcd that a crashed owner recorded in ``run_dir`` (etcd.pid and its identity file).

    Only when the PID still belongs to that very process (same start time, same ``--data-dir``): after a
    PID is recycled it may be anyone's etcd, and that one is left alone.
    """
    run_dir = Path(run_dir)
    pid_file = run_dir / "etcd.pid"
    ident_file = run_dir / IDENT_FILE
    try:
        pid = int(pid_file.read_text().strip())
        ident = json.loads(ident_file.read_text())
    except FileNotFoundError:
        pid, ident = None, None
    except ValueError as exc:
        _log.warning("etcd pid record unreadable, not killing anything run_dir=%s error=%s", run_dir, exc)
        pid, ident = None, None
    if pid is not None and isinstance(ident, dict):
        if _is_recorded_etcd(pid, ident):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _log.info("killed recorded etcd pid=%d run_dir=%s", pid, run_dir)
        else:
            _log.info("recorded etcd is gone (pid reused or exited) pid=%d run_dir=%s", pid, run_dir)
    pid_file.unlink(missing_ok=True)
    ident_file.unlink(missing_ok=True)


def member_status(socket_path: str | Path, timeout: float = 1.0) -> dict[str, str] | None:
    """``{"member_id", "leader"}`` (hex strings) as the member on ``socket_path`` reports them; None if it
    does not answer within ``timeout`` (stopped, paused, or without a quorum to ask)."""
    member = Endpoint(f"unix://{socket_path}")
    try:
        body = member.post_json("/v3/maintenance/status", {}, timeout)
    except GatewayError:
        return None
    finally:
        member.close()
    if not isinstance(body, dict):
        return None
    member = str(body.get("header", {}).get("member_id", ""))
    leader = str(body.get("leader", ""))
    return {"member_id": member, "leader": leader} if member else None

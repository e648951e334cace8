"""l3net.cni.hostlock: one IPAM operation at a time per node, as Calico's CNI plugin does.

Concurrent ADDs on one node would otherwise race on the same block (many CAS
retries) and could each claim a fresh block. An ``flock`` on a per-node file
serialises them; the lock dies with the process, so a killed plugin never
leaves it held. Raises TimeoutError when the lock is not free in time.

It is ``flock`` on a descriptor opened per call, not ``fcntl.lockf``/POSIX
record locks: flock locks belong to the open file description, so two threads
of one process (the agent serving CNI requests) exclude each other exactly as
two plugin processes do, and the agent and a fallback plugin process exclude
each other too. POSIX locks are per process and would let two threads in.

A waiter sleeps in a blocking ``flock`` on a helper thread and wakes the moment the holder
lets go (no polling interval on a contended ADD). ``flock`` has no timeout, so on timeout the
waiter is abandoned: when its ``flock`` finally returns it lets go at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator

_log = logging.getLogger(__name__)

LOCK_DIR = "/run/l3net"
ENV_LOCK_DIR = "L3NET_CNI_LOCK_DIR"


def lock_path(node: str, directory: str | None = None) -> str:
    """``/run/l3net/ipam-<node>.lock``; the directory is ``directory``, else ``L3NET_CNI_LOCK_DIR``, else /run/l3net.

    The agent passes the directory from the request's environment (it never reads
    or changes its own ``os.environ`` for a request).
    """
    base = directory or os.environ.get(ENV_LOCK_DIR) or LOCK_DIR
    return os.path.join(base, f"ipam-{node.replace('/', '_')}.lock")


@contextlib.contextmanager
def node_lock(node: str, timeout: float = 60.0, path: str | None = None,
              directory: str | None = None) -> Iterator[None]:
    """Hold the node's IPAM lock for the body (blocking up to ``timeout`` seconds)."""
    path = path or lock_path(node, directory)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_for_lock(fd, path, timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _wait_for_lock(fd: int, path: str, timeout: float) -> None:
    """Block until ``fd``'s open file holds the lock, or raise TimeoutError after ``timeout`` seconds.

    The helper thread locks a duplicate of ``fd``: a flock belongs to the open file description, so
    the lock it takes is ``fd``'s, and the duplicate stays valid whatever the caller does with ``fd``.
    """
    waiter_fd = os.dup(fd)
    decided = threading.Lock()   # the waiter's "got it" and the caller's "gave up" cannot cross
    got = threading.Event()
    abandoned = False
    failure: list[OSError] = []

    def wait() -> None:
        try:
            fcntl.flock(waiter_fd, fcntl.LOCK_EX)
        except OSError as exc:
            failure.append(exc)
            got.set()
        else:
            with decided:
                if abandoned:
                    fcntl.flock(waiter_fd, fcntl.LOCK_UN)
                else:
                    got.set()
        finally:
            os.close(waiter_fd)

    threading.Thread(target=wait, name=f"flock-wait {path}", daemon=True).start()
    got.wait(timeout)
    with decided:
        if got.is_set():
            if failure:
                raise failure[0]
            return
        abandoned = True
    raise TimeoutError(f"IPAM lock {path} still held after {timeout:.0f}s")

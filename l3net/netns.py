"""l3net.netns: network-namespace plumbing shared by the lab, the CNI plugin and tests.

Python 3.11 has no ``os.setns``; sysctls under /proc/sys/net follow the calling
thread's namespace, so :func:`in_netns` switches only the current thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

_log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name_or_path: str) -> str:
    """A namespace given by name (``ip netns``) or by path (``/proc/PID/ns/net``)."""
    return name_or_path if "/" in name_or_path else str(NETNS_DIR / name_or_path)


@contextlib.contextmanager
def in_netns(name_or_path: str) -> Iterator[None]:
    """Run the body with the current thread inside another network namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path(name_or_path), os.O_RDONLY)
    try:
        _setns(target, CLONE_NEWNET)
        try:
            yield
        finally:
            _setns(own, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


def write_sysctl(path: str, value: str | int, netns: str | None = None) -> None:
    """Write ``/proc/sys/<path>`` (dots or slashes), optionally inside ``netns``."""
    full = "/proc/sys/" + path.replace(".", "/") if "/" not in path else "/proc/sys/" + path
    if netns:
        with in_netns(netns):
            Path(full).write_text(str(value))
    else:
        Path(full).write_text(str(value))


def read_sysctl(path: str, netns: str | None = None) -> str:
    full = "/proc/sys/" + path.replace(".", "/") if "/" not in path else "/proc/sys/" + path
    if netns:
        with in_netns(netns):
            return Path(full).read_text().strip()
    return Path(full).read_text().strip()


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """A named namespace (``ip netns add``'s layout: a file under /run/netns bind-mounted on it) with ``lo`` up.

    Once /run/netns is a mount point (the first ``ip netns add`` makes it one, shared, as iproute2 wants it),
    the namespace is made in-process: a short thread unshares its network namespace, bind-mounts it and sets
    ``lo`` up. The lab creates one per pod ADD, where the two fork/execs this replaces (``ip netns add`` and
    ``ip netns exec ... ip link set lo up``, which also remounts /sys) were measured on the ADD's clock.
    OSError (or CalledProcessError from ``ip``) when it cannot be made; nothing is left behind then.
    """
    if not _netns_dir_mounted():
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        with in_netns(name):
            _set_lo_up()
        return
    path = NETNS_DIR / name
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))  # FileExistsError for a taken name
    failed: list[BaseException] = []

    def make() -> None:  # on its own thread: unshare changes only the calling thread's namespace
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                _check(_libc.unshare(CLONE_NEWNET), "unshare")
                try:
                    _check(_libc.mount(b"/proc/thread-self/ns/net", os.fsencode(path), b"none", _MS_BIND, None),
                           f"bind mount on {path}")
                    _set_lo_up()
                finally:
                    _setns(own, CLONE_NEWNET)
            finally:
                os.close(own)
        except BaseException as exc:  # re-raised on the caller's thread below
            failed.append(exc)

    worker = threading.Thread(target=make, name=f"netns-create-{name}")
    worker.start()
    worker.join()
    if failed:
        if os.path.ismount(path):
            _libc.umount2(os.fsencode(path), _MNT_DETACH)
        path.unlink(missing_ok=True)
        raise failed[0]


_MS_BIND = 4096
_MNT_DETACH = 2
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


_dir_mounted = False


def _netns_dir_mounted() -> bool:
    """Whether /run/netns is a mount point (iproute2 bind-mounts it on itself, shared, for the namespaces' bind
    mounts; os.path.ismount cannot see a bind mount of the same file system, so mountinfo is read). Once true,
    remembered: iproute2 never unmounts it."""
    global _dir_mounted
    if not _dir_mounted:
        with open("/proc/self/mountinfo") as fh:
            _dir_mounted = any(line.split(" ", 5)[4] == str(NETNS_DIR) for line in fh)
    return _dir_mounted


def _set_lo_up() -> None:
    """``ip link set lo up`` in the calling thread's namespace (SIOCSIFFLAGS: no netlink library, no exec)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def delete(name: str) -> None:
    """Remove namespace ``name`` if it exists. A failure is logged and printed to stderr, not raised:
    callers are cleaning up and go on with the rest (they check :func:`exists` when it matters)."""
    if exists(name):
        r = subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, text=True)
        if r.returncode != 0:
            reason = r.stderr.strip() or f"exit {r.returncode}"
            _log.warning("ip netns del failed netns=%s error=%s", name, reason)
            print(f"warning: cannot delete network namespace {name}: {reason}", file=sys.stderr)


def list_names() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def run(netns: str, cmd: Sequence[str], *, check: bool = True, timeout: float | None = 30,
        input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside ``netns`` (via ``ip netns exec``) and capture its output."""
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], check=check, capture_output=True, text=True,
                          timeout=timeout, input=input, env=env)


def nsenter_cmd(netns: str, cmd: Sequence[str]) -> list[str]:
    """A command line that runs ``cmd`` in ``netns`` without remounting /sys (for long-lived daemons)."""
    return ["nsenter", f"--net={netns_path(netns)}", "--", *cmd]

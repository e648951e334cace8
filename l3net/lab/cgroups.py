"""l3net.lab.cgroups: one cgroup v2 group per lab node and per etcd member, so the lab owns every process.

Why cgroup v2: a process cannot leave its cgroup by forking, double-forking, ``setsid`` or
entering another namespace, so whatever a node's ``cmd``/``exec`` lines start stays
countable and killable. v2 gives, without any controller enabled, ``cgroup.kill`` (SIGKILL
to every member, atomically against forks), ``cgroup.freeze`` (``docker pause``) and
``cgroup.events`` (``populated``, ``frozen``). On hybrid machines (v1 controllers plus a
v2 tree at ``/sys/fs/cgroup/unified``) the v2 tree is used; on pure v2 ``/sys/fs/cgroup``.
``$L3NET_LAB_CGROUP_ROOT`` overrides the detection.

Layout: ``<v2 root>/l3net-lab/<lab>.<hash of its run dir>/<node>`` and ``.../etcd.<member>``.
Processes are placed in their group between ``fork`` and ``exec`` (:func:`enter_fn`), so no
child can be forked outside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)

ROOT_ENV = "L3NET_LAB_CGROUP_ROOT"
TOP = "l3net-lab"


class CgroupError(RuntimeError):
    """cgroup v2 is missing or refused an operation; the message says which file and why."""


def v2_root() -> Path:
    """The mount point of the cgroup v2 hierarchy (``$L3NET_LAB_CGROUP_ROOT`` first)."""
    forced = os.environ.get(ROOT_ENV)
    if forced:
        return Path(forced)
    with open("/proc/self/mounts") as fh:
        mounts = [line.split() for line in fh]
    v2 = [m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"]
    if not v2:
        raise CgroupError("no cgroup v2 hierarchy is mounted (the lab tracks node processes with it): "
                          "mount -t cgroup2 none /sys/fs/cgroup/unified")
    return Path(sorted(v2, key=len)[0])


def lab_group(lab: str, run_dir: Path) -> Path:
    """The parent group of one lab; the run dir's hash keeps two run bases' labs of one name apart."""
    tag = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return v2_root() / TOP / f"{lab}.{tag}"


def create(path: Path) -> None:
    for attempt in range(3):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            # Another lab's remove() took the shared top group away between our two mkdirs: again.
            if attempt == 2:
                raise CgroupError(f"cannot create cgroup {path}: its parent keeps vanishing") from None
        except OSError as exc:
            raise CgroupError(f"cannot create cgroup {path}: {exc.strerror}") from exc


def enter_fn(path: Path) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the forked child into ``path`` before it execs anything."""
    procs = str(path / "cgroup.procs")

    def enter() -> None:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return enter


def groups(path: Path) -> list[Path]:
    """``path`` and every group below it, deepest first (the order rmdir needs)."""
    if not path.is_dir():
        return []
    out = [Path(d) for d, _dirs, _files in os.walk(path)]
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def pids(path: Path) -> list[int]:
    """Every process in ``path`` and below it (empty if the group does not exist)."""
    found: list[int] = []
    for group in groups(path):
        with contextlib.suppress(FileNotFoundError):
            found += [int(x) for x in (group / "cgroup.procs").read_text().split()]
    return found


def _event(path: Path, key: str) -> str | None:
    try:
        for line in (path / "cgroup.events").read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return v
    except FileNotFoundError:
        return None
    return None


def populated(path: Path) -> bool:
    return _event(path, "populated") == "1"


def is_frozen(path: Path) -> bool:
    return _event(path, "frozen") == "1"


def _write(path: Path, name: str, value: str) -> None:
    try:
        (path / name).write_text(value)
    except OSError as exc:
        raise CgroupError(f"cgroup {path}: writing {value!r} to {name} failed: {exc.strerror}") from exc


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise CgroupError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def freeze(path: Path, frozen: bool = True, timeout: float = 10.0) -> None:
    """Freeze (``docker pause``) or thaw every process in ``path``; returns once the kernel reports it done."""
    if not path.is_dir():
        raise CgroupError(f"cgroup {path} does not exist")
    _write(path, "cgroup.freeze", "1" if frozen else "0")
    _wait(lambda: is_frozen(path) == frozen or not populated(path), timeout,
          f"cgroup {path} to be {'frozen' if frozen else 'thawed'}")


def signal_all(path: Path, sig: int) -> int:
    """Send ``sig`` to every process in ``path``; returns how many it reached."""
    n = 0
    for pid in pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            n += 1
    return n


def kill(path: Path, grace: float = 0.0, timeout: float = 10.0) -> int:
    """End every process in ``path`` (SIGTERM first when ``grace`` > 0, then ``cgroup.kill``); wait until empty.

    Returns how many processes there were. A frozen group is thawed after the kill so that the
    SIGKILLed processes run their exit and leave the group.
    """
    if not path.is_dir():
        return 0
    count = len(pids(path))
    if count and grace > 0 and not is_frozen(path):
        signal_all(path, signal.SIGTERM)
        with contextlib.suppress(CgroupError):
            _wait(lambda: not populated(path), grace, f"cgroup {path} to empty after SIGTERM")
    if populated(path):
        if (path / "cgroup.kill").exists():
            _write(path, "cgroup.kill", "1")
        else:  # kernels before 5.14: loop, since a process may fork between the listing and the signal
            for _ in range(50):
                if not signal_all(path, signal.SIGKILL):
                    break
        with contextlib.suppress(CgroupError):
            freeze(path, False)
        _wait(lambda: not populated(path), timeout, f"cgroup {path} to empty after SIGKILL")
    return count


def remove(path: Path, timeout: float = 10.0) -> None:
    """Kill what runs in ``path`` and below it, then remove the groups (idempotent)."""
    kill(path, timeout=timeout)
    for group in groups(path):
        try:
            group.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                kill(group, timeout=timeout)
                group.rmdir()
            else:
                raise CgroupError(f"cannot remove cgroup {group}: {exc.strerror}") from exc
    parent = path.parent
    if parent.name == TOP:
        # The shared top group goes when its last lab goes; another lab's mkdir may race us: fine.
        with contextlib.suppress(OSError):
            parent.rmdir()
    _log.debug("removed cgroup path=%s", path)

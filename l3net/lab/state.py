"""l3net.lab.state: the lab's run directory and the record of everything a lab created.

``lab down`` works from this record alone (also after the lab's own process
crashed): each namespace and mount is recorded *before* it is created and each
process right after it starts, with its start time so that a recycled PID is
never killed.

Layout of ``<run base>/<lab name>/`` (base ``/run/l3net/lab``, or ``$L3NET_LAB_RUN_DIR``)::

    state.json   the record (written atomically)
    pods.jsonl   pod records changed since state.json was written (appended; replayed on load)
    lock         flock'd while the record is read-modified-written
    etcd.sock:0  the lab's etcd (unix socket), etcd.pid, etcd.log (one member; with several,
                 each member's in etcd-<member>/)
    logs/        one log per process (<node>.<what>.log)
    nodes/<n>/   each node's working directory (containerlab's lab dir per node)
    mnt/         a private mount holding each node's persistent mount namespace
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Also used by other modules as st.starttime (the helper lives in l3net.lab.procs, shared with etcdserver).
from l3net.lab import checks
from l3net.lab.procs import cmdline, starttime

DEFAULT_RUN_BASE = "/run/l3net/lab"
RUN_BASE_ENV = "L3NET_LAB_RUN_DIR"
STATE_FILE = "state.json"
POD_JOURNAL = "pods.jsonl"
# Pod changes appended to the journal before the next pod change rewrites the whole record instead: bounds
# what a load replays (a line is one pod record).
JOURNAL_MAX_LINES = 1000


_Stamp = tuple[tuple[int, int, int], "tuple[int, int, int] | None"]  # (the record's, the pod journal's)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _stamp(directory: Path) -> _Stamp | None:
    """The stamps of a lab's record and its pod journal; None when there is no record."""
    record = _file_stamp(directory / STATE_FILE)
    if record is None:
        return None
    return record, _file_stamp(directory / POD_JOURNAL)


def run_base() -> Path:
    return Path(os.environ.get(RUN_BASE_ENV) or DEFAULT_RUN_BASE)


def lab_dir(name: str) -> Path:
    return run_base() / name


def running_labs() -> list[str]:
    """Names of labs with a state record under the run base."""
    base = run_base()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / STATE_FILE).exists())


class LabState:
    """The JSON record of one lab. Not thread-safe; use :meth:`locked` across processes.

    Keys: ``name``, ``topology``, ``netns`` (names, creation order), ``mounts`` (mount
    points, creation order), ``processes`` (``{node, what, pid, starttime, argv, log}``),
    ``nodes`` (``{name: {netns, kind, role, mgmt, mntns, env, start, cgroup}}``), ``etcd``
    (``{endpoints, own, data_dir, members, cluster}``), ``cgroup`` (the lab's cgroup v2 group),
    ``pods`` (``{"ns/name": {...}}``), ``phase``.
    """

    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.dir = directory
        self.data = data
        # The record and the pod journal as this object last read or wrote them (inode, mtime ns, size of each):
        # `locked` re-reads only files someone else changed since (~3 ms of JSON per read at 1,000 pods, on
        # every pod's ADD clock).
        self._seen: _Stamp | None = None
        self._journal_lines = 0

    def _stat(self) -> _Stamp | None:
        return _stamp(self.dir)

    @classmethod
    def new(cls, name: str, topology: str) -> LabState:
        d = lab_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        return cls(d, {"name": name, "topology": topology, "netns": [], "mounts": [], "processes": [],
                       "nodes": {}, "etcd": {}, "pods": {}, "phase": "creating", "created": time.time(),
                       "owner_pid": os.getpid()})

    @classmethod
    def load(cls, name: str) -> LabState | None:
        d = lab_dir(name)
        try:
            before = _stamp(d)
            data = json.loads((d / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            # A torn write cannot happen (atomic rename), but a hand-edited file can: keep what we can.
            return cls(d, {"name": name, "netns": [], "mounts": [], "processes": [], "nodes": {}, "etcd": {},
                           "pods": {}, "phase": "corrupt"})
        state = cls(d, data)
        state._journal_lines = state._replay_pods()
        # What was read is the files as stat'ed before reading only if neither changed meanwhile.
        if before is not None and state._stat() == before:
            state._seen = before
        return state

    def _replay_pods(self) -> int:
        """Apply the pod journal's lines of this record's epoch to ``data["pods"]``; returns how many it holds.

        A line of another epoch predates the record (a writer died between writing the record and removing
        the journal); a line that does not parse is the torn end of an append that died half-way.
        """
        try:
            text = (self.dir / POD_JOURNAL).read_text()
        except FileNotFoundError:
            return 0
        epoch = self.data.get("journal_epoch", 0)
        pods = self.data.setdefault("pods", {})
        lines = 0
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("epoch") != epoch or not isinstance(entry.get("key"), str):
                continue
            lines += 1
            if entry.get("pod") is None:
                pods.pop(entry["key"], None)
            else:
                pods[entry["key"]] = entry["pod"]
        return lines

    def save(self) -> None:
        """Write the whole record (and start a new pod journal epoch: the old journal is in it)."""
        # Per writer (process and thread): a save outside `locked` must not rename another writer's temporary.
        tmp = self.dir / f"{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
        self.data["journal_epoch"] = self.data.get("journal_epoch", 0) + 1
        # Compact: json's indenting encoder is the pure-Python one, ~4x slower. `python -m json.tool` shows it
        # readably. Even so a save costs ~5 ms at 1,000 pods, which is why a pod's ADD and DEL append to the
        # pod journal instead (see locked).
        tmp.write_text(json.dumps(self.data, sort_keys=True, separators=(",", ":")))
        os.replace(tmp, self.dir / STATE_FILE)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / POD_JOURNAL).unlink()
        self._journal_lines = 0
        self._seen = self._stat()

    def _append_pods(self, keys: Iterable[str]) -> None:
        epoch = self.data.get("journal_epoch", 0)
        pods = self.data["pods"]
        # Each entry starts a line of its own: an entry after the torn end of one whose writer died mid-append
        # is still read whole.
        entries = ["\n" + json.dumps({"epoch": epoch, "key": k, "pod": pods.get(k)}, sort_keys=True,
                                      separators=(",", ":")) for k in keys]
        with open(self.dir / POD_JOURNAL, "a") as fh:
            fh.write("".join(entries))
        self._journal_lines += len(entries)
        self._seen = self._stat()

    @contextlib.contextmanager
    def locked(self, pods: Iterable[str] | None = None) -> Iterator[LabState]:
        """Re-read the record under an exclusive lock, yield it, save it on success.

        ``pods``: the keys of the only pod records the caller changes (adds, edits or removes), and nothing
        else; they are appended to the pod journal, a few hundred bytes, instead of rewriting the record.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if self._seen is None or self._stat() != self._seen:
                fresh = LabState.load(self.data["name"])
                if fresh is not None:
                    self.data = fresh.data
                    self._seen = fresh._seen
                    self._journal_lines = fresh._journal_lines
            yield self
            if pods is None or self._journal_lines >= JOURNAL_MAX_LINES or self._seen is None:
                self.save()
            else:
                self._append_pods(pods)

    # -- recording --------------------------------------------------------
    def record_netns(self, name: str) -> None:
        if name not in self.data["netns"]:
            self.data["netns"].append(name)
            self.save()

    def record_mount(self, path: str) -> None:
        if path not in self.data["mounts"]:
            self.data["mounts"].append(path)
            self.save()

    def record_process(self, node: str, what: str, pid: int, argv: list[str], log: str) -> None:
        self.data["processes"].append({"node": node, "what": what, "pid": pid, "starttime": starttime(pid),
                                       "argv": argv, "log": log})
        self.save()

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def etcd_endpoints(self) -> str:
        return str(self.data.get("etcd", {}).get("endpoints", ""))


# -- processes --------------------------------------------------------------

def is_alive(proc: dict[str, Any]) -> bool:
    """The recorded process still runs: same PID *and* same start time (so not a recycled PID)."""
    st = starttime(int(proc["pid"]))
    if st is None:
        return False
    if proc.get("starttime") is not None:
        return st == proc["starttime"]
    # No start time recorded: fall back to the command line (nsenter execs the recorded argv's tail).
    line = cmdline(int(proc["pid"]))
    argv = proc.get("argv") or []
    return bool(line) and any(line == argv[i:] for i in range(len(argv)))


def stop_process(proc: dict[str, Any], grace: float = 3.0) -> bool:
    """SIGTERM the recorded process's group, SIGKILL after ``grace``; True if it was ours and alive.

    Every lab process leads its own session (start_new_session), so its group holds
    its children too (ExaBGP under the agent, BIRD under a shell).
    """
    pid = int(proc["pid"])
    if not is_alive(proc):
        # The leader is gone; its group may still hold children. A PID in use as a
        # group id is never handed to a new process, so signalling the group is safe
        # unless a different process now owns that PID (checked above: starttime None).
        if starttime(pid) is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        checks.wait_for(lambda: not is_alive(proc), grace, f"pid {pid} to exit")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def pids_in_netns(netns_file: str) -> list[int]:
    """PIDs of processes whose network namespace is the one bound at ``netns_file``."""
    try:
        st = os.stat(netns_file)
    except FileNotFoundError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
            out.append(int(entry))
    return out

"""l3net.lab.procs: a process's identity from /proc, so that a recycled PID is never signalled.

A PID alone names a process only until it exits; the PID together with its start time
(field 22 of /proc/PID/stat) names it for good. Shared by the lab's record and etcdserver; also
a process's children, which the tests look for.
"""

from __future__ import annotations

import os
from pathlib import Path


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the PID, a process's identity.

    None when there is no such process or it has already ended (a zombie).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has ended; only its parent's wait() is missing
    return int(fields[19])


def cmdline(pid: int) -> list[str]:
    """The process's argv ([] when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (zombies included: they are children until reaped)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids

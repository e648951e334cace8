"""felix.drivers.restore_session: one long-lived ``iptables-nft-restore`` that transactions are streamed to.

Why not a process per transaction: on nf_tables, a process that committed a
transaction which deleted rules (a chain rewritten, a hook moved) waits for an
RCU grace period when it closes its netlink socket (the kernel's
``nft_rcv_nl_event`` flushes the ruleset's destroy work). On the machines we
measured that is 11 to 12 ms per restore, after the change is already live,
plus about 2 ms to start the binary. A restore that stays running never closes
its socket: each transaction is confirmed in a fraction of a millisecond.

``iptables-restore`` commits at every ``COMMIT`` line as it reads, re-reading
its cache for each one (so it sees what others changed in between), and with
``--verbose`` it echoes comment lines to stdout once everything before them is
done. Each transaction is followed by a unique marker comment: the marker on
stdout is the confirmation. A refused transaction makes the process print the
reason on stderr and exit with xtables' status (1 or 2), which is handed back
exactly as a one-shot run would, and the next transaction starts a new process.

Only the nft backend is streamed (legacy restore takes the xtables lock per
table, and its close costs nothing); the caller decides.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

_log = logging.getLogger(__name__)

__all__ = ["LOST_RC", "TIMED_OUT_RC", "RestoreSession", "Spawn", "spawn_local"]

Spawn = Callable[[Sequence[str]], subprocess.Popen]   # starts argv with stdin, stdout and stderr as pipes

TIMED_OUT_RC = 124   # no confirmation in time: the process was ended, the outcome is unknown
LOST_RC = 4          # the process was gone before it confirmed (xtables' RESOURCE_PROBLEM: retried by the driver)
_MARKER = "# l3n-restore-done "
_READ = 65536


def spawn_local(argv: Sequence[str]) -> subprocess.Popen:
    """Start ``argv`` in this process's namespaces with three pipes."""
    return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)


class RestoreSession:
    """Streams restore scripts to one ``argv`` process (started on first use, again after it exits).

    :meth:`run` has a runner's result shape, ``(rc, stdout, stderr)``: 0 once the
    transaction's marker came back; the process's own exit status when it refused
    the transaction; :data:`LOST_RC` when the process died without a verdict;
    :data:`TIMED_OUT_RC` when no verdict came in ``timeout`` seconds (the process is
    then ended). Thread-safe: transactions are serialised.
    """

    def __init__(self, argv: Sequence[str], spawn: Spawn = spawn_local, *, timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._argv = [*argv, "--verbose"]
        self._spawn = spawn
        self._timeout = timeout
        self._clock = clock
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self.started = 0   # processes started (the first, and one after each refusal or loss)

    @property
    def pid(self) -> int | None:
        """The running process's PID (None when none runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def run(self, script: str) -> tuple[int, str, str]:
        with self._lock:
            proc = self._running()
            if proc is None:
                return LOST_RC, "", f"could not start {self._argv[0]}"
            marker = f"{_MARKER}{os.getpid()}-{next(self._serial)}"
            data = (script if script.endswith("\n") else script + "\n") + marker + "\n"
            try:
                assert proc.stdin is not None
                proc.stdin.write(data.encode())
            except OSError:   # it is exiting: read why (a COMMIT it never read was not applied)
                pass
            return self._confirm(proc, marker)

    def close(self) -> None:
        """End the process (EOF first, so it exits on its own; then by its PID)."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                _finish(proc)

    def _running(self) -> subprocess.Popen | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            _finish(self._proc)
        try:
            self._proc = self._spawn(self._argv)
        except OSError as exc:
            _log.warning("iptables restore session could not start argv=%s err=%s", self._argv, exc)
            self._proc = None
            return None
        self.started += 1
        _log.debug("iptables restore session started pid=%s", self._proc.pid)
        return self._proc

    def _confirm(self, proc: subprocess.Popen, marker: str) -> tuple[int, str, str]:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        want = marker.encode()
        deadline = self._clock() + self._timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    self._proc = None
                    _finish(proc)
                    _log.warning("iptables restore session gave no verdict in %.0f s; ended pid=%s",
                                 self._timeout, proc.pid)
                    return TIMED_OUT_RC, "", f"{self._argv[0]} confirmed nothing in {self._timeout:.0f} s"
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, _READ)
                    if not chunk:   # EOF: the process is exiting (a refusal prints first, then exits)
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                if want in out:
                    return 0, "", err.decode(errors="replace")
                if not sel.get_map():
                    return self._reap(proc, err.decode(errors="replace"))

    def _reap(self, proc: subprocess.Popen, err: str) -> tuple[int, str, str]:
        self._proc = None
        rc = _finish(proc)
        if rc in (0, None) or rc < 0:
            return LOST_RC, "", err or f"{self._argv[0]} exited ({rc}) before confirming"
        return rc, "", err


def _finish(proc: subprocess.Popen, grace: float = 2.0) -> int | None:
    """Close stdin, wait ``grace`` seconds for the exit, then kill it by its PID; its exit status."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()

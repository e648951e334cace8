"""felix.drivers.restore_session: long-lived ``iptables-nft-restore`` and ``ipset`` processes that
transactions are streamed to.

Why not a process per transaction: on nf_tables, a process that closes a netfilter
netlink socket waits for the ruleset's pending destroy work (``nft_rcv_nl_event``
flushes it), and that work waits an RCU grace period whenever a transaction
deleted rules (a chain rewritten, a hook moved). On the machines we measured that
is 11 to 12 ms, paid after the change is already live, by the restore that made
it or by the next ``ipset`` that exits; plus about 1 to 2 ms to start a binary. A
process that stays running never closes its socket: a transaction is confirmed
in a fraction of a millisecond, and the kernel frees the old rules in the
background.

Two dialects, one mechanism (:class:`StreamSession`): each transaction is written,
then a trailer whose answer on stdout confirms that everything before it is done.
- :class:`RestoreSession`: ``iptables-restore --verbose`` commits at every
  ``COMMIT`` as it reads (re-reading its cache for each, so it sees what others
  changed in between) and echoes comment lines; the trailer is a unique marker
  comment. A refused transaction makes it print the reason and exit with xtables'
  status (1 or 2), which is handed back as a one-shot run would; the next
  transaction starts a new process. Only nft is streamed (legacy restore takes
  the xtables lock per table, and its exit costs nothing); the caller decides.
- :class:`IpsetSession`: ``ipset -`` (interactive) runs each command as it reads
  it, reports a failing one on stderr and goes on; the trailer is ``version``. Any
  stderr is a failure (status 1) with ipset's words, so the driver re-reads.
A binary that cannot be started at all marks the session ``unavailable``; the
drivers then run one process per transaction, as before.
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
from typing import Any

_log = logging.getLogger(__name__)

__all__ = ["LOST_RC", "TIMED_OUT_RC", "DriverStream", "IpsetSession", "RestoreSession", "Spawn", "StreamSession",
           "spawn_local"]

Spawn = Callable[[Sequence[str]], subprocess.Popen]   # starts argv with stdin, stdout and stderr as pipes

TIMED_OUT_RC = 124   # no confirmation in time: the process was ended, the outcome is unknown
LOST_RC = 4          # the process was gone before it confirmed (xtables' RESOURCE_PROBLEM: retried by the driver)
_MARKER = "# l3n-restore-done "
_READ = 65536
_WRITE = 65536


def spawn_local(argv: Sequence[str]) -> subprocess.Popen:
    """Start ``argv`` in this process's namespaces with three pipes."""
    return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)


class StreamSession:
    """Streams scripts to one ``argv`` process (started on first use, again after it exits).

    :meth:`run` has a runner's result shape, ``(rc, stdout, stderr)``: 0 once the
    trailer's answer came back (1 when the dialect reads the stderr seen by then as
    a failure); the process's own exit status when it exited on a refusal;
    :data:`LOST_RC` when it died without a verdict; :data:`TIMED_OUT_RC` when no
    verdict came in ``timeout`` seconds (the process is then ended). Thread-safe:
    transactions are serialised.
    """

    def __init__(self, argv: Sequence[str], spawn: Spawn = spawn_local, *, timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._argv = list(argv)
        self._spawn = spawn
        self._timeout = timeout
        self._clock = clock
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self.started = 0   # processes started (the first, and one after each exit)
        self.unavailable = False   # the binary could not be started at all: the caller runs one-shot instead

    # -- the dialect ---------------------------------------------------------------
    def _trailer(self, serial: int) -> tuple[str, bytes]:
        """The text written after a script, and what on stdout says everything before it is done."""
        raise NotImplementedError

    def _stderr_fails(self) -> bool:
        """Whether stderr from a process that went on means the transaction failed."""
        raise NotImplementedError

    # -- the mechanism -------------------------------------------------------------
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
            trailer, answer = self._trailer(next(self._serial))
            data = (script if not script or script.endswith("\n") else script + "\n") + trailer
            return self._exchange(proc, data.encode(), answer)

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
            _log.warning("stream session could not start argv=%s err=%s", self._argv, exc)
            self._proc = None
            self.unavailable = True
            return None
        assert self._proc.stdin is not None
        os.set_blocking(self._proc.stdin.fileno(), False)   # writes take what the pipe has room for
        self.started += 1
        _log.debug("stream session started argv=%s pid=%s", self._argv, self._proc.pid)
        return self._proc

    def _exchange(self, proc: subprocess.Popen, data: bytes, answer: bytes) -> tuple[int, str, str]:
        """Write ``data`` while reading both outputs (a process that answers every line, as ``ipset -``
        does, fills its stdout pipe long before it has read a big batch), until ``answer`` shows on stdout."""
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        tail, err = bytearray(), bytearray()
        pending = memoryview(data)
        deadline = self._clock() + self._timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, tail)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    self._proc = None
                    _finish(proc)
                    _log.warning("stream session gave no verdict in %.0f s; ended argv=%s pid=%s",
                                 self._timeout, self._argv, proc.pid)
                    return TIMED_OUT_RC, "", f"{self._argv[0]} confirmed nothing in {self._timeout:.0f} s"
                for key, _ in sel.select(left):
                    if key.fileobj is proc.stdin:
                        try:
                            pending = pending[os.write(key.fd, pending[:_WRITE]):]
                        except BlockingIOError:
                            continue
                        except OSError:   # it is exiting: read why (what it never read was not applied)
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(proc.stdin)
                        continue
                    chunk = os.read(key.fd, _READ)
                    if not chunk:   # EOF: the process is exiting (a refusal prints first, then exits)
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if key.data is tail and answer not in tail:
                        del tail[:-len(answer)]   # only the answer matters on stdout: keep what may start it
                if answer in tail:
                    # stderr written before the answer is in its pipe already: take it
                    if proc.stderr in sel.get_map():
                        err.extend(_drain(proc.stderr.fileno()))
                    text = err.decode(errors="replace")
                    return (1 if text and self._stderr_fails() else 0), "", text
                if proc.stdout not in sel.get_map() and proc.stderr not in sel.get_map():
                    return self._reap(proc, err.decode(errors="replace"))

    def _reap(self, proc: subprocess.Popen, err: str) -> tuple[int, str, str]:
        self._proc = None
        rc = _finish(proc)
        if rc in (0, None) or rc < 0:
            return LOST_RC, "", err or f"{self._argv[0]} exited ({rc}) before confirming"
        return rc, "", err


class RestoreSession(StreamSession):
    """``iptables-restore --noflush --wait --verbose``: a marker comment after each transaction."""

    def __init__(self, argv: Sequence[str], spawn: Spawn = spawn_local, **kwargs: Any):
        super().__init__([*argv, "--verbose"], spawn, **kwargs)

    def _trailer(self, serial: int) -> tuple[str, bytes]:
        marker = f"{_MARKER}{os.getpid()}-{serial}"
        return marker + "\n", marker.encode()

    def _stderr_fails(self) -> bool:
        return False   # a refusal exits; what it prints while going on is a warning


class IpsetSession(StreamSession):
    """``ipset -`` (interactive): ``version`` after each batch of commands; no ``COMMIT`` lines.

    ipset's stdout is a pipe here, which stdio buffers until exit: ``stdbuf -oL`` (coreutils) makes it
    write each answer as a line.
    """

    def __init__(self, spawn: Spawn = spawn_local, **kwargs: Any):
        super().__init__(["stdbuf", "-oL", "ipset", "-"], spawn, **kwargs)

    def _trailer(self, serial: int) -> tuple[str, bytes]:
        return "version\n", b"protocol version"

    def _stderr_fails(self) -> bool:
        return True   # it goes on after a failing command and says so only on stderr


class DriverStream:
    """A driver's session and its way back to one process per transaction.

    The session is made on first use, by ``make(spawn)``, when the driver's runner can ``spawn``; there is
    none for a runner without (a test's fake), after :meth:`close`, or once its binary could not start:
    :meth:`run` then calls ``one_shot`` instead, as the drivers did before sessions.
    """

    def __init__(self, runner: object, make: Callable[[Spawn], StreamSession]) -> None:
        self._spawn: Spawn | None = getattr(runner, "spawn", None)
        self._make = make
        self._session: StreamSession | None = None
        self._closed = False

    @property
    def usable(self) -> bool:
        return self._spawn is not None and not self._closed and not (
            self._session is not None and self._session.unavailable)

    @property
    def started(self) -> int:
        """Processes the session started (0 while there is none)."""
        return self._session.started if self._session is not None else 0

    @property
    def pid(self) -> int | None:
        return self._session.pid if self._session is not None else None

    def run(self, text: str, one_shot: Callable[[], tuple[int, str, str]]) -> tuple[int, str, str]:
        if not self.usable or self._spawn is None:
            return one_shot()
        if self._session is None:
            self._session = self._make(self._spawn)
        done = self._session.run(text)
        return one_shot() if self._session.unavailable else done

    def close(self) -> None:
        """End the session's process; later transactions run one process each. Idempotent."""
        self._closed = True
        if self._session is not None:
            self._session.close()
            self._session = None


def _drain(fd: int) -> bytes:
    """What is in a pipe now, without waiting for more."""
    os.set_blocking(fd, False)
    try:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.set_blocking(fd, True)


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

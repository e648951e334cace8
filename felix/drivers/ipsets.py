"""felix.drivers.ipsets: applies desired ipsets with one batch of commands per phase."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from felix.drivers.iptables import Runner, local_runner, start
from felix.drivers.restore_session import DriverStream, IpsetSession
from l3net.constants import IPSET_PREFIX

_log = logging.getLogger(__name__)

__all__ = ["IpsetDriver", "IpsetError", "parse_ipset_save"]

Desired = Mapping[str, tuple[str, frozenset[str]]]
# A rewrite of more than this share of a set goes through a temporary set and one swap,
# so readers never see a half-updated set.
_SWAP_FRACTION = 0.5
_MAXELEM = 1048576  # Felix's MaxIpsetSize
_IN_USE = "in use by a kernel component"   # ipset's words for a set a rule still references
# ``ipset -`` sends a message per command, ``ipset restore`` batches them (about half the time per member):
# a batch longer than this (a full apply, a big selector change) pays a process start to go faster.
_STREAM_MAX_LINES = 1000
_RELEASE_WAIT = 0.5   # seconds: a grace period here is ~12 ms; the rest is for a busy machine


class IpsetError(RuntimeError):
    """``ipset restore`` failed; carries the command's stderr."""


class _SetInUse(IpsetError):
    """A ``destroy`` met a set that a rule still references (waited for, not counted as an error)."""


@dataclass
class _Set:
    kind: str
    members: set[str] | frozenset[str] = field(default_factory=set)


def parse_ipset_save(text: str, prefix: str = IPSET_PREFIX) -> dict[str, _Set]:
    """Our sets (name starts with ``prefix``) from ``ipset save``; every other set is ignored."""
    sets: dict[str, _Set] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "create" and parts[1].startswith(prefix):
            sets[parts[1]] = _Set(parts[2])
        elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
            sets[parts[1]].members.add(parts[2])
    return sets


class IpsetDriver:
    """Owns every ipset whose name starts with ``l3n`` in one namespace; never touches another set.

    Felix's order: :meth:`apply_adds` (create sets and bring members up to date)
    before iptables references them, :meth:`apply_deletes` (destroy our sets no
    longer desired) after iptables stopped referencing them. Each phase is at
    most one batch of commands, written to one long-lived ``ipset -`` when the
    runner can start one (:mod:`felix.drivers.restore_session`; :meth:`close`
    ends it), else to one ``ipset restore``; a phase with nothing to do writes
    none (idempotent). Big rewrites go through a temporary set and ``swap``.

    The view of our sets comes from ``ipset save`` once, then from what was
    written: re-read after :meth:`invalidate`, after a failed restore, and when
    older than ``refresh_interval`` (drift detection; None disables). A set whose
    desired members are the very object last written is skipped without
    comparing members. Raises :class:`IpsetError` on failure (the loop retries
    the whole apply). Not thread-safe; runs on the agent's sync loop.
    """

    def __init__(self, runner: Runner = local_runner, *, prefix: str = IPSET_PREFIX,
                 refresh_interval: float | None = 90.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._runner = runner
        self._sleep = sleep
        self._prefix = prefix
        self._temp = f"{prefix}t:"
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._view: dict[str, _Set] | None = None
        self._read_at = 0.0
        self._stream = DriverStream(runner, IpsetSession)
        self.restore_calls = 0
        self.save_calls = 0
        self.errors = 0
        self.destroys_deferred = 0
        self.lines_written = 0
        self.last_apply_seconds = 0.0

    def close(self) -> None:
        """End the long-lived ``ipset`` process, if one runs (agent shutdown; a test's teardown). Idempotent;
        a later apply runs one ``ipset restore`` per phase."""
        self._stream.close()

    def _start_restore(self, lines: list[str]) -> Callable[[], tuple[int, str, str]]:
        """Start writing ``lines``: to the long-lived ``ipset -`` when the runner can spawn one (see
        :mod:`felix.drivers.restore_session`) and the batch is not big, else to one ``ipset restore``; returns
        the wait for the result."""
        one_shot = "\n".join([*lines, "COMMIT", ""])
        if not self._stream.usable or len(lines) > _STREAM_MAX_LINES:
            return start(self._runner, ["ipset", "restore"], one_shot)
        stream, runner = self._stream, self._runner

        def streamed(argv: object, stdin: str | None) -> tuple[int, str, str]:
            return stream.run(stdin or "", lambda: runner(["ipset", "restore"], one_shot))
        streamed.concurrent = True  # type: ignore[attr-defined]
        return start(streamed, ["ipset", "-"], "\n".join([*lines, ""]))

    def read(self) -> dict[str, _Set]:
        self.save_calls += 1
        rc, out, err = self._runner(["ipset", "save"], None)
        if rc != 0:
            raise IpsetError(f"ipset save failed: {err.strip()}")
        return parse_ipset_save(out, self._prefix)

    def invalidate(self, reason: str = "") -> None:
        """Forget the cached view: the next apply re-reads our sets (and repairs any drift)."""
        _log.info("ipset view invalidated reason=%s", reason or "-")
        self._view = None

    def stats(self) -> dict[str, float]:
        """Counters for the agent's metrics (names in the policy section of docs/metrics.md)."""
        return {"l3net_ipset_restore_calls": self.restore_calls, "l3net_ipset_save_calls": self.save_calls,
                "l3net_ipset_restore_errors": self.errors, "l3net_ipset_lines_written": self.lines_written,
                "l3net_ipset_apply_seconds": self.last_apply_seconds,
                "l3net_ipset_destroys_deferred": self.destroys_deferred,
                "l3net_ipset_processes": self._stream.started}

    def _current(self) -> dict[str, _Set]:
        if self._view is None or (self._refresh_interval is not None
                                  and self._clock() - self._read_at >= self._refresh_interval):
            self._view = self.read()
            self._read_at = self._clock()
        return self._view

    def _restore(self, lines: list[str], phase: str,
                 alongside: Callable[[], int] | None = None) -> tuple[int, int]:
        """One ``ipset restore`` of ``lines`` (none when empty) and, at the same time, ``alongside()``:
        (restores written, what ``alongside`` returned). When ``alongside`` raises, the restore is still
        waited for, the view is dropped (re-read on the next apply) and its exception propagates."""
        if not lines:
            return 0, alongside() if alongside is not None else 0
        self.restore_calls += 1
        wait = self._start_restore(lines)
        other = 0
        try:
            if alongside is not None:
                other = alongside()
        except BaseException:
            rc, _, err = wait()  # never leave the restore running
            self._view = None
            if rc != 0:
                self.errors += 1
                _log.warning("ipset restore (%s) failed too err=%s", phase, err.strip()[:500])
            raise
        rc, _, err = wait()
        if rc != 0:
            self._view = None  # re-read before the next attempt
            if phase == "deletes" and _IN_USE in err:   # a rule the kernel is still freeing: apply_deletes waits
                raise _SetInUse(f"ipset restore ({phase}): {err.strip()}")
            self.errors += 1
            raise IpsetError(f"ipset restore ({phase}) failed: {err.strip()}")
        self.lines_written += len(lines)
        _log.info("ipsets applied phase=%s lines=%d", phase, len(lines))
        return 1, other

    def apply_adds(self, desired: Desired, *, then: Callable[[], int] | None = None) -> int:
        """Create missing sets and fix members of existing ones; returns restore calls made (0 or 1).

        ``then``: the write that must see these sets (felix: the iptables apply), added to the count.
        It runs after the ``ipset restore`` when that creates or re-creates a set (a rule may name it);
        when the restore only changes members of sets that exist already, it runs meanwhile: nothing a
        rule can name appears or disappears, so the order does not matter (one pod's change then costs
        the longer of the two restores, not their sum).
        """
        t0 = time.perf_counter()
        for name in desired:
            if not name.startswith(self._prefix) or name.startswith(self._temp) or len(name) > 31:
                raise ValueError(f"ipsets[{name}]: not a valid {self._prefix} set name")
        have = self._current()
        lines: list[str] = []
        written: dict[str, _Set] = {}
        temp_no = 0
        creates = False
        for name, (kind, members) in sorted(desired.items()):
            cur = have.get(name)
            if cur is not None and cur.kind == kind and (cur.members is members or cur.members == members):
                continue
            create = f"{kind} family inet maxelem {_MAXELEM}"
            written[name] = _Set(kind, members)  # type: ignore[arg-type]
            creates = creates or cur is None or cur.kind != kind
            if cur is None:
                lines.append(f"create {name} {create}")
                lines += [f"add {name} {m}" for m in sorted(members)]
                continue
            if cur.kind != kind:
                # Names hash their meaning, type included, so this only follows a manual change.
                lines += [f"destroy {name}", f"create {name} {create}"]
                lines += [f"add {name} {m}" for m in sorted(members)]
                continue
            adds, dels = members - cur.members, cur.members - members
            if len(adds) + len(dels) > max(8, _SWAP_FRACTION * len(members | cur.members)):
                temp = f"{self._temp}{temp_no}"
                temp_no += 1
                if temp in have:
                    lines.append(f"destroy {temp}")
                lines.append(f"create {temp} {create}")
                lines += [f"add {temp} {m}" for m in sorted(members)]
                lines += [f"swap {temp} {name}", f"destroy {temp}"]
            else:
                lines += [f"del {name} {m}" for m in sorted(dels)]
                lines += [f"add {name} {m}" for m in sorted(adds)]
        writes, other = self._restore(lines, "adds", None if creates else then)
        have.update(written)
        for name in [n for n in have if n.startswith(self._temp)]:
            del have[name]
        self.last_apply_seconds = time.perf_counter() - t0
        if creates and then is not None:
            other = then()  # after the sets exist
        return writes + other

    def apply_deletes(self, desired: Desired) -> int:
        """Destroy our sets that are not desired (call after iptables stopped referencing them).

        A rule removed in the iptables transaction just before lets go of its set only when the kernel frees
        the rule, an RCU grace period after the commit (a one-shot restore waited for that at its exit; the
        long-lived one does not). Until then ``destroy`` says the set is in use: such sets are tried again,
        with a doubling pause, for up to :data:`_RELEASE_WAIT` seconds. A set still in use after that (a rule
        that is not ours names it) is left for the next apply, logged, not an error.
        """
        have = self._current()
        stale = sorted(n for n in have if n not in desired)
        writes = 0
        pause, waited = 0.002, 0.0
        while stale:
            try:
                writes += self._restore([f"destroy {n}" for n in stale], "deletes")[0]
            except _SetInUse:
                if waited >= _RELEASE_WAIT:
                    self.destroys_deferred += 1
                    _log.warning("ipsets still in use after %.1f s; destroying them on a later apply sets=%s",
                                 waited, ",".join(stale))
                    return writes
                self._sleep(pause)
                waited += pause
                pause = min(pause * 2, 0.05)
                have = self._current()   # what the failed restore destroyed before the set in use
                stale = sorted(n for n in have if n not in desired)
                continue
            for name in stale:
                del have[name]
            break
        return writes

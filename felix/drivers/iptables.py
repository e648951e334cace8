"""felix.drivers.iptables: applies a PolicyProgram's chains and hooks with iptables-restore.

Also home of the command-runner seam both policy drivers share: a runner is a
callable ``(argv, stdin) -> (rc, stdout, stderr)``; :func:`local_runner` runs in
the current namespace (the agent already inside the node), :func:`netns_runner`
via ``ip netns exec``. Tests pass a stateful fake.
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from felix.drivers.restore_session import DriverStream, RestoreSession, spawn_local
from l3net.constants import CHAIN_PREFIX, RULE_HASH_COMMENT_PREFIX
from l3net.netns import in_netns

_log = logging.getLogger(__name__)

__all__ = ["IptablesDriver", "IptablesError", "Runner", "TableState", "detect_backend", "local_runner",
           "netns_runner", "parse_save", "parse_save_tables", "start"]

Runner = Callable[[Sequence[str], "str | None"], tuple[int, str, str]]

_HASH_RE = re.compile(r'--comment "?' + re.escape(RULE_HASH_COMMENT_PREFIX) + r'([A-Za-z0-9_-]+)')
_KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
# nft: "Table `raw' does not exist"; legacy: "Cannot initialize: Table does not exist (do you need to insmod?)".
_NO_TABLE_RE = re.compile(r"table\b.*does not exist", re.IGNORECASE)
MANAGED_TABLES = ("filter", "raw", "mangle", "nat")  # mangle: pre-DNAT policy; nat: natOutgoing
# xtables exit codes: 1 OTHER_PROBLEM (a line the kernel refused), 2 PARAMETER_PROBLEM (a line the parser
# refused); 4 RESOURCE_PROBLEM (the xtables lock, a busy kernel) is transient and retried.
_REFUSED_RCS = (1, 2)


def local_runner(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run a command in the current network namespace."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def netns_runner(netns: str) -> Runner:
    """A runner that executes every command inside ``netns``.

    The calling thread enters the namespace around the fork, so the child starts
    there; unlike ``ip netns exec`` nothing remounts /sys (about 20 ms saved per
    command, which is most of a small restore).
    """
    def run(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        with in_netns(netns):
            return local_runner(argv, stdin)
    def spawn(argv: Sequence[str]) -> subprocess.Popen:
        with in_netns(netns):
            return spawn_local(argv)
    run.concurrent = True  # type: ignore[attr-defined]  # each call enters the namespace on its own thread
    run.spawn = spawn  # type: ignore[attr-defined]
    return run


local_runner.concurrent = True  # type: ignore[attr-defined]
# A runner with ``spawn`` can also start a long-lived process there (felix.drivers.restore_session); a test's
# fake has none, and the driver then runs one restore per transaction.
local_runner.spawn = spawn_local  # type: ignore[attr-defined]


def start(runner: Runner, argv: Sequence[str], stdin: str | None = None) -> Callable[[], tuple[int, str, str]]:
    """Start one command and return a function that waits for its ``(rc, stdout, stderr)``.

    A runner marked ``concurrent`` (the real ones: every call is a child process of its own) runs it on a
    thread, so the caller can do other work meanwhile (felix's ipset member updates alongside
    iptables-restore); any other runner (a test's stateful fake) runs it right here, in call order.
    """
    if not getattr(runner, "concurrent", False):
        done = runner(argv, stdin)
        return lambda: done
    box: list[tuple[int, str, str]] = []

    def work() -> None:
        try:
            box.append(runner(argv, stdin))
        except Exception as exc:  # reported to the waiter as a failed command, never lost on the thread
            box.append((1, "", f"{argv[0]}: {exc}"))

    thread = threading.Thread(target=work, name=f"run-{argv[0]}", daemon=True)
    thread.start()

    def wait() -> tuple[int, str, str]:
        thread.join()
        return box[0]
    return wait


class IptablesError(RuntimeError):
    """iptables-restore kept failing after the bounded retries; carries the last stderr."""


class _SaveFailed(IptablesError):
    """One iptables-save failed for a reason other than a missing table (retried by the apply loop)."""


@dataclass
class TableState:
    """What ``iptables-save -t <table>`` says, parsed only as far as we need (names and our hashes)."""

    chains: dict[str, list[str | None]] = field(default_factory=dict)  # chain -> per rule: our hash or None
    builtin: set[str] = field(default_factory=set)
    # kernel (non-l3n-) chain -> per rule: the saved rule text after "-A <chain> " for our hashed rules, else
    # None; hooks are deleted by this spec, never by position (someone may insert a rule between save and restore)
    specs: dict[str, list[str | None]] = field(default_factory=dict)


def parse_save(text: str) -> TableState:
    """Chain names, which are kernel chains, and per rule only the ``l3n:`` hash (rule bodies are never parsed)."""
    state = TableState()
    for line in text.splitlines():
        if line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            state.chains.setdefault(name, [])
            if policy != "-":
                state.builtin.add(name)
        elif line.startswith("-A "):
            _, chain, spec = [*line.split(None, 2), ""][:3]
            m = _HASH_RE.search(line)
            state.chains.setdefault(chain, []).append(m.group(1) if m else None)
            if not chain.startswith(CHAIN_PREFIX):
                state.specs.setdefault(chain, []).append(spec if m else None)
    return state


_COMMENT_HEAD = f'-m comment --comment "{RULE_HASH_COMMENT_PREFIX}'


def parse_save_tables(text: str) -> dict[str, TableState]:
    """``iptables-save`` of every table, split per table and parsed like :func:`parse_save`."""
    out: dict[str, TableState] = {}
    current: list[str] = []
    name = None
    for line in text.splitlines():
        if line.startswith("*"):
            name, current = line[1:].strip(), []
        elif line == "COMMIT" and name is not None:
            out[name] = parse_save("\n".join(current))
            name = None
        elif name is not None:
            current.append(line)
    return out


def _hash_of(rule: str) -> str:
    if rule.startswith(_COMMENT_HEAD):  # the compiler's own layout: no regex needed
        end = rule.find('"', len(_COMMENT_HEAD))
        if end > len(_COMMENT_HEAD):
            return rule[len(_COMMENT_HEAD):end]
    m = _HASH_RE.search(rule)
    if not m:
        raise ValueError(f"rule without an {RULE_HASH_COMMENT_PREFIX} hash comment: {rule!r}")
    return m.group(1)


def _tools(backend: str) -> tuple[str, str]:
    return f"iptables-{backend}-save", f"iptables-{backend}-restore"


def detect_backend(runner: Runner) -> str:
    """Felix's rule: kube's hint chains decide; else the backend with more rules; else nft."""
    counts: dict[str, int] = {}
    for backend in ("nft", "legacy"):
        rc, out, _ = runner([_tools(backend)[0]], None)
        if rc != 0:
            counts[backend] = -1
            continue
        if any(f":{hint} " in out for hint in _KUBE_HINTS):
            _log.info("iptables backend detected backend=%s reason=kube-hint", backend)
            return backend
        counts[backend] = sum(1 for line in out.splitlines() if line.startswith("-A "))
    backend = "legacy" if counts.get("legacy", -1) > counts.get("nft", -1) else "nft"
    _log.info("iptables backend detected backend=%s rules=%s", backend, counts)
    return backend


class IptablesDriver:
    """Owns every ``l3n-`` chain and ``l3n:``-hashed rule in the filter, raw, mangle and nat tables of a namespace.

    ``apply(chains, hooks)`` diffs chain by chain against a cached view of each
    table and writes one ``iptables-restore --noflush --wait`` transaction per
    table that changed (whole-chain rewrites; hooks inserted once at the top of
    the kernel chains; stale ``l3n-`` chains and hooks removed). On nft the
    transactions stream to one long-lived restore process
    (:mod:`felix.drivers.restore_session`; :meth:`close` ends it). Nothing else is
    touched. Idempotent: an apply with nothing changed runs no command at all.

    The view comes from ``iptables-save`` (hash comments only, rule bodies are
    never parsed) and is then kept up to date from what was written, like
    Felix: the table is re-read on first use, after :meth:`invalidate`, after a
    failed restore, and when the view is older than ``refresh_interval`` (drift
    detection; None disables). Unchanged chains are recognised by comparing the
    desired rule list with the one last written (same strings), so no rule is
    re-hashed or re-parsed. Runs on the agent's sync loop (not thread-safe).
    Fails after ``max_retries`` with :class:`IptablesError` (the caller dies
    with diagnostics rather than run with unknown rules).
    """

    def __init__(self, runner: Runner = local_runner, backend: str = "auto", *, max_retries: int = 5,
                 initial_backoff: float = 0.01, sleep: Callable[[float], None] = time.sleep,
                 tables: Sequence[str] = MANAGED_TABLES, refresh_interval: float | None = 90.0,
                 clock: Callable[[], float] = time.monotonic):
        if backend not in ("auto", "nft", "legacy"):
            raise ValueError(f"backend: {backend!r} is not auto, nft or legacy")
        self._runner = runner
        self._backend = None if backend == "auto" else backend
        self._max_retries = max_retries
        self._backoff = initial_backoff
        self._sleep = sleep
        self._tables = tuple(tables)
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._views: dict[str, TableState] = {}
        self._read_at: dict[str, float] = {}
        self._written: dict[str, dict[str, list[str]]] = {}  # table -> chain -> rules last written/confirmed
        self.restore_calls = 0
        self.save_calls = 0
        self.errors = 0
        self.save_errors = 0
        self.drift_repairs = 0
        self.last_lines_written = 0
        self.lines_written = 0
        self.last_apply_seconds = 0.0
        self._last: tuple[Mapping[str, Mapping[str, Sequence[str]]], Mapping[str, Mapping[str, Sequence[str]]]] = \
            ({}, {})
        self._stream = DriverStream(runner, lambda spawn: RestoreSession(self._restore_argv(), spawn))

    @property
    def backend(self) -> str:
        if self._backend is None:
            self._backend = detect_backend(self._runner)
        return self._backend

    def close(self) -> None:
        """End the long-lived restore process, if one runs (agent shutdown; a test's teardown). Idempotent;
        a later apply runs one restore per transaction."""
        self._stream.close()

    def _restore_argv(self) -> list[str]:
        return [_tools(self.backend)[1], "--noflush", "--wait"]

    def _restore(self, script: str) -> tuple[int, str, str]:
        def one_shot() -> tuple[int, str, str]:
            return self._runner(self._restore_argv(), script)
        return self._stream.run(script, one_shot) if self.backend == "nft" else one_shot()

    def read_table(self, table: str) -> TableState:
        self.save_calls += 1
        rc, out, err = self._runner([_tools(self.backend)[0], "-t", table], None)
        if rc != 0:
            if _NO_TABLE_RE.search(err):
                # A table that was never used may not exist yet: it is empty. Any other failure is not an
                # empty table (reading it as one would duplicate hooks and rewrite what is there).
                _log.debug("iptables-save: table absent, treated as empty table=%s err=%s", table, err.strip())
                return TableState()
            raise _SaveFailed(f"iptables-save -t {table} failed rc={rc}: {err.strip()[:500]}")
        return parse_save(out)

    def invalidate(self, reason: str = "") -> None:
        """Forget the cached view: the next apply re-reads every table (and repairs any drift)."""
        _log.info("iptables view invalidated reason=%s", reason or "-")
        self._read_at.clear()  # keep the old views: the re-read compares with them to count drift

    def refresh(self) -> int:
        """Re-read every table now and repair drift against the last applied desired state.

        For a periodic timer on the agent's sync loop (Felix re-reads every 90 s);
        returns the restore transactions written (0 when nothing drifted).
        """
        self.invalidate("refresh")
        return self.apply(self._last[0], self._last[1])

    def stats(self) -> dict[str, float]:
        """Counters for the agent's metrics (names in the policy section of docs/metrics.md)."""
        return {"l3net_iptables_restore_calls": self.restore_calls, "l3net_iptables_save_calls": self.save_calls,
                "l3net_iptables_restore_errors": self.errors, "l3net_iptables_save_errors": self.save_errors,
                "l3net_iptables_lines_written": self.lines_written,
                "l3net_iptables_drift_repairs": self.drift_repairs,
                "l3net_iptables_apply_seconds": self.last_apply_seconds,
                "l3net_iptables_restore_processes": self._stream.started}

    def apply(self, chains: Mapping[str, Mapping[str, Sequence[str]]],
              hooks: Mapping[str, Mapping[str, Sequence[str]]]) -> int:
        """Make the kernel match; returns the number of restore transactions written."""
        t0 = time.perf_counter()
        self._last = (chains, hooks)
        writes = 0
        tables = sorted(set(self._tables) | set(chains) | set(hooks))
        try:
            self._read_all(tables)
        except _SaveFailed as exc:  # each table is re-read, with bounded retries, by _apply_table
            self.save_errors += 1
            _log.warning("iptables-save failed before apply, reading per table err=%s", exc)
        for table in tables:
            writes += self._apply_table(table, chains.get(table, {}), hooks.get(table, {}))
        self.last_apply_seconds = time.perf_counter() - t0
        return writes

    def apply_program(self, program: object) -> int:
        """Convenience: apply a ``policy.compiler.PolicyProgram``."""
        return self.apply(program.chains, program.hooks)  # type: ignore[attr-defined]

    def remove_all(self) -> int:
        """Remove every chain and hook we own (agent shutdown with cleanup, tests)."""
        return self.apply({}, {})

    def _stale(self, table: str) -> bool:
        return table not in self._views or table not in self._read_at or (
            self._refresh_interval is not None and self._clock() - self._read_at[table] >= self._refresh_interval)

    def _read_all(self, tables: Sequence[str]) -> None:
        """One ``iptables-save`` for every stale table, before anything is written (with nft, a save
        after a big write costs a listing of the whole ruleset)."""
        stale = [t for t in tables if self._stale(t)]
        if not stale:
            return
        if len(stale) == 1:
            fresh = {stale[0]: self.read_table(stale[0])}
        else:
            self.save_calls += 1
            rc, out, err = self._runner([_tools(self.backend)[0]], None)
            if rc != 0:
                raise _SaveFailed(f"iptables-save failed rc={rc}: {err.strip()[:500]}")
            parsed = parse_save_tables(out)
            fresh = {t: parsed.get(t, TableState()) for t in stale}
        for table, view in fresh.items():
            if table in self._views and self._drifted(table, view):
                self.drift_repairs += 1
                _log.warning("iptables drift detected table=%s: rewriting what differs", table)
            self._views[table] = view
            self._read_at[table] = self._clock()
            self._written.pop(table, None)

    def _view(self, table: str) -> TableState:
        self._read_all([table])
        return self._views[table]

    @staticmethod
    def _ours(state: TableState) -> dict[str, list[tuple[int, str]]]:
        """Our rules by chain with their positions (a hook pushed down by someone else is drift too)."""
        return {c: [(i, h) for i, h in enumerate(hs) if h is not None] for c, hs in state.chains.items()
                if c.startswith(CHAIN_PREFIX) or any(h is not None for h in hs)}

    def _drifted(self, table: str, fresh: TableState) -> bool:
        return self._ours(self._views[table]) != self._ours(fresh)

    def _apply_table(self, table: str, chains: Mapping[str, Sequence[str]],
                     hooks: Mapping[str, Sequence[str]]) -> int:
        delay = self._backoff
        err = ""
        for attempt in range(self._max_retries + 1):
            try:
                state = self._view(table)
            except _SaveFailed as exc:
                err = str(exc)
                self.save_errors += 1
                _log.warning("iptables-save failed table=%s attempt=%d err=%s", table, attempt, err)
                if attempt < self._max_retries:
                    self._sleep(delay * (1 + random.random()))
                    delay *= 2
                continue
            written = self._written.setdefault(table, {})
            script, new_view = self._diff(table, state, chains, hooks, written)
            if script is None:
                return 0
            self.restore_calls += 1
            rc, _, err = self._restore(script)
            if rc == 0:
                self.last_lines_written = script.count("\n")
                self.lines_written += self.last_lines_written
                self._views[table] = new_view
                for name, rules in chains.items():
                    written[name] = list(rules)
                for name in [n for n in written if n not in chains]:
                    del written[name]
                _log.info("iptables applied table=%s lines=%d", table, self.last_lines_written)
                return 1
            self.errors += 1
            self._views.pop(table, None)  # re-read before the retry: our view may be what was wrong
            self._written.pop(table, None)
            _log.warning("iptables-restore failed table=%s attempt=%d rc=%s err=%s", table, attempt, rc,
                         err.strip()[:500])
            if rc in _REFUSED_RCS:
                # The input was refused (a parse or kernel check): the same script would fail again. The
                # caller narrows it to the object at fault (felix.quarantine) instead of retrying here.
                raise IptablesError(f"iptables-restore refused table {table} rc={rc}: {err.strip()}")
            if attempt < self._max_retries:
                self._sleep(delay * (1 + random.random()))
                delay *= 2
        _, dump, _ = self._runner([_tools(self.backend)[0], "-t", table], None)
        _log.error("iptables-restore gave up table=%s current=\n%s", table, dump)
        raise IptablesError(f"iptables-save/-restore for table {table} failed {self._max_retries + 1} times: "
                            f"{err.strip()}")

    @staticmethod
    def _diff(table: str, state: TableState, chains: Mapping[str, Sequence[str]],
              hooks: Mapping[str, Sequence[str]],
              written: dict[str, list[str]]) -> tuple[str | None, TableState]:
        """The restore script (None when nothing differs) and the view the kernel has after it."""
        decl: list[str] = []
        body: list[str] = []
        view = TableState(chains=dict(state.chains), builtin=set(state.builtin), specs=dict(state.specs))
        for name, rules in chains.items():
            if not name.startswith(CHAIN_PREFIX):
                raise ValueError(f"chains[{table}][{name}]: not an {CHAIN_PREFIX} chain")
            if name in state.chains and written.get(name) == list(rules):  # rules may be a tuple (PolicyProgram)
                continue  # the same strings as last time: nothing to hash
            want = [_hash_of(r) for r in rules]
            if state.chains.get(name) == want and name in state.chains:
                written[name] = list(rules)
                continue
            decl.append(f":{name} - [0:0]")
            if name in state.chains:
                body.append(f"-F {name}")
            body += [f"-A {name} {r}" for r in rules]
            view.chains[name] = list(want)
        for kchain in sorted(set(hooks) | {c for c in state.builtin if any(state.chains.get(c, []))}):
            have = state.chains.get(kchain, [])
            specs = state.specs.get(kchain, [None] * len(have))
            ours = [i for i, h in enumerate(have) if h is not None]
            want_rules = list(hooks.get(kchain, []))
            want = [_hash_of(r) for r in want_rules]
            if [have[i] for i in ours] == want and (not want or ours == list(range(len(want)))):
                continue  # our hooks already sit at the top, in order
            # By rule spec, never by number: positions come from an earlier save, and a rule inserted since
            # (kube-proxy, an operator) would shift them onto a rule that is not ours.
            body += [f"-D {kchain} {specs[i]}" for i in reversed(ours)]
            body += [f"-I {kchain} 1 {r}" for r in reversed(want_rules)]
            view.chains[kchain] = [*want, *(h for h in have if h is None)]
            view.specs[kchain] = [*want_rules, *(None for h in have if h is None)]
            view.builtin.add(kchain)
        stale = sorted(c for c in state.chains if c.startswith(CHAIN_PREFIX) and c not in chains
                       and c not in state.builtin)
        body += [f"-F {c}" for c in stale]
        body += [f"-X {c}" for c in stale]
        for c in stale:
            del view.chains[c]
        if not decl and not body:
            return None, state
        return "\n".join([f"*{table}", *sorted(decl), *body, "COMMIT", ""]), view

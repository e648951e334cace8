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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from l3net.constants import CHAIN_PREFIX, RULE_HASH_COMMENT_PREFIX

_log = logging.getLogger(__name__)

__all__ = ["IptablesDriver", "IptablesError", "Runner", "TableState", "detect_backend", "local_runner",
           "netns_runner", "parse_save"]

Runner = Callable[[Sequence[str], "str | None"], tuple[int, str, str]]

_HASH_RE = re.compile(r'--comment "?' + re.escape(RULE_HASH_COMMENT_PREFIX) + r'([A-Za-z0-9_-]+)')
_KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
MANAGED_TABLES = ("filter", "raw")


def local_runner(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run a command in the current network namespace."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def netns_runner(netns: str) -> Runner:
    """A runner that executes every command inside ``netns`` (``ip netns exec``)."""
    def run(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        return local_runner(["ip", "netns", "exec", netns, *argv], stdin)
    return run


class IptablesError(RuntimeError):
    """iptables-restore kept failing after the bounded retries; carries the last stderr."""


@dataclass
class TableState:
    """What ``iptables-save -t <table>`` says, parsed only as far as we need (names and our hashes)."""

    chains: dict[str, list[str | None]] = field(default_factory=dict)  # chain -> per rule: our hash or None
    builtin: set[str] = field(default_factory=set)


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
            chain = line.split(None, 2)[1]
            m = _HASH_RE.search(line)
            state.chains.setdefault(chain, []).append(m.group(1) if m else None)
    return state


def _hash_of(rule: str) -> str:
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
    """Owns every ``l3n-`` chain and every ``l3n:``-hashed rule in the filter and raw tables of one namespace.

    ``apply(program)`` reads each table with iptables-save, diffs chain by chain
    on the hash comments, and writes one ``iptables-restore --noflush --wait``
    transaction per table that changed (whole-chain rewrites; hooks inserted
    once at the top of the kernel chains; stale ``l3n-`` chains and hooks
    removed). Nothing else is touched. Idempotent: an apply with nothing changed
    runs no restore at all. Runs on the agent's sync loop (not thread-safe).
    Fails after ``max_retries`` with :class:`IptablesError` (the caller dies
    with diagnostics rather than run with unknown rules).
    """

    def __init__(self, runner: Runner = local_runner, backend: str = "auto", *, max_retries: int = 5,
                 initial_backoff: float = 0.01, sleep: Callable[[float], None] = time.sleep,
                 tables: Sequence[str] = MANAGED_TABLES):
        if backend not in ("auto", "nft", "legacy"):
            raise ValueError(f"backend: {backend!r} is not auto, nft or legacy")
        self._runner = runner
        self._backend = None if backend == "auto" else backend
        self._max_retries = max_retries
        self._backoff = initial_backoff
        self._sleep = sleep
        self._tables = tuple(tables)
        self.restore_calls = 0
        self.save_calls = 0
        self.errors = 0
        self.last_lines_written = 0

    @property
    def backend(self) -> str:
        if self._backend is None:
            self._backend = detect_backend(self._runner)
        return self._backend

    def read_table(self, table: str) -> TableState:
        self.save_calls += 1
        rc, out, err = self._runner([_tools(self.backend)[0], "-t", table], None)
        if rc != 0:
            # A table that was never used may not exist yet (legacy): treat as empty.
            _log.debug("iptables-save failed table=%s rc=%s err=%s", table, rc, err.strip())
            return TableState()
        return parse_save(out)

    def apply(self, chains: Mapping[str, Mapping[str, Sequence[str]]],
              hooks: Mapping[str, Mapping[str, Sequence[str]]]) -> int:
        """Make the kernel match; returns the number of restore transactions written."""
        writes = 0
        for table in sorted(set(self._tables) | set(chains) | set(hooks)):
            writes += self._apply_table(table, chains.get(table, {}), hooks.get(table, {}))
        return writes

    def apply_program(self, program: object) -> int:
        """Convenience: apply a ``policy.compiler.PolicyProgram``."""
        return self.apply(program.chains, program.hooks)  # type: ignore[attr-defined]

    def remove_all(self) -> int:
        """Remove every chain and hook we own (agent shutdown with cleanup, tests)."""
        return self.apply({}, {})

    def _apply_table(self, table: str, chains: Mapping[str, Sequence[str]],
                     hooks: Mapping[str, Sequence[str]]) -> int:
        for name in chains:
            if not name.startswith(CHAIN_PREFIX):
                raise ValueError(f"chains[{table}][{name}]: not an {CHAIN_PREFIX} chain")
        delay = self._backoff
        for attempt in range(self._max_retries + 1):
            state = self.read_table(table)
            script = self._diff(table, state, chains, hooks)
            if script is None:
                return 0
            self.restore_calls += 1
            rc, _, err = self._runner([_tools(self.backend)[1], "--noflush", "--wait"], script)
            if rc == 0:
                self.last_lines_written = script.count("\n")
                _log.info("iptables applied table=%s lines=%d", table, self.last_lines_written)
                return 1
            self.errors += 1
            _log.warning("iptables-restore failed table=%s attempt=%d rc=%s err=%s", table, attempt, rc,
                         err.strip()[:500])
            if attempt < self._max_retries:
                self._sleep(delay * (1 + random.random()))
                delay *= 2
        _, dump, _ = self._runner([_tools(self.backend)[0], "-t", table], None)
        _log.error("iptables-restore gave up table=%s current=\n%s", table, dump)
        raise IptablesError(f"iptables-restore for table {table} failed {self._max_retries + 1} times: {err.strip()}")

    @staticmethod
    def _diff(table: str, state: TableState, chains: Mapping[str, Sequence[str]],
              hooks: Mapping[str, Sequence[str]]) -> str | None:
        decl: list[str] = []
        body: list[str] = []
        for name, rules in sorted(chains.items()):
            want = [_hash_of(r) for r in rules]
            if state.chains.get(name) == want and name in state.chains:
                continue
            decl.append(f":{name} - [0:0]")
            if name in state.chains:
                body.append(f"-F {name}")
            body += [f"-A {name} {r}" for r in rules]
        for kchain in sorted(set(hooks) | {c for c in state.builtin if any(state.chains.get(c, []))}):
            have = state.chains.get(kchain, [])
            ours = [i for i, h in enumerate(have) if h is not None]
            want_rules = list(hooks.get(kchain, []))
            want = [_hash_of(r) for r in want_rules]
            if [have[i] for i in ours] == want and (not want or ours == list(range(len(want)))):
                continue  # our hooks already sit at the top, in order
            body += [f"-D {kchain} {i + 1}" for i in reversed(ours)]
            body += [f"-I {kchain} 1 {r}" for r in reversed(want_rules)]
        stale = sorted(c for c in state.chains if c.startswith(CHAIN_PREFIX) and c not in chains
                       and c not in state.builtin)
        body += [f"-F {c}" for c in stale]
        body += [f"-X {c}" for c in stale]
        if not decl and not body:
            return None
        return "\n".join([f"*{table}", *decl, *body, "COMMIT", ""])

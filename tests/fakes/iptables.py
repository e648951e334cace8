"""tests.fakes.iptables: a stateful fake of iptables-{nft,legacy}-save/-restore --noflush and ipset save/restore.

One callable stands for both tools because felix's iptables and ipset drivers share one command-runner
seam (``run(argv, stdin) -> (returncode, stdout, stderr)``); each restore is atomic, as in the kernel.
"""

from __future__ import annotations

import copy
import re
import shlex

_TARGETS = {"ACCEPT", "DROP", "RETURN", "MARK", "REJECT", "LOG", "MASQUERADE", "SNAT"}
_BUILTIN = {"filter": ["INPUT", "FORWARD", "OUTPUT"], "raw": ["PREROUTING", "OUTPUT"],
            "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]}


class FakeIptables:
    """Models iptables-{nft,legacy}-save/-restore --noflush and ipset save/restore, atomically per call."""

    def __init__(self) -> None:
        self.tables = {t: {c: [] for c in chains} for t, chains in _BUILTIN.items()}
        self.ipsets: dict[str, tuple[str, set[str]]] = {}
        self.legacy_tables: dict[str, dict[str, list[str]]] = {}
        self.writes: list[str] = []
        self.fail_next = 0
        self.save_fail_next = 0  # iptables-save calls that fail (not because a table is missing)
        self.refuse: set[str] = set()  # iptables-restore refuses a rule containing any of these (a kernel check)

    def __call__(self, argv, stdin=None):
        tool = argv[0]
        if tool.startswith("iptables-") and tool.endswith("-save"):
            tables = self.tables if "nft" in tool else self.legacy_tables
            if self.save_fail_next:
                self.save_fail_next -= 1
                return 1, "", "iptables-save: Could not fetch rule set generation id: Invalid argument"
            wanted = [argv[2]] if "-t" in argv else sorted(tables)
            if "-t" in argv and argv[2] not in tables:
                return 1, "", f"Table `{argv[2]}' does not exist"
            return 0, "".join(self._render(t, tables.get(t, {})) for t in wanted), ""
        if tool.startswith("iptables-") and tool.endswith("-restore"):
            assert "--noflush" in argv and "--wait" in argv
            self.writes.append(stdin)
            if self.fail_next:
                self.fail_next -= 1
                return 4, "", "Another app is currently holding the xtables lock"
            return self._restore(stdin)
        if argv[:2] == ["ipset", "save"]:
            out = []
            for name, (kind, members) in self.ipsets.items():
                out.append(f"create {name} {kind} family inet hashsize 1024 maxelem 1048576")
                out += [f"add {name} {m}" for m in sorted(members)]
            return 0, "\n".join(out) + "\n", ""
        if argv[:2] == ["ipset", "restore"]:
            self.writes.append(stdin)
            return self._ipset_restore(stdin)
        return 127, "", f"unknown command {argv}"

    @staticmethod
    def _render(table, chains):
        lines = [f"*{table}"]
        lines += [f":{c} {'ACCEPT' if c in _BUILTIN.get(table, ()) else '-'} [0:0]" for c in chains]
        lines += [f"-A {c} {r}" for c, rules in chains.items() for r in rules]
        return "\n".join([*lines, "COMMIT", ""])

    def _restore(self, script):
        tables = copy.deepcopy(self.tables)
        chains = None
        try:
            for line in script.splitlines():
                if not line or line.startswith("#"):
                    continue
                if line.startswith("*"):
                    chains = tables.setdefault(line[1:], {})
                elif line == "COMMIT":
                    chains = None
                elif line.startswith(":"):
                    chains.setdefault(line[1:].split()[0], [])
                else:
                    op, rest = line.split(None, 1)
                    assert not any(bad in rest for bad in self.refuse), f"kernel refused {rest}"
                    self._op(chains, op, rest)
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            return 1, "", f"iptables-restore: line failed: {exc}"
        self.tables = tables
        return 0, "", ""

    @staticmethod
    def _op(chains, op, rest):
        name, _, rule = rest.partition(" ")
        if op in ("-A", "-I"):
            assert name in chains, f"no chain {name}"
            pos = 0
            if op == "-I" and rule.split(" ", 1)[0].isdigit():
                pos, rule = int(rule.split(" ", 1)[0]) - 1, rule.split(" ", 1)[1]
            toks = shlex.split(rule)
            for flag in ("-i", "-o"):  # as iptables' parser: an interface name longer than IFNAMSIZ-1 is refused
                assert flag not in toks or len(toks[toks.index(flag) + 1]) <= 15, "interface name too long"
            for flag in ("-j", "-g"):
                if flag in toks:
                    target = toks[toks.index(flag) + 1]
                    assert target in _TARGETS or target in chains, f"no target {target}"
            chains[name].insert(pos, rule) if op == "-I" else chains[name].append(rule)
        elif op == "-D":  # by number or by rule spec (the first rule with exactly this text)
            if rule.isdigit():
                del chains[name][int(rule) - 1]
            else:
                chains[name].remove(rule)
        elif op == "-F":
            chains[name].clear()
        elif op == "-X":
            assert not chains[name], "chain not empty"
            assert not any(re.search(rf"-[jg] {re.escape(name)}( |$)", r) for rs in chains.values() for r in rs), \
                "chain referenced"
            assert not any(name in b for b in _BUILTIN.values())
            del chains[name]
        else:
            raise ValueError(op)

    def _ipset_restore(self, script):
        sets = copy.deepcopy(self.ipsets)
        try:
            for line in script.splitlines():
                parts = line.split()
                if not parts or parts[0] == "COMMIT":
                    continue
                cmd, name = parts[0], parts[1]
                if cmd == "create":
                    assert name not in sets, "set exists"
                    sets[name] = (parts[2], set())
                elif cmd == "add":
                    assert parts[2] not in sets[name][1], "element exists"
                    # the kernel's hash:net refuses a zero prefix length
                    assert not (sets[name][0] == "hash:net" and parts[2].endswith("/0")), "invalid CIDR /0"
                    sets[name][1].add(parts[2])
                elif cmd == "del":
                    sets[name][1].remove(parts[2])
                elif cmd == "swap":
                    assert sets[name][0] == sets[parts[2]][0], "incompatible types"
                    sets[name], sets[parts[2]] = sets[parts[2]], sets[name]
                elif cmd == "destroy":
                    del sets[name]
                else:
                    raise ValueError(cmd)
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            return 1, "", f"ipset restore: {exc}"
        self.ipsets = sets
        return 0, "", ""

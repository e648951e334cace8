"""bgp.planner: the announcement planner, pure: desired advertisements per neighbour and what each
neighbour was sent before in, the ExaBGP API commands to send out and the change to the "sent" state.

No I/O, no asyncio, no clock. The speaker builds one :class:`NeighbourWant` per neighbour that
ExaBGP has loaded, calls :func:`plan`, writes the commands in order and folds :attr:`Plan.sent`
into its record of what ExaBGP holds.

Grouping (what keeps ExaBGP's API parser and encoder fed): the prefixes of one neighbour are
grouped by (family, attribute text), cut into chunks of ``batch`` prefixes, and every neighbour
that needs exactly the same chunk with exactly the same attributes shares one command
(``neighbor A , neighbor B announce attributes … nlri …``). A route reflector's fan-out of one
client's UPDATE is therefore one command for all other clients, whatever their number.
Withdraws are grouped the same way and come first, then announcements; both in sorted order,
so a plan is deterministic (the golden tests compare exact command lists).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from bgp.commands import Advertisement, announce_batch_command, attribute_text, withdraw_batch_command

# Prefixes per batched command: bounds the line length and the work ExaBGP does per command
# (it parses a command in one go, then injects one prefix per reactor turn).
BATCH_PREFIXES = 512

Item = tuple[str, str]   # (neighbour address, prefix)


@dataclass(frozen=True)
class NeighbourWant:
    """What one neighbour should hold, for the prefixes this pass looks at.

    ``want`` maps each prefix to announce to its advertisement; ``check`` is the set of prefixes
    the pass looks at (None: every prefix of ``want`` and of what was sent: a full pass). A
    checked prefix absent from ``want`` is withdrawn if it was sent (or if it is ``unsure``: its
    state in ExaBGP is unknown). ``resend`` re-announces every wanted prefix even when the sent
    state says it is there (after a session came up); ``unsure`` prefixes are always re-sent.
    """

    address: str
    want: Mapping[str, Advertisement]
    ibgp: bool = True
    check: Set[str] | None = None
    resend: bool = False
    unsure: Set[str] = frozenset()


@dataclass(frozen=True)
class Command:
    """A line for ExaBGP, and the (neighbour, prefix) pairs whose state in ExaBGP it sets."""

    line: str
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The commands to write (in order), the new sent state per neighbour (prefix -> advertisement
    now held, None: withdrawn) and the advertisements left out because the API grammar refuses them."""

    commands: tuple[Command, ...] = ()
    sent: dict[str, dict[str, Advertisement | None]] = field(default_factory=dict)
    refused: tuple[str, ...] = ()


@dataclass
class _Groups:
    """Per neighbour: (v6, attribute text) -> prefixes to announce, v6 -> prefixes to withdraw."""

    attrs: dict[tuple[bool, str], tuple[Advertisement, bool]] = field(default_factory=dict)
    texts: dict[tuple[Advertisement, bool], str] = field(default_factory=dict)
    announce: dict[str, dict[tuple[bool, str], list[str]]] = field(default_factory=dict)
    withdraw: dict[str, dict[bool, list[str]]] = field(default_factory=dict)

    def text(self, adv: Advertisement, ibgp: bool) -> str:
        text = self.texts.get((adv, ibgp))
        if text is None:
            text = self.texts[(adv, ibgp)] = attribute_text(adv, ibgp=ibgp)
        return text


def plan(neighbours: Iterable[NeighbourWant], sent: Mapping[str, Mapping[str, Advertisement]], *,
         batch: int = BATCH_PREFIXES) -> Plan:
    """Diff each neighbour's ``want`` against ``sent`` and group the difference into few commands."""
    groups = _Groups()
    delta: dict[str, dict[str, Advertisement | None]] = {}
    refused: list[str] = []
    for nb in neighbours:
        changes = _diff_one(nb, sent.get(nb.address, {}), groups, refused)
        if changes:
            delta[nb.address] = changes
    return Plan(tuple(_commands(groups, batch, refused)), delta, tuple(refused))


def _diff_one(nb: NeighbourWant, have: Mapping[str, Advertisement], groups: _Groups,
              refused: list[str]) -> dict[str, Advertisement | None]:
    changes: dict[str, Advertisement | None] = {}
    check = nb.check if nb.check is not None else set(nb.want) | set(have) | nb.unsure
    for pfx in check:
        adv = nb.want.get(pfx)
        old = have.get(pfx)
        v6 = ":" in pfx
        if adv is None:
            if old is not None or pfx in nb.unsure:
                groups.withdraw.setdefault(nb.address, {}).setdefault(v6, []).append(pfx)
                changes[pfx] = None
        elif nb.resend or pfx in nb.unsure or old != adv:
            try:
                text = groups.text(adv, nb.ibgp)
            except ValueError as exc:
                # an advertisement with a value outside the API grammar: left out (and claimed, so it
                # is not retried in a loop), the rest goes on
                refused.append(f"{nb.address} {pfx}: {exc}")
                changes[pfx] = adv
                continue
            groups.attrs.setdefault((v6, text), (adv, nb.ibgp))
            groups.announce.setdefault(nb.address, {}).setdefault((v6, text), []).append(pfx)
            changes[pfx] = adv
    return changes


def _commands(groups: _Groups, batch: int, refused: list[str]) -> list[Command]:
    """One command per (prefix chunk, attributes) for every neighbour that needs exactly that chunk."""
    wd_groups: dict[tuple[str, ...], list[str]] = {}
    for addr, fams in groups.withdraw.items():
        for pfxs in fams.values():
            for chunk in _chunks(sorted(pfxs), batch):
                wd_groups.setdefault(chunk, []).append(addr)
    an_groups: dict[tuple[tuple[bool, str], tuple[str, ...]], list[str]] = {}
    for addr, by_attrs in groups.announce.items():
        for key, pfxs in by_attrs.items():
            for chunk in _chunks(sorted(pfxs), batch):
                an_groups.setdefault((key, chunk), []).append(addr)
    out = []
    for chunk, addrs in sorted(wd_groups.items()):
        addrs.sort()
        out.append(Command(withdraw_batch_command(addrs, chunk), tuple((a, x) for a in addrs for x in chunk)))
    for (key, chunk), addrs in sorted(an_groups.items()):
        addrs.sort()
        adv, ibgp = groups.attrs[key]
        try:
            line = announce_batch_command(addrs, chunk, adv, ibgp=ibgp)
        except ValueError as exc:
            refused.append(f"{len(chunk)} prefixes: {exc}")
            continue
        out.append(Command(line, tuple((a, x) for a in addrs for x in chunk)))
    return out


def _chunks(items: list[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


def apply_sent(sent: dict[str, dict[str, Advertisement]],
               delta: Mapping[str, Mapping[str, Advertisement | None]]) -> None:
    """Fold a plan's sent-state change into ``sent`` (the speaker's record of what ExaBGP holds)."""
    for addr, changes in delta.items():
        have = sent.setdefault(addr, {})
        for pfx, adv in changes.items():
            if adv is None:
                have.pop(pfx, None)
            else:
                have[pfx] = adv

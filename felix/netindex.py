"""felix.netindex: "is this network inside one of these networks?" with one set lookup per prefix length.

:class:`CoverIndex` is built once from a set of networks (the pools, the pools without BGP export);
:class:`BlockIndex` follows a set that changes one network at a time (the node's confirmed blocks), so a
block claim costs a set insertion, not a rebuild over every block of the node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LengthKey = tuple[int, int]   # (IP version, prefix length)


class _Cover:
    """The lookup shared by both indexes: network starts grouped by (version, prefix length)."""

    def __init__(self) -> None:
        self._starts: dict[_LengthKey, set[int]] = {}
        # Longest prefix first only to answer quickly for the usual /26 blocks; any order is correct.
        self._order: list[tuple[_LengthKey, set[int]]] = []

    def _reorder(self) -> None:
        self._order = sorted(self._starts.items(), key=lambda item: -item[0][1])

    def __contains__(self, net: IPNetwork) -> bool:
        addr, bits = int(net.network_address), net.max_prefixlen
        for (version, plen), starts in self._order:
            if version == net.version and plen <= net.prefixlen and (addr >> (bits - plen)) << (bits - plen) in starts:
                return True
        return False


class CoverIndex(_Cover):
    """Answers ``net in index`` for a fixed set of networks.

    Replaces a scan over every block per workload address (quadratic in the pods of a
    node: 200 pods with a block each cost ~40k ``subnet_of`` calls per calculation, ~0.1 s
    of GIL held by the loop while the CNI worker threads waited). Immutable once built.
    """

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        super().__init__()
        self.nets = frozenset(nets)
        for n in self.nets:
            self._starts.setdefault((n.version, n.prefixlen), set()).add(int(n.network_address))
        self._reorder()


class BlockIndex(_Cover):
    """A set of networks changed one at a time, answering ``net in index`` like :class:`CoverIndex`.

    ``nets`` is a new frozenset after each change (readers compare it with the one they saw before).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nets: frozenset[IPNetwork] = frozenset()
        self._members: set[IPNetwork] = set()
        self._dirty = False

    def add(self, net: IPNetwork) -> None:
        if net in self._members:
            return
        self._members.add(net)
        self._dirty = True
        key = (net.version, net.prefixlen)
        starts = self._starts.get(key)
        if starts is None:
            starts = self._starts[key] = set()
            self._reorder()
        starts.add(int(net.network_address))

    def discard(self, net: IPNetwork) -> None:
        if net not in self._members:
            return
        self._members.discard(net)
        self._dirty = True
        key = (net.version, net.prefixlen)
        starts = self._starts[key]
        starts.discard(int(net.network_address))
        if not starts:
            del self._starts[key]
            self._reorder()

    def publish(self) -> None:
        """Make ``nets`` the current members (once per batch of changes: a frozenset copy of them)."""
        if self._dirty:
            self.nets = frozenset(self._members)
            self._dirty = False

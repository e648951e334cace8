"""bgp.advertised: what each neighbour should be sent (our own prefixes and, on a route reflector,
the reflected ones) and what ExaBGP holds per neighbour; :meth:`Advertised.sync` plans the difference.

Desired per neighbour: our own prefixes of the neighbour's family with the view's communities
added, plus what :func:`bgp.reflector.reflect` computed for it from the Adj-RIB-In (our own route
wins on a clash), minus what the neighbour's BGPFilter export rules reject.

Sent (``sent``): claimed when a command is planned; a command ExaBGP refuses, or one in flight
when the bridge connection drops, makes every (neighbour, prefix) it carried uncertain
(:meth:`Advertised.mark_unsure`): the next sync re-sends those. No I/O: commands go out through
the ``send`` callable the speaker passes. Not thread-safe.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from bgp.commands import Advertisement
from bgp.planner import Command, Item, NeighbourWant, apply_sent, plan
from bgp.policy import REJECT, filter_verdict
from bgp.reflector import reflect
from bgp.rib import Rib
from bgp.view import NodeBGPView, PeerSpec

_log = logging.getLogger(__name__)

Send = Callable[[Command], object]


class Advertised:
    """Own and reflected advertisements, what ExaBGP holds, and the planner call between them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.view: NodeBGPView | None = None
        self.own: dict[str, Advertisement] = {}
        self.reflected: dict[str, dict[str, Advertisement]] = {}
        self.sent: dict[str, dict[str, Advertisement]] = {}
        self.unsure: dict[str, set[str]] = {}   # neighbour -> prefixes whose state in ExaBGP is unknown

    # -- desired ---------------------------------------------------------------------------
    def desired(self, peer: PeerSpec) -> dict[str, Advertisement]:
        assert self.view is not None
        want: dict[str, Advertisement] = dict(self.reflected.get(peer.address, {}))
        v6 = peer.afi == "ipv6"
        for pfx, adv in self.own.items():
            if (":" in pfx) == v6:
                want[pfx] = self._with_communities(pfx, adv)
        if peer.export_rules:
            want = {pfx: adv for pfx, adv in want.items() if _exported(peer, pfx)}
        return want

    def desired_one(self, peer: PeerSpec, pfx: str) -> Advertisement | None:
        """``desired(peer).get(pfx)`` without building the whole table (our own route wins, as there)."""
        if not _exported(peer, pfx):
            return None
        adv = self.own.get(pfx)
        if adv is not None and (":" in pfx) == (peer.afi == "ipv6"):
            return self._with_communities(pfx, adv)
        return self.reflected.get(peer.address, {}).get(pfx)

    def _with_communities(self, pfx: str, adv: Advertisement) -> Advertisement:
        assert self.view is not None
        extra = tuple(c for c in self.view.communities_for(pfx) if c not in adv.communities)
        return replace(adv, communities=adv.communities + extra) if extra else adv

    # -- reflection glue -------------------------------------------------------------------
    def reflect_all(self, rib: Rib) -> None:
        view = self.view
        if view is None or not view.cluster_id:
            self.reflected = {}
            return
        self.reflected = reflect(rib, view.peers, view.cluster_id)

    def reflect_changed(self, rib: Rib, changed: set[str]) -> None:
        """Recompute the reflected routes of ``changed`` only (an update touches few of many prefixes)."""
        view = self.view
        if view is None or not view.cluster_id:
            self.reflected = {}
            return
        part = reflect(rib, view.peers, view.cluster_id, changed)
        for addr, table in part.items():
            mine = self.reflected.setdefault(addr, {})
            for pfx in changed:
                mine.pop(pfx, None)
            mine.update(table)

    # -- sent state ------------------------------------------------------------------------
    def forget(self, addr: str) -> None:
        self.sent.pop(addr, None)
        self.unsure.pop(addr, None)

    def reset(self) -> None:
        """ExaBGP (re)started: it holds nothing."""
        self.sent = {}
        self.unsure = {}

    def mark_unsure(self, items: Iterable[Item], known: Mapping[str, object]) -> None:
        for addr, pfx in items:
            if addr in known:
                self.unsure.setdefault(addr, set()).add(pfx)

    def advertised(self, addr: str) -> int:
        return len(self.sent.get(addr, {}))

    def sync(self, peers: Iterable[PeerSpec], send: Send, *, full: set[str] | None = None,
             prefixes: set[str] | None = None) -> None:
        """Plan (:func:`bgp.planner.plan`) and send what ExaBGP must change for ``peers``.

        ``full`` re-announces everything to those peers; ``prefixes`` limits the diff of the
        other peers to those prefixes (what an update changed); uncertain prefixes are always
        included.
        """
        wants = []
        for spec in peers:
            addr = spec.address
            unsure = self.unsure.pop(addr, set())
            if prefixes is None or (full is not None and addr in full):
                wants.append(NeighbourWant(addr, self.desired(spec), not spec.ebgp,
                                           resend=full is not None and addr in full, unsure=unsure))
            else:
                check = prefixes | unsure
                want = {pfx: adv for pfx in check if (adv := self.desired_one(spec, pfx)) is not None}
                wants.append(NeighbourWant(addr, want, not spec.ebgp, check=check, unsure=unsure))
        out = plan(wants, self.sent)
        apply_sent(self.sent, out.sent)
        for why in out.refused:
            _log.error("advertisement not sent node=%s reason=%s", self.node, why)
        for cmd in out.commands:
            send(cmd)


def _exported(peer: PeerSpec, pfx: str) -> bool:
    """The peer's BGPFilter export rules allow ``pfx`` (no rule matching: they do)."""
    if not peer.export_rules:
        return True
    return filter_verdict(peer.export_rules, ipaddress.ip_network(pfx)) != REJECT

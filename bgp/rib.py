"""bgp.rib: Adj-RIB-In per peer and best-path selection with ECMP.

ExaBGP has no RIB and sends no withdraws when a session goes down, so this
module owns the learned routes: ``apply(event)`` folds update and state events
in (a peer's routes are all dropped on ``state: down``), ``best_routes()`` gives
``{prefix: [next_hop, ...]}`` for the route driver.

Decision process (RFC 4271 §9.1.2.2, the subset that matters here):
highest LOCAL_PREF (default 100), shortest AS_PATH, lowest ORIGIN
(igp < egp < incomplete), lowest MED (missing = 0, compared across all
paths, like BIRD's ``med metric`` default-off simplification), eBGP over iBGP, then lowest
router ID (the ORIGINATOR_ID when reflected, else the peer address: l3net
nodes use their address as router ID), then lowest peer address. Paths equal up
to and including eBGP/iBGP are multipath (ECMP) siblings of the best one.

Loop checks at ingest: a path whose AS_PATH holds our AS (eBGP loop), whose
ORIGINATOR_ID is our router ID, or whose CLUSTER_LIST holds our cluster ID is
dropped (RFC 4456 §8).

Graceful restart (RFC 4724, receiving side): ``mark_stale(peer)`` keeps every path
of a peer whose session dropped, flagged stale and still used for forwarding; a
re-announcement of the same prefix (or a withdraw) clears the flag, and
``sweep_stale(peer)`` (on the peer's End-of-RIB or when its restart timer expires)
removes whatever is still stale. Not thread-safe: used from the speaker's loop only.

Import policy (:mod:`bgp.policy`): ``import_check(peer, announce)`` (set by the speaker)
says why a path must not be taken. Refused paths are *held* (kept, not used: soft
reconfiguration, up to ``HELD_FACTOR`` times the peer's limit) and re-checked by
``refilter()`` when the cluster, the filters or the limits change. A peer that sends more
accepted prefixes than its limit (``limits``) has none of them used until its session
restarts or its limit or filters change (``over_limit``): a peer leaking a full table
installs nothing rather than an arbitrary part of it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bgp.events import Announce, PathAttrs, StateEvent, UpdateEvent

ImportCheck = Callable[[str, Announce], str | None]
# Paths not used (refused by policy, or over the limit) are kept up to this many times the peer's
# prefix limit, so that a policy or limit change is applied without the peer re-sending anything.
HELD_FACTOR = 2

_log = logging.getLogger(__name__)

_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}


@dataclass(frozen=True)
class Path:
    """One route as received from one peer."""

    peer: str
    prefix: str
    next_hop: str
    attrs: PathAttrs
    ebgp: bool

    @property
    def router_id(self) -> str:
        return self.attrs.originator_id or self.peer

    def multipath_key(self) -> tuple[int, int, int, int, int]:
        a = self.attrs
        return (-(a.local_pref if a.local_pref is not None else 100), len(a.as_path),
                _ORIGIN_RANK.get(a.origin, 2), a.med or 0, 0 if self.ebgp else 1)

    def sort_key(self) -> tuple[object, ...]:
        return (*self.multipath_key(), int(ipaddress.ip_address(self.router_id)) if ":" not in self.router_id
                else 1 << 40, ipaddress.ip_address(self.peer).packed)


class Rib:
    """Adj-RIB-In of every peer of one node, and the Loc-RIB choice over them."""

    def __init__(self, *, local_as: int, router_id: str | None, cluster_id: str | None = None,
                 local_addresses: tuple[str, ...] = ()) -> None:
        self.local_as = local_as
        self.router_id = router_id
        self.cluster_id = cluster_id
        self.local_addresses = frozenset(local_addresses)
        self._in: dict[str, dict[str, Path]] = {}   # peer -> prefix -> path
        self._stale: dict[str, set[str]] = {}       # peer -> prefixes kept through a restart, not yet re-sent
        self._peer_as: dict[str, int] = {}
        self.import_check: ImportCheck | None = None
        self.limits: dict[str, int] = {}             # peer -> most accepted prefixes (absent: no limit)
        self._held: dict[str, dict[str, Path]] = {}  # peer -> prefix -> path refused by a default, re-checked
        self.over_limit: dict[str, int] = {}         # peer -> the limit it exceeded (ignored until reset)
        self.limit_hits = 0
        self.ignored = 0                             # paths dropped because the held table was full
        self.overflowed: set[str] = set()           # peers some of whose paths were dropped that way

    # -- input ---------------------------------------------------------------------------
    def apply(self, event: StateEvent | UpdateEvent) -> set[str]:
        """Fold one event in; return the prefixes whose candidate paths changed."""
        if isinstance(event, StateEvent):
            if event.state == "down":
                return self.drop_peer(event.peer)
            if event.peer_as is not None:
                self._peer_as[event.peer] = event.peer_as
            return set()
        changed: set[str] = set()
        table = self._in.setdefault(event.peer, {})
        held = self._held.setdefault(event.peer, {})
        stale = self._stale.get(event.peer)
        if stale:
            stale.difference_update(event.withdraws)
            stale.difference_update(a.prefix for a in event.announces)
        peer_as = event.peer_as if event.peer_as is not None else self._peer_as.get(event.peer, self.local_as)
        local_as = event.local_as if event.local_as is not None else self.local_as
        limit = self.limits.get(event.peer)
        for pfx in event.withdraws:
            held.pop(pfx, None)
            if table.pop(pfx, None) is not None:
                changed.add(pfx)
        for ann in event.announces:
            path = Path(event.peer, ann.prefix, ann.next_hop, ann.attrs, ebgp=peer_as != local_as)
            held.pop(ann.prefix, None)
            reason = self._reject(path)
            if reason:
                _log.debug("path rejected peer=%s prefix=%s reason=%s", event.peer, ann.prefix, reason)
                if table.pop(ann.prefix, None) is not None:
                    changed.add(ann.prefix)
                continue
            policy = self._policy(event.peer, ann)
            if policy or event.peer in self.over_limit:
                if table.pop(ann.prefix, None) is not None:
                    changed.add(ann.prefix)
                self._hold(event.peer, held, path, limit)
                continue
            if ann.prefix not in table and limit is not None and len(table) >= limit:
                changed |= self._trip(event.peer, limit)
                self._hold(event.peer, held, path, limit)
                continue
            if table.get(ann.prefix) != path:
                table[ann.prefix] = path
                changed.add(ann.prefix)
        return changed

    def _hold(self, peer: str, held: dict[str, Path], path: Path, limit: int | None) -> None:
        """Keep a path that is not used, to re-check it later (soft reconfiguration), up to twice the limit."""
        if limit is None or len(held) < HELD_FACTOR * limit:
            held[path.prefix] = path
        else:
            self.ignored += 1
            self.overflowed.add(peer)

    def _policy(self, peer: str, ann: Announce) -> str | None:
        return self.import_check(peer, ann) if self.import_check is not None else None

    def _trip(self, peer: str, limit: int) -> set[str]:
        """``peer`` exceeded its prefix limit: none of its paths is used until it resets (all are held)."""
        self.limit_hits += 1
        self.over_limit[peer] = limit
        table = self._in.pop(peer, {})
        held = self._held.setdefault(peer, {})
        for path in table.values():
            self._hold(peer, held, path, limit)
        self._stale.pop(peer, None)
        _log.warning("BGP peer exceeded its prefix limit: none of its routes is used until its session restarts "
                     "or its limit or filters change peer=%s limit=%d dropped=%d", peer, limit, len(table))
        return set(table)

    def reset_limit(self, peer: str) -> None:
        """Use ``peer``'s paths again (its session restarted, or its limit or filters changed); see refilter."""
        self.over_limit.pop(peer, None)

    def refilter(self, affected: Callable[[str, str], bool] | None = None) -> set[str]:
        """Re-check every held and used path against the current import check and limits; the changed prefixes.

        ``affected(prefix, next_hop)``, when given, narrows the re-check to the paths whose verdict the
        caller's change can have altered (the limits must not have changed)."""
        changed: set[str] = set()
        for peer in list(self._in.keys() | self._held.keys()):
            table = self._in.setdefault(peer, {})
            held = self._held.setdefault(peer, {})
            limit = self.limits.get(peer)
            for pfx, path in list(table.items()):
                if affected is not None and not affected(pfx, path.next_hop):
                    continue
                if self._policy(peer, Announce(pfx, path.next_hop, path.attrs)):
                    del table[pfx]
                    changed.add(pfx)
                    self._hold(peer, held, path, limit)
            if limit is not None and len(held) > HELD_FACTOR * limit:   # the limit was lowered
                for pfx in sorted(held)[HELD_FACTOR * limit:]:
                    del held[pfx]
                    self.ignored += 1
                self.overflowed.add(peer)
            if peer in self.over_limit:
                continue
            if limit is not None and len(table) > limit:   # the limit was lowered under what is in use
                changed |= self._trip(peer, limit)
                continue
            for pfx, path in sorted(held.items()):
                if affected is not None and not affected(pfx, path.next_hop):
                    continue
                if self._policy(peer, Announce(pfx, path.next_hop, path.attrs)) is None:
                    if limit is not None and len(table) >= limit:
                        changed |= self._trip(peer, limit)
                        break
                    del held[pfx]
                    table[pfx] = path
                    changed.add(pfx)
        return changed

    def held(self, peer: str) -> int:
        """How many paths of ``peer`` the import defaults refuse at present (kept for re-checking)."""
        return len(self._held.get(peer, {}))

    def _reject(self, path: Path) -> str | None:
        a = path.attrs
        if path.ebgp and self.local_as in a.as_path:
            return "own AS in AS_PATH"
        if self.router_id and a.originator_id == self.router_id:
            return "ORIGINATOR_ID is us"
        if self.cluster_id and self.cluster_id in a.cluster_list:
            return "CLUSTER_LIST holds our cluster ID"
        if path.next_hop in self.local_addresses:
            return "next hop is one of our addresses"
        return None

    def drop_peer(self, peer: str) -> set[str]:
        """Forget everything ``peer`` sent (session down, or peer removed)."""
        table = self._in.pop(peer, {})
        self._stale.pop(peer, None)
        self._held.pop(peer, None)
        self.over_limit.pop(peer, None)
        self.overflowed.discard(peer)
        if table:
            _log.info("dropping routes of peer=%s count=%d", peer, len(table))
        return set(table)

    def mark_stale(self, peer: str) -> int:
        """Keep ``peer``'s paths through its restart, flagged stale; returns how many (no best path changes)."""
        table = self._in.get(peer, {})
        if not table:
            return 0
        self._stale.setdefault(peer, set()).update(table)
        return len(self._stale[peer])

    def sweep_stale(self, peer: str) -> set[str]:
        """Remove ``peer``'s paths still stale (End-of-RIB seen or restart timer expired); the changed prefixes."""
        stale = self._stale.pop(peer, set())
        table = self._in.get(peer, {})
        gone = {pfx for pfx in stale if table.pop(pfx, None) is not None}
        if gone:
            _log.info("swept stale routes peer=%s count=%d", peer, len(gone))
        return gone

    def stale(self, peer: str) -> set[str]:
        """Prefixes of ``peer`` kept through a restart and not yet re-announced."""
        return set(self._stale.get(peer, ()))

    def stale_count(self) -> int:
        return sum(len(s) for s in self._stale.values())

    # -- queries -------------------------------------------------------------------------
    def received(self, peer: str) -> int:
        return len(self._in.get(peer, {}))

    def peers(self) -> list[str]:
        return sorted(self._in)

    def candidates(self, prefix: str) -> list[Path]:
        return sorted((t[prefix] for t in self._in.values() if prefix in t), key=Path.sort_key)

    def best_paths(self, prefix: str) -> list[Path]:
        """The best path first, followed by its ECMP siblings (empty if unreachable)."""
        cands = self.candidates(prefix)
        if not cands:
            return []
        key = cands[0].multipath_key()
        return [p for p in cands if p.multipath_key() == key]

    def prefixes(self) -> set[str]:
        out: set[str] = set()
        for t in self._in.values():
            out.update(t)
        return out

    def best_next_hops(self, prefix: str) -> list[str]:
        """The ECMP next hops of ``prefix``, sorted and de-duplicated (empty if unreachable)."""
        return sorted({p.next_hop for p in self.best_paths(prefix)}, key=lambda h: ipaddress.ip_address(h).packed)

    def best_routes(self) -> dict[str, list[str]]:
        """``{prefix: [next hops]}`` with ECMP next hops sorted and de-duplicated."""
        out: dict[str, list[str]] = {}
        for pfx in self.prefixes():
            hops = self.best_next_hops(pfx)
            if hops:
                out[pfx] = hops
        return dict(sorted(out.items()))

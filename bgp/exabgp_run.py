"""bgp.exabgp_run: ExaBGP's own command line, with the in-process changes that make a route reflector affordable.

``python -m bgp.exabgp_run server CONF`` is ``python -m exabgp server CONF`` except for the
changes below, each the same result at a lower cost; first, routes are not deep-copied per
neighbour when nothing in them is per neighbour.

Why: ExaBGP 5's ``Neighbor.remove_self`` deep-copies every injected route for every neighbour
it goes to, only so that it can replace a ``next-hop self`` by that neighbour's local address.
A reflector never sends ``self`` on reflected routes, and it sends each route to N-1 neighbours:
measured at 50 clients x 64 prefixes (bench reflector_scale, cProfile), ``copy.deepcopy`` was
73 % of ExaBGP's CPU and the copies most of its 690 MiB RSS. With the change, a route whose next
hop is not SELF is shared by the neighbours' outgoing RIBs; SELF routes are still copied.

Two more, for the API commands of a route reflector (one ``neighbor A , neighbor B , … announce
attributes … nlri …`` line per client UPDATE, addressed to every other client), measured with
cProfile inside ExaBGP at 100 clients x 64 prefixes (bench reflector_scale):

- ``match_neighbors`` tried every description against every peer name with a fresh regular
  expression: N x (N-1) ``re.search`` calls per command, 12 % of ExaBGP's time. When every
  description is a single ``neighbor <address>`` (all l3net sends), a peer matches exactly when
  its name's address word is one of them: a set lookup per peer, same result, same order.
- ``Update._split_nlris`` sorts the NLRIs of every UPDATE it encodes (per neighbour) with
  ``NLRI.__lt__``, which rebuilds both sides' ``index()`` bytes on every comparison: 20 % of its
  time. Sorting once by ``index()`` first (the same order) leaves its own sort a single pass.
- ``Family.family()`` builds a new ``Family`` (and its AFI and SAFI) on each call; the outgoing
  RIB calls it three times per route and neighbour: 19 % of its time. A ``Family`` is a value
  (nothing in ExaBGP assigns to one after ``__init__``), so one per (AFI, SAFI) is handed out.
- The API logs every route of a command at INFO as ``route added to <every neighbour's full
  name> : <route>``: ~12 KB per route at 100 clients, 93 MB of ``exabgp.log`` per full table
  (300 MB at 200), and 7 % of its time. The neighbour list becomes its count.
- ``Configuration.inject_change`` tested ``neighbor_name in peers`` on a list for every neighbour,
  per route: N^2 string comparisons per route (4 % of its time). A set gives the same answer.
- ``INET.index()`` and ``CIDR.pack_nlri()`` rebuilt the same bytes on every call, ~4 times per route
  and neighbour (about 20 % of its time at 200 clients x 64 prefixes): each is kept on its object
  (:func:`_memo_nlri_bytes`).

One change is a fix for sourceAddress None (``local-address auto``): ExaBGP learns such a neighbour's local
address when its session connects, and resolves ``next-hop self`` from it. A reload builds a new neighbour
object without it, and a session that stays up never connects again, so every later ``next-hop self``
announcement to it failed (``'NoneType' object has no attribute 'afi'``). :func:`patch_auto_local_address`
carries the discovered address over to the reloaded neighbour (a new connection still replaces it).

One change is for latency: ExaBGP runs 50 steps of queued API work per reactor turn and then waits for its
idle poll; :func:`patch_async_backlog` makes a turn that leaves work queued not wait.

One change is a feature rather than a saving: ExaBGP has no keepalive setting (it always sends
keepalives every hold/3), so Calico's ``keepaliveTime`` travels in the neighbour's description
(``keepalive 1s``, :func:`keepalive_word`) and :func:`patch_keepalive` sets the session's send
timer from it, as long as it stays below the negotiated hold time.

Why sharing is safe (read in exabgp 5.0.15): nothing mutates a change after it is injected. The
API builds fresh change objects for every command and sets their action before injecting them;
``OutgoingRIB.del_from_rib`` deep-copies before it flips the action to withdraw; the update
cache and the per-attribute buckets only read. The only in-place mutation of stored changes is
the watchdog feature, which l3net does not use. The patch is applied only to the ExaBGP release
line it was read in (:data:`PATCHED_SERIES`); any other version runs unmodified, with a warning.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)

PATCHED_SERIES = "5.0."


def patch_remove_self() -> bool:
    """Replace ``Neighbor.remove_self`` by a copy-on-SELF-only version; True if applied."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        _log.warning("ExaBGP %s is not %sx: running it unpatched (a deep copy per route and neighbour)",
                     release, PATCHED_SERIES)
        return False
    original = Neighbor.remove_self

    def remove_self(self: Any, change: Any) -> Any:
        if not change.nlri.nexthop.SELF:
            return change   # nothing per neighbour in it: share it (see the module docstring)
        return original(self, change)

    Neighbor.remove_self = remove_self
    return True


def fast_match_neighbors(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``match_neighbors`` with a set lookup when every description is one ``neighbor <address>``."""

    def match_neighbors(peers: Any, descriptions: Any) -> Any:
        wanted = _plain_addresses(descriptions)
        if wanted is None:
            return original(peers, descriptions)
        out = []
        for name in peers:
            words = name.split(" ", 2)
            if len(words) >= 2 and words[0] == "neighbor" and words[1] in wanted and name not in out:
                out.append(name)
        return out

    return match_neighbors


def _plain_addresses(descriptions: Any) -> set[str] | None:
    """The addresses of descriptions that are all exactly ``[neighbor <address>]``, else None."""
    if not descriptions:
        return None
    out = set()
    for d in descriptions:
        if not isinstance(d, list) or len(d) != 1 or not isinstance(d[0], str):
            return None
        words = d[0].split(" ")
        if len(words) != 2 or words[0] != "neighbor" or not words[1] or "*" in words[1]:
            return None
        out.add(words[1])
    return out


def patch_api_fan_out() -> bool:
    """Install :func:`fast_match_neighbors` and a set-based ``inject_change``; True if applied."""
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor.api.command import announce, limit, rib
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        return False
    fast = fast_match_neighbors(limit.match_neighbors)
    for module in (limit, announce, rib):
        module.match_neighbors = fast  # type: ignore[attr-defined]
    original = Configuration.inject_change

    def inject_change(self: Any, peers: Any, change: Any) -> Any:
        return original(self, peers if isinstance(peers, (set, frozenset, dict)) else set(peers), change)

    Configuration.inject_change = inject_change
    _presort_update_nlris()
    _share_families()
    _short_route_logs()
    _memo_nlri_bytes()
    return True


ROUTE_ECHOES = ("route added to ", "route removed from ")


def short_route_log(message: str) -> str:
    """``route added to neighbor A …, neighbor B … : R`` -> ``route added to 2 neighbors : R``."""
    for head in ROUTE_ECHOES:
        if message.startswith(head) and " : " in message:
            names, route = message[len(head):].split(" : ", 1)
            return f"{head}{names.count('neighbor ')} neighbors : {route}"
    return message


def _short_route_logs() -> None:
    from exabgp.reactor.api import API

    original = API.log_message

    def log_message(self: Any, message: str, level: str = "INFO") -> Any:
        return original(self, short_route_log(message), level)

    API.log_message = log_message


def _share_families() -> None:
    from exabgp.protocol.family import Family

    shared: dict[tuple[Any, Any], Any] = {}

    def family(self: Any) -> Any:
        key = (self.afi, self.safi)
        found = shared.get(key)
        if found is None:
            found = shared[key] = Family(self.afi, self.safi)
        return found

    Family.family = family


def _memo_nlri_bytes() -> None:
    """``INET.index()`` and ``CIDR.pack_nlri()`` computed once per object instead of per call.

    Both rebuild the same bytes on every call (``index()`` builds the family's hex text, the path-info
    marker and the packed prefix; the sort in ``Update._split_nlris``, the outgoing RIB and its cache call
    it ~4 times per route and neighbour): 7.5 million ``index()`` calls, about 20 % of ExaBGP's CPU at 200
    clients x 64 prefixes (cProfile). A route's NLRI is shared by every neighbour since
    :func:`patch_remove_self`, so one computation serves all of them. The memo is keyed on what the bytes
    are made of (the very ``cidr`` and ``path_info`` objects, the AFI and SAFI), so an NLRI whose parts
    are replaced gets new bytes; ExaBGP never mutates a CIDR (``_packed`` and ``mask`` are set in
    ``__init__`` only). ``Label`` and ``IPVPN`` have their own ``index()`` and are left alone.
    """
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET

    index_of = INET.index
    packed_of = CIDR.pack_nlri

    def index(self: Any) -> Any:
        memo = self.__dict__.get("_l3n_index")
        if (memo is not None and memo[0] is self.cidr and memo[1] is self.path_info and memo[2] == self.afi
                and memo[3] == self.safi):
            return memo[4]
        value = index_of(self)
        self._l3n_index = (self.cidr, self.path_info, self.afi, self.safi, value)
        return value

    def pack_nlri(self: Any) -> Any:
        memo = self.__dict__.get("_l3n_nlri")
        if memo is not None and memo[0] is self._packed and memo[1] == self.mask:
            return memo[2]
        value = packed_of(self)
        self._l3n_nlri = (self._packed, self.mask, value)
        return value

    INET.index = index
    CIDR.pack_nlri = pack_nlri


def _presort_update_nlris() -> None:
    from exabgp.bgp.message.update import Update

    original = Update._split_nlris

    def split_nlris(self: Any, negotiated: Any) -> Any:
        # the order of NLRI.__lt__ (index() bytes), computing each index once
        self.nlris = sorted(self.nlris, key=lambda n: n.index())
        return original(self, negotiated)

    Update._split_nlris = split_nlris


_KEEPALIVE = re.compile(r"\bkeepalive (\d{1,5})s\b")


def keepalive_word(seconds: int) -> str:
    """How a neighbour's description carries its keepaliveTime (whole seconds: ExaBGP's timer ticks in them)."""
    return f"keepalive {int(seconds)}s"


def keepalive_interval(description: str, hold: int) -> int | None:
    """The keepalive interval a neighbour asked for in its description, for the negotiated hold time.

    None means ExaBGP's own hold/3: nothing asked, or no keepalives at all (hold 0), or a peer that
    negotiated a hold time the asked interval does not fit under (the session would expire).
    """
    m = _KEEPALIVE.search(description or "")
    if m is None or hold <= 0:
        return None
    asked = int(m.group(1))
    return asked if 1 <= asked < hold else None


def patch_keepalive() -> bool:
    """Send keepalives at the neighbour's keepaliveTime (BGPConfiguration/BGPPeer) instead of always hold/3."""
    from exabgp.reactor.keepalive import KA
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        _log.warning("ExaBGP %s is not %sx: keepalives at hold/3 whatever keepaliveTime says", release, PATCHED_SERIES)
        return False
    original = KA.__init__

    def init(self: Any, session: Any, proto: Any) -> None:
        original(self, session, proto)
        interval = keepalive_interval(str(proto.neighbor["description"]), int(proto.negotiated.holdtime))
        if interval is not None:
            self.send_timer.keepalive = interval

    KA.__init__ = init
    return True


def patch_auto_local_address() -> bool:
    """A reloaded ``local-address auto`` neighbour keeps the local address its session discovered."""
    from exabgp.reactor.peer import Peer
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        _log.warning("ExaBGP %s is not %sx: a reload loses the local address of a sourceAddress None session",
                     release, PATCHED_SERIES)
        return False

    def carry(name: str) -> None:
        original = getattr(Peer, name)

        def method(self: Any, restart_neighbor: Any = None) -> Any:
            old = getattr(self, "neighbor", None)
            if (restart_neighbor is not None and old is not None and restart_neighbor.auto_discovery
                    and restart_neighbor["local-address"] is None and old["local-address"] is not None):
                restart_neighbor["local-address"] = old["local-address"]
            return original(self, restart_neighbor)

        setattr(Peer, name, method)

    carry("reconfigure")
    carry("reestablish")
    return True


def patch_async_backlog() -> bool:
    """API work still queued at the end of a reactor turn runs on the next turn at once, not after the idle poll.

    ExaBGP runs at most ``ASYNC.LIMIT`` (50) steps of its queued API work per turn (an announce command is one
    step per route), then waits in ``poll()`` for up to its idle interval (:data:`bgp.exabgp_config.
    EXABGP_REACTOR_SPEED`) unless a socket or a helper's pipe wakes it. So a command of more than 50 routes,
    such as a reflector's fan-out of a client's UPDATE, stalled up to one idle poll before its tail, and its
    acknowledgement (which the bridge waits for before the next command) with it. With work still queued the
    wait is 0; every queued step makes progress (each yields once per route), so this never spins idle.
    """
    from exabgp.reactor.loop import Reactor
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        _log.warning("ExaBGP %s is not %sx: API work beyond 50 steps a turn waits for the idle poll", release,
                     PATCHED_SERIES)
        return False
    original = Reactor._wait_for_io

    def wait_for_io(self: Any, sleeptime: int) -> Any:
        if sleeptime and not self.asynchronous.ready():
            sleeptime = 0
        return original(self, sleeptime)

    Reactor._wait_for_io = wait_for_io
    return True


def main() -> None:
    patch_remove_self()
    patch_auto_local_address()
    patch_api_fan_out()
    patch_keepalive()
    patch_async_backlog()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    exabgp_main()


if __name__ == "__main__":
    main()

"""tests.fakes.exabgp: what ExaBGP 5.0.15 prints on its API, as JSON lines, without a process.

A :class:`Neighbor` is one session as ExaBGP names it (``neighbor.address``/``neighbor.asn``, local and peer);
its methods give the lines ExaBGP writes to l3net's API process for that session, in the shape ExaBGP's own
JSON encoder prints them (``exabgp.reactor.api.response.json``), including the envelope (``exabgp``, ``time``,
``host``, ``pid``, ``ppid``, ``counter``, ``type``):

- :meth:`Neighbor.connected`, :meth:`~Neighbor.up`, :meth:`~Neighbor.down` (``type: state``; a down always
  carries ``reason``, empty or not);
- :meth:`Neighbor.open` (``type: open``, the peer's OPEN) with capabilities built by :func:`multiprotocol`,
  :func:`route_refresh`, :func:`graceful_restart` and :func:`asn4`;
- :meth:`Neighbor.update`, :meth:`~Neighbor.announce`, :meth:`~Neighbor.withdraw` (``type: update``) with
  path attributes built by :func:`attributes`;
- :meth:`Neighbor.eor` (End-of-RIB: ``type: update`` whose message has ``eor`` and no ``update``);
- :meth:`Neighbor.notification`, :meth:`~Neighbor.keepalive` and :func:`shutdown` (printed, ignored by l3net);
- :func:`ack`: the plain ``done`` / ``error`` answer to a command.

Lines are ``json.dumps`` of the same objects, so the spacing differs from ExaBGP's hand-built strings; the
keys, nesting, order and value types do not. :meth:`Neighbor.line` wraps any neighbor body in the envelope,
for the shapes ExaBGP does not print (malformed or partial lines). tests/unit/test_fake_exabgp.py holds every
builder to l3net's parser (bgp.events) and to ExaBGP's own encoder.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "5.0.0"   # exabgp.version.json: the "exabgp" field of every line (the release is 5.0.15)
AS_TRANS = 23456        # RFC 6793: the OPEN's 2-octet "My AS" when the real AS needs four octets

ORIGIN_CODES = ("igp", "egp", "incomplete")


def _nlri(prefix: str, compact: bool) -> object:
    return prefix if compact else {"nlri": prefix}


def _family(prefix: str) -> str:
    return f"ipv{ipaddress.ip_network(prefix, strict=False).version} unicast"


def _pairs(values: Iterable[str], width: int) -> list[list[int]]:
    out = []
    for value in values:
        parts = [int(x) for x in value.split(":")]
        if len(parts) != width:
            raise ValueError(f"{value!r} is not {width} numbers separated by ':'")
        out.append(parts)
    return out


def attributes(origin: str = "igp", as_path: Iterable[int] = (), med: int | None = None,
               local_pref: int | None = None, communities: Iterable[str] = (), large_communities: Iterable[str] = (),
               originator_id: str | None = None, cluster_list: Iterable[str] = ()) -> dict[str, Any]:
    """The ``attribute`` object of an UPDATE, in ExaBGP's order; the arguments are bgp.attrs.PathAttrs' fields.

    An attribute the UPDATE does not carry is absent (an iBGP peer's empty AS_PATH too). ``as_path`` is one
    AS_SEQUENCE, printed as ExaBGP 5.0 does: ``{"0": {"element": "as-sequence", "value": [..]}}``. Communities
    are ``"a:b"`` (standard) and ``"a:b:c"`` (large) strings, printed as lists of numbers.
    """
    if origin not in ORIGIN_CODES:
        raise ValueError(f"origin {origin!r} is not one of {ORIGIN_CODES}")
    attr: dict[str, Any] = {"origin": origin}
    path = [int(a) for a in as_path]
    if path:
        attr["as-path"] = {"0": {"element": "as-sequence", "value": path}}
    if med is not None:
        attr["med"] = med
    if local_pref is not None:
        attr["local-preference"] = local_pref
    if std := _pairs(communities, 2):
        attr["community"] = std
    if originator_id is not None:
        attr["originator-id"] = originator_id
    if clusters := list(cluster_list):
        attr["cluster-list"] = clusters
    if large := _pairs(large_communities, 3):
        attr["large-community"] = large
    return attr


# -- OPEN capabilities: each builder gives {code: body}; merge them with {**a, **b} --------------------
def multiprotocol(*families: str) -> dict[str, Any]:
    """Capability 1 for ``"ipv4/unicast"``-style families."""
    return {"1": {"name": "multiprotocol", "families": list(families)}}


def route_refresh() -> dict[str, Any]:
    """Capability 2 (RFC 2918)."""
    return {"2": {"name": "route-refresh", "variant": "RFC"}}


def graceful_restart(time: int = 120, *, restart_state: bool = False, families: Iterable[str] = ("ipv4/unicast",),
                     forwarding: Iterable[str] = ()) -> dict[str, Any]:
    """Capability 64 (RFC 4724): restart ``time``, the R bit, the listed families and those with the F bit.

    ExaBGP 5.0 prints the two flags under each other's name: the R bit as ``"restart-flags": ["forwarding"]`` and
    a family's F bit as ``["restart"]``. Say what the peer sent (``restart_state``, ``forwarding``); this prints it
    the way ExaBGP does.
    """
    fwd = set(forwarding)
    fams = list(dict.fromkeys([*families, *sorted(fwd)]))
    return {"64": {"name": "graceful restart", "time": time,
                   "address-family-flags": {f: ["restart"] if f in fwd else [] for f in fams},
                   "restart-flags": ["forwarding"] if restart_state else []}}


def asn4(asn: int) -> dict[str, Any]:
    """Capability 65 (RFC 6793): the four-octet AS."""
    return {"65": {"name": "asn4", "asn4": asn}}


def ack(ok: bool = True) -> str:
    """ExaBGP's answer to a command on the API (``exabgp_api_ack``): ``done`` or ``error``."""
    return "done" if ok else "error"


def shutdown(*, time: float = 1.0, host: str = "vm", pid: int = 1, ppid: int = 1) -> str:
    """The line ExaBGP prints when it stops: a notification with no neighbor (and so no counter)."""
    return json.dumps({"exabgp": API_VERSION, "time": time, "host": host, "pid": pid, "ppid": ppid,
                       "type": "notification", "notification": "shutdown"})


@dataclass
class Neighbor:
    """One session, seen from ``local`` (this node, ``local_as``) towards ``peer`` (``peer_as``).

    ``router_id`` is the neighbor block's ``router-id`` (l3net renders the node's; None: ``local``).
    ``compact`` prints NLRI as bare prefixes (ExaBGP's ``exabgp_api_compact``). ``counter`` counts this
    neighbor's lines as ExaBGP does; the other envelope fields are fixed.
    """

    local: str = "10.0.0.2"
    peer: str = "10.0.0.1"
    local_as: int = 64512
    peer_as: int = 64512
    router_id: str | None = None
    compact: bool = False
    time: float = 1.0
    host: str = "vm"
    pid: int = 1
    ppid: int = 1
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False, repr=False,
                                           compare=False)

    @property
    def ibgp(self) -> bool:
        return self.local_as == self.peer_as

    def line(self, kind: str, **body: Any) -> str:
        """The envelope of a ``kind`` line about this neighbor, ``body`` after its address, asn and router-id."""
        neighbor: dict[str, Any] = {"address": {"local": self.local, "peer": self.peer},
                                    "asn": {"local": self.local_as, "peer": self.peer_as},
                                    "router-id": self.router_id or self.local, **body}
        return json.dumps({"exabgp": API_VERSION, "time": self.time, "host": self.host, "pid": self.pid,
                           "ppid": self.ppid, "counter": next(self._counter), "type": kind, "neighbor": neighbor})

    # -- state (api neighbor-changes) --------------------------------------------------------------
    def state(self, state: str, reason: str | None = None) -> str:
        """A state change; ``reason`` is printed when given (ExaBGP gives it for ``down`` only)."""
        body: dict[str, Any] = {"state": state}
        if reason is not None:
            body["reason"] = reason
        return self.line("state", **body)

    def connected(self) -> str:
        return self.state("connected")

    def up(self) -> str:
        return self.state("up")

    def down(self, reason: str = "") -> str:
        """E.g. ``"closing connection"``, ``"notification sent (6,6)"``, ``"notification received (6,2) ..."``."""
        return self.state("down", reason)

    # -- messages (api receive { parsed; update; open; }) ---------------------------------------------
    def open(self, capabilities: Mapping[str, Any] | None = None, *, hold_time: int = 90,
             router_id: str | None = None, asn: int | None = None, direction: str = "receive") -> str:
        """The OPEN the peer sent (``direction="send"``: ours). ``capabilities`` default to what an l3net
        peer offers: multiprotocol ipv4/unicast, route refresh, graceful restart 120 s, asn4."""
        sender_as = asn if asn is not None else (self.peer_as if direction == "receive" else self.local_as)
        rid = router_id or (self.peer if direction == "receive" else (self.router_id or self.local))
        caps = capabilities if capabilities is not None else {
            **multiprotocol("ipv4/unicast"), **route_refresh(), **graceful_restart(), **asn4(sender_as)}
        return self.line("open", direction=direction, open={
            "version": 4, "asn": sender_as if sender_as < 65536 else AS_TRANS, "hold_time": hold_time,
            "router_id": rid, "capabilities": dict(caps)})

    def update(self, announce: Mapping[str, Iterable[str]] | None = None, withdraw: Iterable[str] = (),
               attribute: Mapping[str, Any] | None = None, direction: str = "receive") -> str:
        """An UPDATE: ``announce`` maps a next hop to its prefixes, grouped per family as ExaBGP prints them.

        ``attribute`` is printed as given (:func:`attributes`, or a deliberately odd shape); a withdraw-only
        UPDATE carries none. Keys appear only when there is something in them, as in ExaBGP's output.
        """
        plus: dict[str, dict[str, list[object]]] = {}
        for next_hop, prefixes in (announce or {}).items():
            for p in prefixes:
                plus.setdefault(_family(p), {}).setdefault(next_hop, []).append(_nlri(p, self.compact))
        minus: dict[str, list[object]] = {}
        for p in withdraw:
            minus.setdefault(_family(p), []).append(_nlri(p, self.compact))
        body: dict[str, Any] = {}
        if attribute:
            body["attribute"] = dict(attribute)
        if plus:
            body["announce"] = plus
        if minus:
            body["withdraw"] = minus
        return self.line("update", direction=direction, message={"update": body})

    def announce(self, *prefixes: str, next_hop: str | None = None, **attrs: Any) -> str:
        """``prefixes`` via ``next_hop`` (default: the peer) with :func:`attributes` ``attrs``; without any,
        what a plain peer sends: origin igp plus local-preference 100 (iBGP) or its own AS as the path (eBGP)."""
        if not attrs:
            attrs = {"local_pref": 100} if self.ibgp else {"as_path": (self.peer_as,)}
        return self.update({next_hop or self.peer: prefixes}, attribute=attributes(**attrs))

    def withdraw(self, *prefixes: str) -> str:
        return self.update(withdraw=prefixes)

    def eor(self, afi: str = "ipv4", safi: str = "unicast", direction: str = "receive") -> str:
        """End-of-RIB for one family: an UPDATE whose message is ``eor`` alone."""
        return self.line("update", direction=direction, message={"eor": {"afi": afi, "safi": safi}})

    def notification(self, code: int, subcode: int, data: bytes = b"", direction: str = "receive") -> str:
        """A NOTIFICATION (printed when the api asks for it; l3net learns of it from the ``down`` that follows).

        ``data`` as ExaBGP reports it: for a cease with an RFC 8203 shutdown communication that is its text,
        ``b'Shutdown Communication: "..."'``, not the length-prefixed wire bytes.
        """
        return self.line("notification", direction=direction, notification={
            "code": code, "subcode": subcode, "data": "0x" + data.hex().upper(),
            "message": data.decode("utf-8", "replace")})

    def keepalive(self, direction: str = "receive") -> str:
        return self.line("keepalive", direction=direction)

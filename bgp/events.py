"""bgp.events: ExaBGP's API output (JSON lines, acks) parsed into typed events.

``parse_line`` never raises: a malformed or unexpected line is logged (with a
truncated copy) and yields None. Shapes handled (ExaBGP 5.0, testbed-facts §3):

- ``type: state`` with ``state`` connected | up | down (+ ``reason``);
- ``type: update`` with ``message.update`` (announce/withdraw per family);
- ``type: update`` with ``message.eor`` and *no* ``message.update`` (End-of-RIB);
- ``type: open`` with ``direction: receive`` (the peer's OPEN; its graceful-restart
  capability decides whether we retain its routes when the session drops);
- the plain text acks ``done`` / ``error``.

AS paths come as a list of ints or, in some 5.x outputs, as a string
``"[ 65001 65002 ]"``; both are accepted.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from bgp.attrs import PathAttrs

_log = logging.getLogger(__name__)

ORIGINS = ("igp", "egp", "incomplete")


@dataclass(frozen=True)
class Announce:
    prefix: str
    next_hop: str
    attrs: PathAttrs


@dataclass(frozen=True)
class StateEvent:
    peer: str
    local: str | None
    state: str            # connected | up | down
    reason: str = ""
    peer_as: int | None = None
    local_as: int | None = None


@dataclass(frozen=True)
class UpdateEvent:
    peer: str
    local: str | None
    announces: tuple[Announce, ...] = ()
    withdraws: tuple[str, ...] = ()
    peer_as: int | None = None
    local_as: int | None = None


@dataclass(frozen=True)
class EorEvent:
    peer: str
    afi: str
    safi: str


@dataclass(frozen=True)
class GracefulRestartCap:
    """The RFC 4724 capability a peer sent in its OPEN.

    ``restart_state`` is the R bit (the peer has restarted and will send End-of-RIB);
    ``families`` are the AFI/SAFIs listed (``"ipv4 unicast"``) and ``forwarding`` the
    ones with the F bit (forwarding state preserved across the restart).
    """

    time: int
    restart_state: bool = False
    families: frozenset[str] = frozenset()
    forwarding: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OpenEvent:
    """A peer's OPEN as received (only the parts l3net uses)."""

    peer: str
    router_id: str | None
    hold_time: int | None
    graceful_restart: GracefulRestartCap | None


@dataclass(frozen=True)
class AckEvent:
    ok: bool


@dataclass(frozen=True)
class TextEvent:
    """A non-JSON reply line (e.g. the output of ``show neighbor``), kept for whoever asked."""

    text: str = field(default="")


Event = StateEvent | UpdateEvent | EorEvent | OpenEvent | AckEvent | TextEvent

_MAX_LOGGED = 200


def _skip(reason: str, line: str) -> None:
    _log.warning("skipping ExaBGP line reason=%s line=%r", reason, line[:_MAX_LOGGED])


def _ip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _prefix(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("nlri")
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _as_path(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = value.replace("[", " ").replace("]", " ").replace("(", " ").replace(")", " ").split()
    if isinstance(value, dict):  # {"0": {"element": "as-sequence", "value": [..]}} style
        out: list[int] = []
        for seg in value.values():
            if isinstance(seg, dict):
                out.extend(_as_path(seg.get("value")))
        return tuple(out)
    if not isinstance(value, list):
        return ()
    out = []
    for v in value:
        if isinstance(v, list):  # an AS_SET counts as one hop
            if v:
                n = _int(v[0])
                if n is not None:
                    out.append(n)
            continue
        n = _int(v)
        if n is not None:
            out.append(n)
    return tuple(out)


def _communities(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for c in value:
        if isinstance(c, list) and c and all(_int(x) is not None for x in c):
            out.append(":".join(str(int(x)) for x in c))
        elif isinstance(c, str):
            out.append(c)
    return tuple(out)


def parse_attrs(attr: Any) -> PathAttrs:
    """ExaBGP's ``attribute`` object -> PathAttrs (unknown or malformed fields ignored)."""
    if not isinstance(attr, dict):
        return PathAttrs()
    origin = attr.get("origin")
    cl = attr.get("cluster-list")
    return PathAttrs(
        origin=origin if origin in ORIGINS else "igp",
        as_path=_as_path(attr.get("as-path")),
        med=_int(attr.get("med")),
        local_pref=_int(attr.get("local-preference")),
        communities=_communities(attr.get("community")),
        large_communities=_communities(attr.get("large-community")),
        originator_id=_ip(attr.get("originator-id")),
        cluster_list=tuple(x for x in (_ip(c) for c in cl) if x) if isinstance(cl, list) else (),
    )


def _neighbor(obj: dict[str, Any]) -> tuple[str, str | None, int | None, int | None] | None:
    n = obj.get("neighbor")
    if not isinstance(n, dict):
        return None
    addr = n.get("address")
    if not isinstance(addr, dict):
        return None
    peer = _ip(addr.get("peer"))
    if peer is None:
        return None
    asn = n.get("asn") if isinstance(n.get("asn"), dict) else {}
    return peer, _ip(addr.get("local")), _int(asn.get("peer")), _int(asn.get("local"))


def _announces(ann: Any, attrs: PathAttrs) -> list[Announce]:
    """``{"ipv4 unicast": {next hop: [{"nlri": prefix}, …]}}`` -> announcements (others skipped)."""
    out: list[Announce] = []
    if not isinstance(ann, dict):
        return out
    for family, by_nh in ann.items():
        if not isinstance(family, str) or not family.endswith(" unicast") or not isinstance(by_nh, dict):
            continue
        for nh, nlris in by_nh.items():
            nh_ip = _ip(nh)
            if nh_ip is None or not isinstance(nlris, list):
                continue
            out.extend(Announce(pfx, nh_ip, attrs) for item in nlris if (pfx := _prefix(item)) is not None)
    return out


def _withdraws(wd: Any) -> list[str]:
    """``{"ipv4 unicast": [{"nlri": prefix}, …]}`` -> withdrawn prefixes (others skipped)."""
    out: list[str] = []
    if not isinstance(wd, dict):
        return out
    for family, nlris in wd.items():
        if isinstance(family, str) and family.endswith(" unicast") and isinstance(nlris, list):
            out.extend(pfx for item in nlris if (pfx := _prefix(item)) is not None)
    return out


def _parse_update(line: str, obj: dict[str, Any]) -> UpdateEvent | EorEvent | None:
    nb = _neighbor(obj)
    if nb is None:
        _skip("update without neighbor address", line)
        return None
    peer, local, peer_as, local_as = nb
    message = obj["neighbor"].get("message")
    if not isinstance(message, dict):
        _skip("update without message", line)
        return None
    if "eor" in message and "update" not in message:
        eor = message["eor"] if isinstance(message["eor"], dict) else {}
        return EorEvent(peer, str(eor.get("afi", "")), str(eor.get("safi", "")))
    update = message.get("update")
    if not isinstance(update, dict):
        _skip("update message without update body", line)
        return None
    attrs = parse_attrs(update.get("attribute"))
    announces = _announces(update.get("announce"), attrs)
    withdraws = _withdraws(update.get("withdraw"))
    return UpdateEvent(peer, local, tuple(announces), tuple(withdraws), peer_as, local_as)


def _family(value: Any) -> str | None:
    """``"ipv4/unicast"`` -> ``"ipv4 unicast"``."""
    if not isinstance(value, str) or "/" not in value:
        return None
    afi, _, safi = value.partition("/")
    return f"{afi} {safi}" if afi and safi else None


def parse_graceful_restart(caps: Any) -> GracefulRestartCap | None:
    """The graceful-restart capability (code 64) of an OPEN's ``capabilities`` object, if any.

    ExaBGP 5.0's JSON names the two flags the wrong way round: the R bit shows as
    ``"restart-flags": ["forwarding"]`` and a family's F bit as ``["restart"]``. We read
    "list not empty" so a fixed encoder reads the same.
    """
    if not isinstance(caps, dict):
        return None
    cap = caps.get("64")
    if not isinstance(cap, dict):
        cap = next((c for c in caps.values() if isinstance(c, dict) and c.get("name") == "graceful restart"), None)
    if not isinstance(cap, dict):
        return None
    time_ = _int(cap.get("time"))
    if time_ is None:
        return None
    flags = cap.get("restart-flags")
    fams = cap.get("address-family-flags")
    families: set[str] = set()
    forwarding: set[str] = set()
    if isinstance(fams, dict):
        for name, fflags in fams.items():
            fam = _family(name)
            if fam is None:
                continue
            families.add(fam)
            if isinstance(fflags, list) and fflags:
                forwarding.add(fam)
    return GracefulRestartCap(time_, bool(isinstance(flags, list) and flags), frozenset(families),
                              frozenset(forwarding))


def _parse_open(line: str, obj: dict[str, Any]) -> OpenEvent | None:
    nb = _neighbor(obj)
    if nb is None:
        _skip("open without neighbor address", line)
        return None
    n = obj["neighbor"]
    if n.get("direction") != "receive":
        return None
    body = n.get("open")
    if not isinstance(body, dict):
        _skip("open without body", line)
        return None
    return OpenEvent(nb[0], _ip(body.get("router_id")), _int(body.get("hold_time")),
                     parse_graceful_restart(body.get("capabilities")))


def parse_line(line: str | bytes) -> Event | None:
    """One line from ExaBGP -> an event, or None (logged) when it is not one we use."""
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        text = line.strip()
        if not text:
            return None
        if text == "done":
            return AckEvent(True)
        if text == "error":
            return AckEvent(False)
        if not text.startswith(("{", "[")):
            return TextEvent(text)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            _skip("not JSON", text)
            return None
        if not isinstance(obj, dict):
            _skip("JSON is not an object", text)
            return None
        kind = obj.get("type")
        if kind == "state":
            nb = _neighbor(obj)
            state = obj["neighbor"].get("state") if nb else None
            if nb is None or state not in ("connected", "up", "down"):
                _skip("state without neighbor or with unknown state", text)
                return None
            reason = obj["neighbor"].get("reason")
            return StateEvent(nb[0], nb[1], state, reason if isinstance(reason, str) else "", nb[2], nb[3])
        if kind == "update":
            return _parse_update(text, obj)
        if kind == "open":
            return _parse_open(text, obj)
        if kind in ("notification", "keepalive", "refresh", "operational", "signal", "negotiated"):
            _log.debug("ignoring ExaBGP message type=%s", kind)
            return None
        _skip(f"unexpected type {kind!r}", text)
        return None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # defensive: never let a peer's bytes crash us
        _skip(f"{type(exc).__name__}: {exc}", str(line))
        return None

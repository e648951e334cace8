"""bgp.peer_checks: every reason a BGPPeer cannot be right, and its password as the agent reads it.

Pure: ``check_bgp_peer`` names each refused field (the view refuses the peer as a whole,
and validation at the edge reports the same reasons); ``password_problem`` and
``resolve_password`` check and read a ``password``/``nodeMeshPassword`` value without
ever quoting it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bgp.secrets import SecretReader
from bgp.selectors import selector_error
from l3net.errors import FieldError
from l3net.model.validate.bgp import MAX_PASSWORD_BYTES
from l3net.model.values import (
    hold_time,
    keepalive_reason,
    parse_asn,
    parse_duration,
    parse_peer_ip,
    restart_time,
)


def password_problem(pw: Any) -> str:
    """Why a ``password``/``nodeMeshPassword`` value cannot be used ("" when fine); never quotes the value."""
    if pw is None:
        return ""
    if not isinstance(pw, Mapping):
        return "must be {value: ...} or {secretKeyRef: {name, key}}"
    if ("value" in pw) == ("secretKeyRef" in pw):
        return "set exactly one of value and secretKeyRef"
    if "value" in pw:
        v = pw["value"]
        if not isinstance(v, str):
            return "value must be a string"
        try:
            size = len(v.encode("utf-8"))
        except UnicodeEncodeError:
            return "value is not valid UTF-8 (not shown)"
        if not 1 <= size <= MAX_PASSWORD_BYTES:
            return f"value must be 1..{MAX_PASSWORD_BYTES} bytes of UTF-8, not {size} (not shown)"
        return ""
    ref = pw["secretKeyRef"]
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not isinstance(ref.get("key"), str):
        return "secretKeyRef needs string name and key"
    return ""


def resolve_password(pw: Any, secrets: SecretReader | None) -> str | None:
    """The password text of a checked ``password`` value; ValueError (without the value) when unavailable."""
    if not pw:
        return None
    if "value" in pw:
        return str(pw["value"])
    if secrets is None:
        raise ValueError("secretKeyRef given but no secrets directory is configured (bgp_secrets_dir)")
    return secrets.read(pw["secretKeyRef"]["name"], pw["secretKeyRef"]["key"])

# The BGPPeer fields written as text, and their parser (a value it refuses is refused at its path).
_PEER_VALUES: tuple[tuple[str, Callable[[Any], object]], ...] = (
    ("asNumber", parse_asn), ("holdTime", hold_time), ("keepaliveTime", parse_duration),
    ("maxRestartTime", restart_time))


def check_bgp_peer(spec: Mapping[str, Any], document: str = "") -> list[FieldError]:
    """Every reason a BGPPeer spec cannot be right (empty when it is fine)."""
    if not isinstance(spec, Mapping):
        return [FieldError(path="spec", reason="must be a mapping", document=document)]
    found = [*_peer_identity_problems(spec), *_peer_value_problems(spec), *_peer_shape_problems(spec)]
    return [FieldError(path=f"spec.{path}", reason=reason, document=document) for path, reason in found]


def _peer_identity_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Whom the peering is with: peerIP or peerSelector, node or nodeSelector, the selectors' grammar."""
    out: list[tuple[str, str]] = []
    has_ip, has_sel = bool(spec.get("peerIP")), bool(spec.get("peerSelector"))
    if has_ip == has_sel:
        out.append(("peerIP", "exactly one of peerIP and peerSelector must be set"))
    if has_ip:
        try:
            parse_peer_ip(spec["peerIP"])
        except ValueError as exc:
            out.append(("peerIP", str(exc)))
        if spec.get("asNumber") in (None, ""):
            out.append(("asNumber", "required with peerIP"))
    if spec.get("node") and spec.get("nodeSelector"):
        out.append(("node", "node and nodeSelector are mutually exclusive"))
    for key in ("nodeSelector", "peerSelector"):
        reason = selector_error(spec[key]) if spec.get(key) else None
        if reason:
            out.append((key, f"invalid selector: {reason}"))
    return out


def _peer_value_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The grammars and ranges of l3net.model.values, which l3netctl's validation calls too."""
    out: list[tuple[str, str]] = []
    for key, parse in _PEER_VALUES:
        if spec.get(key) is not None:
            try:
                parse(spec[key])
            except ValueError as exc:
                out.append((key, str(exc)))
    if spec.get("holdTime") is not None and spec.get("keepaliveTime") is not None:
        reason = keepalive_reason(spec["keepaliveTime"], spec["holdTime"])
        if reason:
            out.append(("keepaliveTime", reason))
    reason = password_problem(spec.get("password"))
    if reason:
        out.append(("password", reason))
    return out


def _peer_shape_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Integers, lists and enumerations of the remaining fields."""
    out: list[tuple[str, str]] = []
    for key, lo in (("ebgpMultihop", 1), ("maxPrefixes", 1)):
        v = spec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            out.append((key, f"must be an integer >= {lo}"))
    filters = spec.get("filters")
    if filters is not None and (not isinstance(filters, list) or not all(isinstance(f, str) and f for f in filters)):
        out.append(("filters", "must be a list of BGPFilter names"))
    if spec.get("sourceAddress") not in (None, "UseNodeIP", "None"):
        out.append(("sourceAddress", "must be UseNodeIP or None"))
    ttl = spec.get("ttlSecurity")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255):
        out.append(("ttlSecurity", "must be an integer 0..255"))
    return out

"""l3net.model.validation: one document in, one validated :class:`Resource` out.

Every check reports a :class:`FieldError` with the document name (``file#2
NetworkPolicy/default/allow-web``), the full field path
(``spec.ingress[0].from[0].ipBlock.cidr``) and the reason; all errors of a
document are collected before :class:`ValidationError` is raised. Unknown
fields are errors everywhere: a typo must never silently widen or narrow a
policy. Nothing here raises anything but ValidationError, whatever the input.

Normalisation (so consumers read one shape): AS numbers in AS-dot form
(``"1.10"``) become integers; Calico protocol names are canonicalised
(``tcp`` -> ``TCP``); IPPool gets Calico's defaults (``blockSize`` 26/122,
``nodeSelector: all()``); NetworkPolicy ``policyTypes`` and
GlobalNetworkPolicy ``types`` get the Kubernetes/Calico defaults (Ingress, plus
Egress when egress rules are present); namespaced kinds default to namespace
``default``.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from l3net.constants import DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6
from l3net.errors import FieldError, ValidationError
from l3net.model import calico_selector
from l3net.model.resource import KINDS, Resource

_log = logging.getLogger(__name__)

__all__ = ["DEFAULT_NAMESPACE", "document_name", "format_path", "parse_duration", "parse_peer_ip",
           "pools_overlap", "resource_from_document", "workload_endpoint_name"]

DEFAULT_NAMESPACE = "default"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A check takes the checker, the raw value and its path; it returns the value to
# store, or _BAD after reporting an error (so cross-field checks skip it).
Check = Callable[["_Checker", Any, str], Any]


class _Bad:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD: Any = _Bad()

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[^\s/:]{1,15}")
_CALICO_PORT_RANGE = re.compile(r"(\d{1,5}):(\d{1,5})")
_ASDOT = re.compile(r"(\d{1,5})\.(\d{1,5})")
_COMMUNITY = re.compile(r"(\d{1,10}):(\d{1,10})(?::(\d{1,10}))?")

_K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")
_CALICO_PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP", "UDPLite")
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_MAX_ASN = 4294967295


# -- plumbing -----------------------------------------------------------------
class _Checker:
    """Collects the errors of one document."""

    def __init__(self, document: str):
        self.document = document
        self.errors: list[FieldError] = []

    def error(self, path: str, reason: str) -> Any:
        self.errors.append(FieldError(path=path, reason=reason, document=self.document))
        return _BAD


_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: str, key: object) -> str:
    """``spec`` + ``cidr`` -> ``spec.cidr``; odd keys are quoted: ``metadata.labels["app/x"]``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if isinstance(key, str) and _SIMPLE_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    text = key if isinstance(key, str) else repr(key)
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{text}"]'


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Post = Callable[[_Checker, dict[str, Any], dict[str, Any], str], None]


def obj(fields: dict[str, Check], required: tuple[str, ...] = (), post: Post | None = None) -> Check:
    """An object with exactly these fields; ``null`` values count as absent.

    ``post(checker, raw, out, path)`` runs cross-field checks on the result.
    """

    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return c.error(path, f"must be an object, not {_typename(value)}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            p = format_path(path, key)
            if not isinstance(key, str) or key not in fields:
                hint = ""
                if isinstance(key, str):
                    close = difflib.get_close_matches(key, list(fields), n=1)
                    if close:
                        hint = f" (did you mean {close[0]!r}?)"
                known = ", ".join(sorted(fields)) or "none"
                c.error(p, f"unknown field{hint}; known fields here: {known}")
                continue
            if item is None:
                continue
            result = fields[key](c, item, p)
            if result is not _BAD:
                out[key] = result
        for key in required:
            if value.get(key) is None:
                c.error(format_path(path, key), "required field is missing")
        if post is not None:
            post(c, value, out, path)
        return out

    return check


def listof(item: Check, min_items: int = 0, unique: bool = False) -> Check:
    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            return c.error(path, f"must be a list, not {_typename(value)}")
        if len(value) < min_items:
            return c.error(path, f"needs at least {min_items} item{'s' if min_items > 1 else ''}")
        out = []
        seen: set[Any] = set()
        bad = False
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            r = item(c, v, p)
            if r is _BAD:
                bad = True
                continue
            if unique and isinstance(r, str | int):
                if r in seen:
                    c.error(p, f"duplicate value {_short(r)}")
                    bad = True
                seen.add(r)
            out.append(r)
        return _BAD if bad else out

    return check


def string(max_len: int | None = None, non_empty: bool = False) -> Check:
    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a string, not {_typename(value)}")
        if non_empty and not value:
            return c.error(path, "must not be empty")
        if max_len is not None and len(value) > max_len:
            return c.error(path, f"must be at most {max_len} characters, not {len(value)}")
        return value

    return check


def boolean(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        return c.error(path, f"must be true or false, not {_typename(value)} {_short(value)}")
    return value


def integer(lo: int, hi: int, what: str = "") -> Check:
    def check(c: _Checker, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return c.error(path, f"must be an integer{what}, not {_typename(value)} {_short(value)}")
        if not lo <= value <= hi:
            return c.error(path, f"{value} is out of range {lo}..{hi}{what}")
        return value

    return check


def enum(*values: str, fold_case: bool = False) -> Check:
    folded = {v.lower(): v for v in values}

    def check(c: _Checker, value: Any, path: str) -> Any:
        if isinstance(value, str):
            if value in values:
                return value
            if fold_case and value.lower() in folded:
                return folded[value.lower()]
        return c.error(path, f"must be one of {', '.join(values)}, not {_short(value)}")

    return check


def number(c: _Checker, value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return c.error(path, f"must be a number, not {_typename(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        return c.error(path, "must be a finite number")
    return value


# -- names and labels ---------------------------------------------------------
def _dns_reason(value: str, label: bool) -> str | None:
    limit = 63 if label else 253
    rx = _DNS_LABEL if label else _DNS_SUBDOMAIN
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if not rx.fullmatch(value):
        kind = "DNS-1123 label" if label else "DNS-1123 subdomain"
        allowed = "lowercase letters, digits and '-'" if label else "lowercase letters, digits, '-' and '.'"
        return (f"{value!r} is not a valid {kind}: use {allowed}, starting and ending with a letter or digit")
    return None


def dns_name(label: bool = False) -> Check:
    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a string, not {_typename(value)}")
        reason = _dns_reason(value, label)
        return c.error(path, reason) if reason else value

    return check


def _label_key_reason(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"label key {key!r} has an empty prefix before '/'"
        reason = _dns_reason(prefix, label=False)
        if reason:
            return f"label key prefix: {reason}"
    if not name:
        return f"label key {key!r} has an empty name"
    if len(name) > 63:
        return f"label key name {name!r} is longer than 63 characters"
    if not _LABEL_NAME.fullmatch(name):
        return (f"label key {key!r} is invalid: the name must be alphanumeric, '-', '_' or '.', "
                "starting and ending with a letter or digit (optional DNS prefix and '/')")
    return None


def _label_value_reason(value: str) -> str | None:
    if len(value) > 63:
        return f"label value {value[:20]!r}... is longer than 63 characters"
    if value and not _LABEL_NAME.fullmatch(value):
        return (f"label value {value!r} is invalid: alphanumeric, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def label_key(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {_typename(value)}")
    reason = _label_key_reason(value)
    return c.error(path, reason) if reason else value


def label_value(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"label value must be a string, not {_typename(value)} (quote it)")
    reason = _label_value_reason(value)
    return c.error(path, reason) if reason else value


def label_map(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        return c.error(path, f"must be an object of label key: value, not {_typename(value)}")
    out: dict[str, str] = {}
    bad = False
    for k, v in value.items():
        p = format_path(path, k)
        if not isinstance(k, str):
            bad = True
            c.error(p, f"label key must be a string, not {_typename(k)}")
            continue
        reason = _label_key_reason(k)
        if reason:
            bad = True
            c.error(p, reason)
        if label_value(c, v, p) is _BAD:
            bad = True
        out[k] = v
    return _BAD if bad else out


def annotation_map(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        return c.error(path, f"must be an object of key: value, not {_typename(value)}")
    bad = False
    for k, v in value.items():
        p = format_path(path, k)
        if not isinstance(k, str):
            bad = True
            c.error(p, f"annotation key must be a string, not {_typename(k)}")
            continue
        reason = _label_key_reason(k)
        if reason:
            bad = True
            c.error(p, reason.replace("label", "annotation"))
        if not isinstance(v, str):
            bad = True
            c.error(p, f"annotation value must be a string, not {_typename(v)}")
    return _BAD if bad else dict(value)


def iana_port_name(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {_typename(value)}")
    if (len(value) > 15 or not _IANA_SVC.fullmatch(value) or "--" in value
            or not any(ch.isalpha() for ch in value)):
        return c.error(path, f"{value!r} is not an IANA service name: at most 15 lowercase letters, digits and "
                             "'-', at least one letter, no leading, trailing or double '-'")
    return value


# -- addresses ------------------------------------------------------------------
def _parse_cidr(value: str) -> tuple[IPNetwork | None, str]:
    if "/" not in value:
        return None, f"{value!r} is not a CIDR (expected address/prefix-length, e.g. 10.0.0.0/16)"
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        return None, f"{value!r} is not a valid CIDR: {exc}"
    if net.network_address != ipaddress.ip_interface(value).ip:
        return None, f"{value!r} has host bits set (did you mean {net}?)"
    return net, ""


def cidr(c: _Checker, value: Any, path: str) -> Any:
    """A network in CIDR notation with no host bits set; stored as written."""
    if not isinstance(value, str):
        return c.error(path, f"must be a CIDR string, not {_typename(value)}")
    net, reason = _parse_cidr(value)
    return value if net else c.error(path, reason)


def ip_address(version: int | None = None) -> Check:
    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be an IP address string, not {_typename(value)}")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return c.error(path, f"{value!r} is not a valid IP address")
        if version and addr.version != version:
            return c.error(path, f"{value!r} is not an IPv{version} address")
        return value

    return check


def interface_address(version: int) -> Check:
    """``10.0.0.11/24`` or ``10.0.0.11`` (a node's address; host bits are the point)."""

    def check(c: _Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be an IP address string, not {_typename(value)}")
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            return c.error(path, f"{value!r} is not a valid IPv{version} address (optionally with /prefix)")
        if iface.version != version:
            return c.error(path, f"{value!r} is not an IPv{version} address")
        return value

    return check


def parse_peer_ip(value: str) -> tuple[str, int | None]:
    """``10.0.0.1`` / ``10.0.0.1:180`` / ``[2001:db8::1]:180`` / ``2001:db8::1`` -> (ip, port|None).

    Raises ValueError with the reason.
    """
    port: int | None = None
    host = value
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not ip, ip:port or [ipv6]:port")
        if rest:
            port = _peer_port(rest[1:], value)
        addr = ipaddress.ip_address(host)
        if addr.version != 6:
            raise ValueError(f"{value!r}: brackets are only for IPv6 addresses")
        return str(addr), port
    if value.count(":") == 1:
        host, _, p = value.partition(":")
        port = _peer_port(p, value)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (expected ip, ip:port or [ipv6]:port)") from None
    return str(addr), port


def _peer_port(text: str, whole: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r} has an invalid port {text!r} (must be 1..65535)")
    return int(text)


def peer_ip(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be an IP address string, not {_typename(value)}")
    try:
        parse_peer_ip(value)
    except ValueError as exc:
        return c.error(path, str(exc))
    return value


def pools_overlap(a: str, b: str) -> bool:
    """True when two CIDR strings share any address (different families never do)."""
    na, nb = ipaddress.ip_network(a, strict=False), ipaddress.ip_network(b, strict=False)
    return na.version == nb.version and na.overlaps(nb)  # type: ignore[arg-type]


# -- BGP values -------------------------------------------------------------------
def asn(c: _Checker, value: Any, path: str) -> Any:
    """An AS number 1..4294967295: an integer, or AS-dot ``"high.low"`` (normalised to the integer)."""
    if isinstance(value, str):
        m = _ASDOT.fullmatch(value)
        if not m:
            return c.error(path, f"AS number must be an integer 1..{_MAX_ASN} (or AS-dot \"high.low\"), "
                                 f"not the string {_short(value)}")
        high, low = int(m.group(1)), int(m.group(2))
        if high > 65535 or low > 65535 or (high == 0 and low == 0):
            return c.error(path, f"AS-dot number {value!r} is out of range (each part 0..65535, not 0.0)")
        return high * 65536 + low
    if isinstance(value, bool) or not isinstance(value, int):
        return c.error(path, f"AS number must be an integer 1..{_MAX_ASN}, not {_typename(value)}")
    if not 1 <= value <= _MAX_ASN:
        return c.error(path, f"AS number {value} is out of range 1..{_MAX_ASN}")
    return value


def parse_duration(value: str) -> float:
    """Go-style duration (``"3s"``, ``"1m30s"``, ``"250ms"``, ``"0"``) -> seconds. ValueError if malformed."""
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    if not value:
        raise ValueError("empty duration")
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if not m:
            raise ValueError(f"{value!r} is not a duration (e.g. \"3s\", \"90s\", \"1m30s\", \"500ms\")")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def duration(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be a duration string like \"3s\", not {_typename(value)} {_short(value)}")
    try:
        parse_duration(value)
    except ValueError as exc:
        return c.error(path, str(exc))
    return value


def community_value(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {_typename(value)}")
    m = _COMMUNITY.fullmatch(value)
    if m:
        parts = [int(g) for g in m.groups() if g is not None]
        limit = 65535 if len(parts) == 2 else _MAX_ASN
        if all(p <= limit for p in parts):
            return value
    return c.error(path, f"{value!r} is not a BGP community (\"aa:nn\" with 16-bit parts or large "
                         "\"aa:nn:mm\" with 32-bit parts)")


def calico_selector_check(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return c.error(path, f"must be a selector string, not {_typename(value)}")
    try:
        calico_selector.parse(value)
    except calico_selector.SelectorError as exc:
        return c.error(path, f"invalid selector {_short(value)}: {exc}")
    return value


# -- Kubernetes LabelSelector ----------------------------------------------------
def _match_expression_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    op = out.get("operator")
    values = raw.get("values")
    if op in ("In", "NotIn") and not values:
        c.error(format_path(path, "values"), f"operator {op} needs a non-empty list of values")
    if op in ("Exists", "DoesNotExist") and values:
        c.error(format_path(path, "values"), f"operator {op} takes no values")


_MATCH_EXPRESSION = obj({
    "key": label_key,
    "operator": enum("In", "NotIn", "Exists", "DoesNotExist"),
    "values": listof(label_value),
}, required=("key", "operator"), post=_match_expression_post)

LABEL_SELECTOR = obj({"matchLabels": label_map, "matchExpressions": listof(_MATCH_EXPRESSION)})


# -- Kubernetes NetworkPolicy ----------------------------------------------------
def _ip_block_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "cidr" not in out:
        return
    outer = ipaddress.ip_network(out["cidr"])
    raw_except = raw.get("except")
    if not isinstance(raw_except, list):
        return
    for i, item in enumerate(raw_except):
        if not isinstance(item, str):
            continue
        inner, _ = _parse_cidr(item)
        if inner is None:
            continue
        p = f"{path}.except[{i}]"
        if inner.version != outer.version:
            c.error(p, f"{item} is IPv{inner.version} but cidr {out['cidr']} is IPv{outer.version}")
        elif not inner.subnet_of(outer) or inner == outer:  # type: ignore[arg-type]
            c.error(p, f"{item} is not strictly inside cidr {out['cidr']}")


_IP_BLOCK = obj({"cidr": cidr, "except": listof(cidr)}, required=("cidr",), post=_ip_block_post)


def _peer_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if raw.get(k) is not None]
    if not present and all(k in ("podSelector", "namespaceSelector", "ipBlock") for k in raw):
        c.error(path, "empty peer: set podSelector, namespaceSelector or ipBlock "
                      "(to match everything, omit the 'from'/'to' list instead)")
    if "ipBlock" in present and len(present) > 1:
        c.error(path, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer")


_PEER = obj({"podSelector": LABEL_SELECTOR, "namespaceSelector": LABEL_SELECTOR, "ipBlock": _IP_BLOCK},
            post=_peer_post)


def k8s_port(c: _Checker, value: Any, path: str) -> Any:
    """IntOrString: a number 1..65535 or an IANA service name (a named container port)."""
    if isinstance(value, str):
        return iana_port_name(c, value, path)
    return integer(1, 65535)(c, value, path)


def _np_port_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "endPort" not in raw or "endPort" not in out:
        return
    p = format_path(path, "endPort")
    port = raw.get("port")
    if port is None:
        c.error(p, "endPort needs a numeric port")
    elif isinstance(port, str):
        c.error(p, "endPort cannot be used with a named port")
    elif "port" in out and out["endPort"] < out["port"]:
        c.error(p, f"endPort {out['endPort']} is smaller than port {out['port']}")


_NP_PORT = obj({
    "protocol": enum(*_K8S_PROTOCOLS),
    "port": k8s_port,
    "endPort": integer(1, 65535),
}, post=_np_port_post)

_POLICY_TYPES = listof(enum("Ingress", "Egress"), unique=True)


def _np_spec_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    out.setdefault("podSelector", {})
    if "policyTypes" not in raw or raw.get("policyTypes") is None:
        # The API server's default: Ingress always, Egress when egress rules exist.
        out["policyTypes"] = ["Ingress", "Egress"] if raw.get("egress") else ["Ingress"]


NETWORK_POLICY_SPEC = obj({
    "podSelector": LABEL_SELECTOR,
    "ingress": listof(obj({"from": listof(_PEER), "ports": listof(_NP_PORT)})),
    "egress": listof(obj({"to": listof(_PEER), "ports": listof(_NP_PORT)})),
    "policyTypes": _POLICY_TYPES,
}, post=_np_spec_post)


# -- Calico GlobalNetworkPolicy ---------------------------------------------------
def calico_protocol(c: _Checker, value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return integer(1, 255)(c, value, path)
    return enum(*_CALICO_PROTOCOLS, fold_case=True)(c, value, path)


def calico_port(c: _Checker, value: Any, path: str) -> Any:
    """Calico port: a number, a ``"lo:hi"`` range or a named port."""
    if isinstance(value, str):
        m = _CALICO_PORT_RANGE.fullmatch(value)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
                return c.error(path, f"port range {value!r} must be lo:hi with 1 <= lo <= hi <= 65535")
            return value
        if value.isascii() and value.isdigit():
            # a quoted number: accept it as the number Calico's numorstring would parse
            return integer(1, 65535)(c, int(value), path)
        return iana_port_name(c, value, path)
    return integer(1, 65535)(c, value, path)


_ENTITY = obj({
    "nets": listof(cidr),
    "notNets": listof(cidr),
    "selector": calico_selector_check,
    "notSelector": calico_selector_check,
    "namespaceSelector": calico_selector_check,
    "ports": listof(calico_port),
    "notPorts": listof(calico_port),
})


def _icmp_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("code") is not None and raw.get("type") is None:
        c.error(format_path(path, "code"), "icmp code needs an icmp type")


_ICMP = obj({"type": integer(0, 254), "code": integer(0, 255)}, post=_icmp_post)


def _rule_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    proto = out.get("protocol")
    for side in ("source", "destination"):
        entity = raw.get(side)
        if not isinstance(entity, dict):
            continue
        for field in ("ports", "notPorts"):
            if entity.get(field) and proto not in _PORT_PROTOCOLS:
                c.error(f"{path}.{side}.{field}", "ports need protocol TCP, UDP, SCTP or UDPLite on the rule")
    if raw.get("icmp") is not None and proto not in ("ICMP", "ICMPv6", 1, 58):
        c.error(format_path(path, "icmp"), "icmp needs protocol ICMP or ICMPv6 on the rule")


_RULE = obj({
    "action": enum("Allow", "Deny", "Log", "Pass"),
    "protocol": calico_protocol,
    "notProtocol": calico_protocol,
    "icmp": _ICMP,
    "source": _ENTITY,
    "destination": _ENTITY,
}, required=("action",), post=_rule_post)


def _gnp_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("types") is None:
        out["types"] = ["Ingress", "Egress"] if raw.get("egress") else ["Ingress"]
    if out.get("doNotTrack") and out.get("preDNAT"):
        c.error(format_path(path, "preDNAT"), "preDNAT and doNotTrack cannot both be true")
    for flag in ("doNotTrack", "preDNAT"):
        if out.get(flag) and not out.get("applyOnForward"):
            c.error(format_path(path, "applyOnForward"), f"must be true when {flag} is true")
    if out.get("preDNAT") and raw.get("egress"):
        c.error(format_path(path, "egress"), "preDNAT policies cannot have egress rules")


GLOBAL_NETWORK_POLICY_SPEC = obj({
    "order": number,
    "selector": calico_selector_check,
    "namespaceSelector": calico_selector_check,
    "types": _POLICY_TYPES,
    "ingress": listof(_RULE),
    "egress": listof(_RULE),
    "doNotTrack": boolean,
    "preDNAT": boolean,
    "applyOnForward": boolean,
}, post=_gnp_post)


# -- IPPool ------------------------------------------------------------------------
def _encap_never(c: _Checker, value: Any, path: str) -> Any:
    if value != "Never":
        return c.error(path, f"only Never is supported (l3net routes natively, without encapsulation), "
                             f"not {_short(value)}")
    return value


def _ippool_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "cidr" not in out:
        return
    net = ipaddress.ip_network(out["cidr"])
    p = format_path(path, "cidr")
    for reserved in _LINK_LOCAL:
        if net.version == reserved.version and net.overlaps(reserved):  # type: ignore[arg-type]
            c.error(p, f"{out['cidr']} overlaps the link-local range {reserved} (workload gateways live there)")
    if net.is_loopback or net.is_multicast:
        c.error(p, f"{out['cidr']} is a loopback or multicast range")
    lo, hi = (20, 32) if net.version == 4 else (116, 128)
    default = DEFAULT_BLOCK_SIZE_V4 if net.version == 4 else DEFAULT_BLOCK_SIZE_V6
    bp = format_path(path, "blockSize")
    block = raw.get("blockSize")
    if block is None:
        out["blockSize"] = block = max(default, net.prefixlen)
    elif "blockSize" not in out:
        return
    if not lo <= block <= hi:
        c.error(bp, f"{block} is outside {lo}..{hi} for an IPv{net.version} pool")
    elif block < net.prefixlen:
        c.error(bp, f"block /{block} is larger than the pool {out['cidr']}")
    out.setdefault("nodeSelector", "all()")


IPPOOL_SPEC = obj({
    "cidr": cidr,
    "blockSize": integer(0, 128),
    "disabled": boolean,
    "natOutgoing": boolean,
    "nodeSelector": calico_selector_check,
    "disableBGPExport": boolean,
    "ipipMode": _encap_never,
    "vxlanMode": _encap_never,
}, required=("cidr",), post=_ippool_post)


# -- Node, BGPConfiguration, BGPPeer -------------------------------------------------
NODE_SPEC = obj({
    "bgp": obj({
        "ipv4Address": interface_address(4),
        "ipv6Address": interface_address(6),
        "asNumber": asn,
        "routeReflectorClusterID": ip_address(4),
    }),
})

_SECRET_VALUE = obj({"value": string(max_len=80, non_empty=True)}, required=("value",))
_CIDR_ITEM = obj({"cidr": cidr}, required=("cidr",))


def _bgpconfig_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    names = set()
    for comm in out.get("communities", []) or []:
        if isinstance(comm, dict) and "name" in comm:
            names.add(comm["name"])
    for i, adv in enumerate(raw.get("prefixAdvertisements") or []):
        if not isinstance(adv, dict) or not isinstance(adv.get("communities"), list):
            continue
        for j, ref in enumerate(adv["communities"]):
            if isinstance(ref, str) and ref not in names and not _COMMUNITY.fullmatch(ref):
                c.error(f"{path}.prefixAdvertisements[{i}].communities[{j}]",
                        f"{ref!r} is neither a community defined in spec.communities nor a community value")
    _timers_post(c, out, path)


def _timers_post(c: _Checker, out: dict[str, Any], path: str) -> None:
    hold = out.get("holdTime")
    if hold is not None:
        secs = parse_duration(hold)
        if 0 < secs < 3:
            c.error(format_path(path, "holdTime"), f"{hold} is below BGP's minimum of 3s (or 0 to disable)")
        keep = out.get("keepaliveTime")
        if keep is not None and secs and parse_duration(keep) >= secs:
            c.error(format_path(path, "keepaliveTime"), f"{keep} must be shorter than holdTime {hold}")


BGP_CONFIGURATION_SPEC = obj({
    "nodeToNodeMeshEnabled": boolean,
    "asNumber": asn,
    "listenPort": integer(1, 65535),
    "logSeverityScreen": enum("Debug", "Info", "Warning", "Error", "Fatal"),
    "keepaliveTime": duration,
    "holdTime": duration,
    "gracefulRestart": boolean,
    "restartTime": duration,
    "nodeMeshPassword": _SECRET_VALUE,
    "communities": listof(obj({"name": dns_name(label=True), "value": community_value},
                              required=("name", "value"))),
    "prefixAdvertisements": listof(obj({"cidr": cidr, "communities": listof(string(non_empty=True))},
                                       required=("cidr",))),
    "serviceClusterIPs": listof(_CIDR_ITEM),
    "serviceExternalIPs": listof(_CIDR_ITEM),
    "serviceLoadBalancerIPs": listof(_CIDR_ITEM),
}, post=_bgpconfig_post)


def _bgppeer_post(c: _Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if raw.get("node") is not None and raw.get("nodeSelector") is not None:
        c.error(format_path(path, "nodeSelector"), "node and nodeSelector cannot both be set")
    has_ip, has_sel = raw.get("peerIP") is not None, raw.get("peerSelector") is not None
    if has_ip and has_sel:
        c.error(format_path(path, "peerSelector"), "peerIP and peerSelector cannot both be set")
    elif not has_ip and not has_sel:
        c.error(format_path(path, "peerIP"), "set peerIP (with asNumber) or peerSelector")
    elif has_ip and raw.get("asNumber") is None:
        c.error(format_path(path, "asNumber"), "required with peerIP")
    _timers_post(c, out, path)


BGP_PEER_SPEC = obj({
    "node": dns_name(),
    "nodeSelector": calico_selector_check,
    "peerIP": peer_ip,
    "peerSelector": calico_selector_check,
    "asNumber": asn,
    "keepaliveTime": duration,
    "holdTime": duration,
    "password": _SECRET_VALUE,
    "sourceAddress": enum("UseNodeIP", "None"),
    "keepOriginalNextHop": boolean,
    "maxRestartTime": duration,
    "ttlSecurity": integer(0, 255),
}, post=_bgppeer_post)


# -- WorkloadEndpoint -------------------------------------------------------------------
def workload_endpoint_name(node: str, pod: str, endpoint: str, orchestrator: str = "k8s") -> str:
    """Calico's WorkloadEndpoint name: ``<node>-k8s-<pod>-<endpoint>``, '-' doubled inside each part."""
    def esc(s: str) -> str:
        return s.replace("-", "--")
    return f"{esc(node)}-{esc(orchestrator)}-{esc(pod)}-{esc(endpoint)}"


def _ifname(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        return c.error(path, f"{_short(value)} is not a Linux interface name (1..15 characters, no '/', ':' "
                             "or whitespace)")
    return value


def _mac(c: _Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        return c.error(path, f"{_short(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return value.lower()


WORKLOAD_ENDPOINT_SPEC = obj({
    "node": dns_name(),
    "orchestrator": dns_name(label=True),
    "workload": string(max_len=253),
    "pod": dns_name(),
    "endpoint": _ifname,
    "containerID": string(max_len=255),
    "ipNetworks": listof(cidr),
    "interfaceName": _ifname,
    "mac": _mac,
    "ports": listof(obj({"name": iana_port_name, "protocol": enum(*_K8S_PROTOCOLS), "port": integer(1, 65535)},
                        required=("name", "port"))),
    "profiles": listof(string(max_len=253, non_empty=True)),
    "serviceAccountName": dns_name(),
}, required=("node",))


NAMESPACE_SPEC = obj({})

SPECS: dict[str, Check] = {
    "IPPool": IPPOOL_SPEC,
    "Node": NODE_SPEC,
    "BGPConfiguration": BGP_CONFIGURATION_SPEC,
    "BGPPeer": BGP_PEER_SPEC,
    "WorkloadEndpoint": WORKLOAD_ENDPOINT_SPEC,
    "Namespace": NAMESPACE_SPEC,
    "NetworkPolicy": NETWORK_POLICY_SPEC,
    "GlobalNetworkPolicy": GLOBAL_NETWORK_POLICY_SPEC,
}

# Kubernetes-style names: namespaces are DNS labels, everything else a subdomain.
_NAME_IS_LABEL = {"Namespace"}

# Read-only metadata that `get -o yaml` prints and that may come back on apply.
_EXTRA_METADATA: dict[str, Check] = {
    "uid": string(max_len=128),
    "creationTimestamp": string(max_len=64),
    "generation": integer(0, 2**63 - 1),
}


def _resource_version(c: _Checker, value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    if value == "":
        return 0
    return c.error(path, f"must be a revision number, not {_short(value)}")


_METADATA = obj({
    "name": string(),
    "namespace": dns_name(label=True),
    "labels": label_map,
    "annotations": annotation_map,
    "resourceVersion": _resource_version,
    **_EXTRA_METADATA,
}, required=("name",))


# -- entry point ----------------------------------------------------------------------
def document_name(source: str, doc: Any) -> str:
    """``policies.yaml#2 NetworkPolicy/default/allow-web`` from what the document says about itself."""
    parts = [source] if source else []
    if isinstance(doc, dict):
        kind = doc.get("kind")
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        if isinstance(kind, str) and isinstance(name, str):
            info = KINDS.get(kind)
            if info is not None and info.namespaced:
                ns = ns if isinstance(ns, str) else DEFAULT_NAMESPACE
                parts.append(f"{kind}/{ns}/{name}")
            else:
                parts.append(f"{kind}/{name}")
        elif isinstance(kind, str):
            parts.append(kind)
    return " ".join(parts)


def resource_from_document(doc: dict[str, Any], source: str = "") -> Resource:
    """Validate one ``{apiVersion, kind, metadata, spec}`` document; raise ValidationError with all errors."""
    c = _Checker(document_name(source, doc))
    if not isinstance(doc, dict):
        c.error("", f"a resource document must be an object, not {_typename(doc)}")
        raise ValidationError(c.errors)
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            c.error(format_path("", key) if isinstance(key, str) else repr(key),
                    "unknown field; a resource has apiVersion, kind, metadata and spec")
    kind = doc.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        known = ", ".join(sorted(KINDS))
        c.error("kind", f"unknown kind {_short(kind)}; expected one of {known}" if kind is not None
                else "required field is missing")
    api = doc.get("apiVersion")
    if api is None:
        c.error("apiVersion", "required field is missing")
    elif not isinstance(api, str):
        c.error("apiVersion", f"must be a string, not {_typename(api)}")
    elif info is not None and api not in info.accepted_apis:
        c.error("apiVersion", f"{kind} is not served at {_short(api)}; use {' or '.join(sorted(info.accepted_apis))}")

    meta = _METADATA(c, doc.get("metadata"), "metadata") if doc.get("metadata") is not None else \
        c.error("metadata", "required field is missing")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace: str | None = None
    if info is not None and isinstance(meta, dict):
        if isinstance(name, str):
            reason = _dns_reason(name, label=info.kind in _NAME_IS_LABEL)
            if reason:
                c.error("metadata.name", reason)
        if info.namespaced:
            namespace = meta.get("namespace", DEFAULT_NAMESPACE)
        elif isinstance(doc.get("metadata"), dict) and doc["metadata"].get("namespace") is not None:
            c.error("metadata.namespace", f"{kind} is cluster-scoped and takes no namespace")

    spec: Any = {}
    if info is not None:
        raw_spec = doc.get("spec")
        if info.kind == "Namespace" and isinstance(raw_spec, dict) and not raw_spec:
            raw_spec = None
        spec = SPECS[info.kind](c, {} if raw_spec is None else raw_spec, "spec")
        if isinstance(spec, dict) and isinstance(name, str):
            _kind_name_checks(c, info.kind, name, spec)
    if c.errors:
        raise ValidationError(c.errors)
    assert info is not None and isinstance(meta, dict) and isinstance(name, str)
    extra = {k: meta[k] for k in _EXTRA_METADATA if k in meta}
    return Resource(kind=info.kind, name=name, spec=spec, namespace=namespace,
                    labels=dict(meta.get("labels", {})), annotations=dict(meta.get("annotations", {})),
                    extra_metadata=extra, resource_version=meta.get("resourceVersion", 0))


def _kind_name_checks(c: _Checker, kind: str, name: str, spec: dict[str, Any]) -> None:
    """Checks that tie the name to the spec."""
    if kind == "BGPConfiguration":
        if name != "default":
            if not name.startswith("node.") or _dns_reason(name[5:], label=False):
                c.error("metadata.name", f"{name!r}: a BGPConfiguration is named 'default' or 'node.<node name>'")
            for field in ("nodeToNodeMeshEnabled", "asNumber"):
                if field in spec:
                    c.error(f"spec.{field}", "may only be set in the BGPConfiguration named 'default'")
    elif kind == "WorkloadEndpoint":
        parts = [spec.get(k) for k in ("node", "pod", "endpoint")]
        orch = spec.get("orchestrator", "k8s")
        if all(isinstance(p, str) for p in parts):
            expected = workload_endpoint_name(parts[0], parts[1], parts[2], orch)  # type: ignore[arg-type]
            if name != expected:
                c.error("metadata.name", f"must be {expected!r} (<node>-{orch}-<pod>-<endpoint>, '-' doubled "
                                         "inside each part) for this node, pod and endpoint")

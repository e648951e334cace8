"""Kubernetes label and field selectors, as the API takes them in query strings (lab stand-in).

Label selector grammar (the API's string form): comma-separated requirements
``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists),
``!k`` (does not exist). Field selectors support ``=``, ``==`` and ``!=`` on the
fields this stand-in indexes. A selector that does not parse is a 400, never
"match everything".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SelectorError", "field_selector", "label_selector"]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")

FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
    "metadata.namespace": lambda o: str(o.get("metadata", {}).get("namespace", "")),
    "spec.nodeName": lambda o: str((o.get("spec") or {}).get("nodeName") or ""),
    "status.phase": lambda o: str((o.get("status") or {}).get("phase") or ""),
}


class SelectorError(ValueError):
    """The selector string does not parse (the message names the part)."""


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def label_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Parse a label selector into a predicate over a label map."""
    if not text or not text.strip():
        return lambda labels: True
    reqs: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split(text):
        eq = _EQ_RE.match(part)
        if eq:
            key, op, val = eq.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=val: lb.get(k) == v)
            continue
        st = _SET_RE.match(part)
        if not st:
            raise SelectorError(f"labelSelector: cannot parse {part.strip()!r}")
        neg, key, op, values = st.groups()
        if op:
            if neg:
                raise SelectorError(f"labelSelector: '!' cannot be combined with {op}: {part.strip()!r}")
            vals = frozenset(v.strip() for v in values.split(",") if v.strip())
            if op == "in":
                reqs.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif neg:
            reqs.append(lambda lb, k=key: k not in lb)
        else:
            reqs.append(lambda lb, k=key: k in lb)
    return lambda labels: all(r(labels) for r in reqs)


def field_selector(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """Parse a field selector into a predicate over an object."""
    if not text or not text.strip():
        return lambda obj: True
    reqs: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split(text):
        m = _EQ_RE.match(part)
        if not m:
            raise SelectorError(f"fieldSelector: cannot parse {part.strip()!r}")
        field, op, val = m.groups()
        getter = FIELDS.get(field)
        if getter is None:
            raise SelectorError(f"fieldSelector: field {field!r} is not supported (supported: {sorted(FIELDS)})")
        if op == "!=":
            reqs.append(lambda o, g=getter, v=val: g(o) != v)
        else:
            reqs.append(lambda o, g=getter, v=val: g(o) == v)
    return lambda obj: all(r(obj) for r in reqs)

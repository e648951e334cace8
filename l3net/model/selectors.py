"""l3net.model.selectors: Kubernetes LabelSelectors and Calico selector expressions as one fail-closed selector tree.

A Kubernetes ``LabelSelector`` (``matchLabels`` + ``matchExpressions``) is turned
into the same selector tree as a Calico expression, so there is one evaluator
and one canonical string form (hashed into ipset names):

* ``matchLabels {k: v}``            -> ``k == 'v'``
* ``{key: k, operator: In}``        -> ``k in {...}``      (absent key: no match)
* ``{key: k, operator: NotIn}``     -> ``k not in {...}``  (absent key: match, as Kubernetes)
* ``{key: k, operator: Exists}``    -> ``has(k)``
* ``{key: k, operator: DoesNotExist}`` -> ``!has(k)``
* all requirements ANDed; an empty selector ``{}`` -> ``all()`` (everything);
  ``None`` (a null selector) -> :data:`NOTHING`.

Bad input is treated as absence (STYLE habit 7, fail closed): a selector that
cannot be understood becomes :data:`NOTHING` and is logged, never raised, because
the compiler, the evaluator and the IPAM's pool selectors receive already-validated
resources and must keep the valid rest working. Use :func:`parse_label_selector` with ``strict=True`` to get
the error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.calico_selector import (
    All,
    And,
    Global,
    Has,
    LabelOp,
    Not,
    Or,
    Selector,
    SelectorError,
    canonical,
    parse,
)

_log = logging.getLogger(__name__)

__all__ = ["ALL", "NOTHING", "Nothing", "Selector", "SelectorError", "all_of", "canonical_string",
           "parse_calico", "parse_label_selector", "with_key_prefix"]


@dataclass(frozen=True)
class Nothing(Selector):
    """Matches no label set: a null selector, or one that failed to parse (fail closed)."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return False

    def __str__(self) -> str:
        return "!all()"


ALL: Selector = All()
NOTHING: Selector = Nothing()


def canonical_string(sel: Selector) -> str:
    """Canonical text of a selector (Nothing renders as ``!all()``)."""
    if isinstance(sel, Nothing):
        return "!all()"
    return canonical(sel)


def all_of(*parts: Selector | None) -> Selector:
    """The conjunction of the given selectors (None entries are skipped; any NOTHING makes NOTHING)."""
    kept = [p for p in parts if p is not None and not isinstance(p, (All, Global))]
    if any(isinstance(p, Nothing) for p in kept):
        return NOTHING
    if not kept:
        return ALL
    return kept[0] if len(kept) == 1 else And(tuple(kept))


def with_key_prefix(sel: Selector, prefix: str, global_to: Selector | None = None) -> Selector:
    """The same selector over keys renamed ``prefix + key`` (how namespace selectors become endpoint selectors).

    ``global_to``: what ``global()`` becomes (Calico's namespaceSelector ``global()`` selects the
    non-namespaced things, so the compiler passes "has no namespace label"); None keeps it as is.
    """
    if isinstance(sel, Global) and global_to is not None:
        return global_to
    if isinstance(sel, (All, Global, Nothing)):
        return sel
    if isinstance(sel, Has):
        return Has(prefix + sel.key)
    if isinstance(sel, LabelOp):
        return LabelOp(prefix + sel.key, sel.op, sel.values)
    if isinstance(sel, Not):
        return Not(with_key_prefix(sel.inner, prefix, global_to))
    if isinstance(sel, And):
        return And(tuple(with_key_prefix(p, prefix, global_to) for p in sel.parts))
    if isinstance(sel, Or):
        return Or(tuple(with_key_prefix(p, prefix, global_to) for p in sel.parts))
    raise TypeError(f"unknown selector node {sel!r}")


def parse_calico(text: str | None, *, strict: bool = False, where: str = "selector") -> Selector:
    """A Calico expression; ``None``/empty means ``all()``. Unparsable -> NOTHING (or raise when strict)."""
    if text is None:
        return ALL
    try:
        return parse(text)
    except SelectorError as exc:
        if strict:
            raise SelectorError(f"{where}: {exc.reason}", exc.pos) from exc
        _log.warning("unparsable selector treated as matching nothing where=%s selector=%r error=%s",
                     where, text, exc)
        return NOTHING


def parse_label_selector(sel: Mapping[str, Any] | None, *, strict: bool = False,
                         where: str = "selector") -> Selector:
    """A Kubernetes LabelSelector as a selector tree (see the module docstring for the mapping)."""
    if sel is None:
        return NOTHING
    try:
        return _label_selector(sel, where)
    except SelectorError as exc:
        if strict:
            raise
        _log.warning("invalid label selector treated as matching nothing where=%s selector=%r error=%s",
                     where, sel, exc)
        return NOTHING


def _label_selector(sel: Mapping[str, Any], where: str) -> Selector:
    if not isinstance(sel, Mapping):
        raise SelectorError(f"{where}: must be an object", 0)
    unknown = set(sel) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SelectorError(f"{where}: unknown field {sorted(unknown)[0]!r}", 0)
    parts: list[Selector] = []
    for key, value in sorted((sel.get("matchLabels") or {}).items()):
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(f"{where}.matchLabels.{key}: key and value must be strings", 0)
        parts.append(LabelOp(key, "==", (value,)))
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        parts.append(_match_expression(expr, f"{where}.matchExpressions[{i}]"))
    if not parts:
        return ALL
    return parts[0] if len(parts) == 1 else And(tuple(parts))


# LabelSelector operator -> (whether it takes values, the selector it means for a key and its values).
_EXPRESSION_OPS: dict[str, tuple[bool, Callable[[str, tuple[str, ...]], Selector]]] = {
    "In": (True, lambda key, values: LabelOp(key, "in", values)),
    "NotIn": (True, lambda key, values: LabelOp(key, "not in", values)),
    "Exists": (False, lambda key, _: Has(key)),
    "DoesNotExist": (False, lambda key, _: Not(Has(key))),
}


def _match_expression(expr: Any, path: str) -> Selector:
    """One ``matchExpressions`` entry; SelectorError naming ``path`` and the field when it is malformed."""
    if not isinstance(expr, Mapping):
        raise SelectorError(f"{path}: must be an object", 0)
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key: required", 0)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{path}.values: must be a list of strings", 0)
    if not isinstance(op, str) or op not in _EXPRESSION_OPS:  # a list or mapping is unhashable
        raise SelectorError(f"{path}.operator: {op!r} is not one of In, NotIn, Exists, DoesNotExist", 0)
    takes_values, build = _EXPRESSION_OPS[op]
    if takes_values and not values:
        raise SelectorError(f"{path}.values: must be non-empty for {op}", 0)
    if not takes_values and values:
        raise SelectorError(f"{path}.values: must be empty for {op}", 0)
    return build(key, tuple(values))

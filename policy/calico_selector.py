"""policy.calico_selector: Calico selector expressions for the policy engine.

The grammar and evaluator live in :mod:`l3net.model.calico_selector` (the model
owner's validation uses it, and one grammar must mean one thing everywhere);
this module re-exports it and adds the *canonical* form the compiler hashes into
ipset and chain names: two selectors that mean the same after sorting the
operands of ``&&``/``||`` and the values of ``in {..}`` get the same string.
"""

from __future__ import annotations

from l3net.model.calico_selector import All, And, Global, Has, LabelOp, Not, Or, Selector, SelectorError, parse

__all__ = ["All", "And", "Global", "Has", "LabelOp", "Not", "Or", "Selector", "SelectorError", "canonical",
           "parse"]


def _q(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def canonical(sel: Selector) -> str:
    """A deterministic rendering: equal meaning under reordering gives equal text."""
    if isinstance(sel, (All, Global)):
        return str(sel)
    if isinstance(sel, Has):
        return f"has({sel.key})"
    if isinstance(sel, LabelOp):
        if sel.op in ("in", "not in"):
            return f"{sel.key} {sel.op} {{{','.join(_q(v) for v in sorted(set(sel.values)))}}}"
        return f"{sel.key} {sel.op} {_q(sel.values[0])}"
    if isinstance(sel, Not):
        return f"!({canonical(sel.inner)})"
    if isinstance(sel, (And, Or)):
        joiner = " && " if isinstance(sel, And) else " || "
        parts = sorted({canonical(p) for p in sel.parts})
        return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    raise TypeError(f"unknown selector node {sel!r}")

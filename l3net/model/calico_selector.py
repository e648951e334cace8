"""l3net.model.calico_selector: Calico's label selector expressions, parsed and evaluated.

Grammar (Calico's, libcalico-go ``lib/selector``)::

    expr    := and ( "||" and )*
    and     := unary ( "&&" unary )*
    unary   := "!" unary | primary
    primary := "(" expr ")" | "all()" | "global()" | "has(" LABEL ")"
             | LABEL ( "==" STR | "!=" STR | "in" SET | "not in" SET
                     | "contains" STR | "starts with" STR | "ends with" STR )
    SET     := "{" [ STR ( "," STR )* ] "}"

Strings are single- or double-quoted; the empty expression means ``all()``.
``a != 'x'`` and ``a not in {...}`` also match when ``a`` is absent (Calico's rule).

:func:`canonical` is the deterministic rendering the policy compiler hashes into ipset and chain
names: two selectors that mean the same after sorting the operands of ``&&``/``||`` and the values
of ``in {..}`` get the same string. The fail-closed entry points (a bad selector matches nothing)
are in :mod:`l3net.model.selectors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["All", "And", "Global", "Has", "LabelOp", "Not", "Or", "Selector", "SelectorError", "parse"]

_MAX_LENGTH = 16384
_MAX_DEPTH = 100
_LABEL_RE = re.compile(r"[A-Za-z0-9_./-]+")
_WS_RE = re.compile(r"\s*")


class SelectorError(ValueError):
    """A selector expression that does not parse; ``pos`` is the 0-based offset of the problem."""

    def __init__(self, reason: str, pos: int):
        self.reason = reason
        self.pos = pos
        super().__init__(f"{reason} at offset {pos}")


class Selector:
    """A parsed selector: ``matches(labels)`` and a canonical string form."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError


def _quote(s: str) -> str:
    return f'"{s}"' if "'" in s else f"'{s}'"


@dataclass(frozen=True)
class All(Selector):
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global(Selector):
    """``global()``: matches cluster-scoped (non-namespaced) things; here, any label set."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has(Selector):
    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True)
class LabelOp(Selector):
    key: str
    op: str  # "==", "!=", "in", "not in", "contains", "starts with", "ends with"
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "not in":
            return value not in self.values
        if value is None:
            return False
        if self.op == "==":
            return value == self.values[0]
        if self.op == "in":
            return value in self.values
        if self.op == "contains":
            return self.values[0] in value
        if self.op == "starts with":
            return value.startswith(self.values[0])
        return value.endswith(self.values[0])

    def __str__(self) -> str:
        if self.op in ("in", "not in"):
            return f"{self.key} {self.op} {{{', '.join(_quote(v) for v in self.values)}}}"
        return f"{self.key} {self.op} {_quote(self.values[0])}"


@dataclass(frozen=True)
class Not(Selector):
    inner: Selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.inner.matches(labels)

    def __str__(self) -> str:
        return f"!({self.inner})"


@dataclass(frozen=True)
class And(Selector):
    parts: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(p.matches(labels) for p in self.parts)

    def __str__(self) -> str:
        return "(" + " && ".join(str(p) for p in self.parts) + ")"


@dataclass(frozen=True)
class Or(Selector):
    parts: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(p.matches(labels) for p in self.parts)

    def __str__(self) -> str:
        return "(" + " || ".join(str(p) for p in self.parts) + ")"


class _Parser:
    """Recursive descent over the raw text; no separate token list is needed."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- lexing helpers ------------------------------------------------------
    def _skip(self) -> None:
        m = _WS_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()

    def _peek(self, lit: str) -> bool:
        self._skip()
        return self.text.startswith(lit, self.pos)

    def _take(self, lit: str) -> bool:
        if self._peek(lit):
            self.pos += len(lit)
            return True
        return False

    def _expect(self, lit: str, what: str) -> None:
        if not self._take(lit):
            raise SelectorError(f"expected {what}", self.pos)

    def _keyword(self, word: str) -> bool:
        """Take ``word`` only when it is a whole word (not the start of a longer label)."""
        self._skip()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (end >= len(self.text) or not _LABEL_RE.match(self.text[end])):
            self.pos = end
            return True
        return False

    def _label(self) -> str:
        self._skip()
        m = _LABEL_RE.match(self.text, self.pos)
        if not m:
            raise SelectorError("expected a label key", self.pos)
        self.pos = m.end()
        return m.group(0)

    def _string(self) -> str:
        self._skip()
        if self.pos >= len(self.text) or self.text[self.pos] not in "'\"":
            raise SelectorError("expected a quoted string", self.pos)
        quote = self.text[self.pos]
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise SelectorError("unterminated string", self.pos)
        value = self.text[self.pos + 1:end]
        self.pos = end + 1
        return value

    # -- grammar ---------------------------------------------------------------
    def parse(self) -> Selector:
        self._skip()
        if self.pos >= len(self.text):
            return All()
        sel = self._or()
        self._skip()
        if self.pos < len(self.text):
            raise SelectorError(f"unexpected {self.text[self.pos:self.pos + 10]!r}", self.pos)
        return sel

    def _or(self) -> Selector:
        parts = [self._and()]
        while self._take("||"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def _and(self) -> Selector:
        parts = [self._unary()]
        while self._take("&&"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def _unary(self) -> Selector:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise SelectorError("expression nested too deeply", self.pos)
        try:
            if self._peek("!") and not self._peek("!="):
                self.pos += 1
                return Not(self._unary())
            return self._primary()
        finally:
            self.depth -= 1

    def _primary(self) -> Selector:
        if self._take("("):
            inner = self._or()
            self._expect(")", "')'")
            return inner
        call = self._call()
        if call is not None:
            return call
        return self._label_op(self._label())

    def _call(self) -> Selector | None:
        """``all()``, ``global()`` or ``has(label)``; None (position unchanged) when the text is none of them."""
        for word, node in (("all", All()), ("global", Global())):
            start = self.pos
            if self._keyword(word):
                if self._take("("):
                    self._expect(")", "')'")
                    return node
                self.pos = start  # a label that happens to be called "all"
        start = self.pos
        if self._keyword("has"):
            if self._take("("):
                key = self._label()
                self._expect(")", "')' after has(label")
                return Has(key)
            self.pos = start
        return None

    def _label_op(self, key: str) -> Selector:
        """The operator and operand after label ``key``."""
        for op in ("==", "!="):
            if self._take(op):
                return LabelOp(key, op, (self._string(),))
        if self._keyword("in"):
            return LabelOp(key, "in", self._set())
        if self._keyword("not"):
            if not self._keyword("in"):
                raise SelectorError("expected 'in' after 'not'", self.pos)
            return LabelOp(key, "not in", self._set())
        if self._keyword("contains"):
            return LabelOp(key, "contains", (self._string(),))
        for word in ("starts", "ends"):
            if self._keyword(word):
                if not self._keyword("with"):
                    raise SelectorError(f"expected 'with' after '{word}'", self.pos)
                return LabelOp(key, f"{word} with", (self._string(),))
        raise SelectorError(f"expected an operator after label {key!r}", self.pos)

    def _set(self) -> tuple[str, ...]:
        self._expect("{", "'{'")
        values: list[str] = []
        if self._take("}"):
            return ()
        while True:
            values.append(self._string())
            if self._take("}"):
                return tuple(values)
            self._expect(",", "',' or '}'")


def parse(text: str) -> Selector:
    """Parse a Calico selector expression; raise :class:`SelectorError` naming the offset."""
    if not isinstance(text, str):
        raise SelectorError("selector must be a string", 0)
    if len(text) > _MAX_LENGTH:
        raise SelectorError(f"selector longer than {_MAX_LENGTH} characters", _MAX_LENGTH)
    return _Parser(text).parse()


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

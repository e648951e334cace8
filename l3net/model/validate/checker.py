"""l3net.model.validate.checker: the error collector and the combinators every rule is built from.

A check takes the :class:`Checker`, the raw value and its field path; it returns the value to store
(possibly normalised), or :data:`BAD` after reporting a :class:`~l3net.errors.FieldError` (so that
cross-field checks skip it). Checks never raise: bad input only ever becomes reported errors.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from l3net.errors import FieldError

_log = logging.getLogger(__name__)

__all__ = ["BAD", "UNSUPPORTED", "Check", "Checker", "Post", "boolean", "enum", "format_path", "integer", "listof",
           "number", "obj", "short", "string", "typename", "unsupported"]


class _Bad:
    def __repr__(self) -> str:
        return "<invalid>"


# The marker a check returns after reporting an error.
BAD: Any = _Bad()


class Checker:
    """Collects the errors of one document; owns nothing else, never raises."""

    def __init__(self, document: str):
        self.document = document
        self.errors: list[FieldError] = []

    def error(self, path: str, reason: str) -> Any:
        """Record one error at ``path``; returns :data:`BAD` so a check can ``return c.error(...)``."""
        self.errors.append(FieldError(path=path, reason=reason, document=self.document))
        return BAD


# A check takes the checker, the raw value and its path; it returns the value to
# store, or BAD after reporting an error (so cross-field checks skip it).
Check = Callable[[Checker, Any, str], Any]
# A cross-field check of an object: (checker, raw object, checked object, path); it may fill defaults in.
Post = Callable[[Checker, dict[str, Any], dict[str, Any], str], None]

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


def typename(value: Any) -> str:
    """How an error names a value's JSON type: ``a string``, ``an object``, ``null``..."""
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


def short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for quoting user input in a reason."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def obj(fields: dict[str, Check], required: tuple[str, ...] = (), post: Post | None = None) -> Check:
    """An object with exactly these fields; ``null`` values count as absent.

    ``post(checker, raw, out, path)`` runs cross-field checks on the result.
    """

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return c.error(path, f"must be an object, not {typename(value)}")
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
            if result is not BAD:
                out[key] = result
        for key in required:
            if value.get(key) is None:
                c.error(format_path(path, key), "required field is missing")
        if post is not None:
            post(c, value, out, path)
        return out

    check.fields = fields  # type: ignore[attr-defined]  # the schema, walked by l3net.model.parity's test
    return check


def listof(item: Check, min_items: int = 0, unique: bool = False) -> Check:
    """A list whose every item passes ``item``; optionally at least ``min_items`` and no repeated values."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            return c.error(path, f"must be a list, not {typename(value)}")
        if len(value) < min_items:
            return c.error(path, f"needs at least {min_items} item{'s' if min_items > 1 else ''}")
        out = []
        seen: set[Any] = set()
        bad = False
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            r = item(c, v, p)
            if r is BAD:
                bad = True
                continue
            if unique and isinstance(r, str | int):
                if r in seen:
                    c.error(p, f"duplicate value {short(r)}")
                    bad = True
                seen.add(r)
            out.append(r)
        return BAD if bad else out

    check.item = item  # type: ignore[attr-defined]
    return check


def string(max_len: int | None = None, non_empty: bool = False) -> Check:
    """A string, optionally non-empty and at most ``max_len`` characters."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a string, not {typename(value)}")
        if non_empty and not value:
            return c.error(path, "must not be empty")
        if max_len is not None and len(value) > max_len:
            return c.error(path, f"must be at most {max_len} characters, not {len(value)}")
        return value

    return check


def boolean(c: Checker, value: Any, path: str) -> Any:
    """``true`` or ``false`` (no strings, no numbers)."""
    if not isinstance(value, bool):
        return c.error(path, f"must be true or false, not {typename(value)} {short(value)}")
    return value


def integer(lo: int, hi: int, what: str = "") -> Check:
    """An integer (not a boolean) in ``lo..hi``; ``what`` is appended to the reason."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return c.error(path, f"must be an integer{what}, not {typename(value)} {short(value)}")
        if not lo <= value <= hi:
            return c.error(path, f"{value} is out of range {lo}..{hi}{what}")
        return value

    return check


def enum(*values: str, fold_case: bool = False) -> Check:
    """One of ``values``; with ``fold_case`` any casing is accepted and stored canonically."""
    folded = {v.lower(): v for v in values}

    def check(c: Checker, value: Any, path: str) -> Any:
        if isinstance(value, str):
            if value in values:
                return value
            if fold_case and value.lower() in folded:
                return folded[value.lower()]
        return c.error(path, f"must be one of {', '.join(values)}, not {short(value)}")

    return check


def number(c: Checker, value: Any, path: str) -> Any:
    """A finite integer or float (not a boolean) that a float can hold: readers compare it as a float, and an
    integer such as 10**400 passes as an int, then raises OverflowError in ``float()``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return c.error(path, f"must be a number, not {typename(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        return c.error(path, "must be a finite number")
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return c.error(path, "is too large (must fit a 64-bit float)")
    return value


# The words every refusal of a Calico field starts with (issue 19: implemented, or refused, never ignored).
UNSUPPORTED = "l3net does not support this field"


def unsupported(inner: Check, is_default: Callable[[Any], bool], why: str = "") -> Check:
    """A Calico field l3net does not implement: accepted only at its default (``is_default``), else refused.

    ``inner`` checks the value's shape first, so a malformed value gets its usual error; a
    well-formed non-default one is refused with :data:`UNSUPPORTED` and ``why``.
    """

    def check(c: Checker, value: Any, path: str) -> Any:
        out = inner(c, value, path)
        if out is BAD or is_default(out):
            return out
        return c.error(path, f"{UNSUPPORTED}{f' ({why})' if why else ''}")

    check.unsupported = True  # type: ignore[attr-defined]
    return check

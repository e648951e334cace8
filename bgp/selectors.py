"""bgp.selectors: Calico selector expressions for BGPPeer ``nodeSelector``/``peerSelector``.

Parsed by the model's parser (:mod:`l3net.model.calico_selector`, the grammar policy
uses too). Validation (:func:`selector_error`) reports a bad expression as a field
error; peer selection (:func:`compile_selector`) never raises: a bad expression
logs an error and matches nothing (fail closed, STYLE habit 7), so a broken BGPPeer
peers with no one rather than with everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from l3net.model.calico_selector import SelectorError, parse

_log = logging.getLogger(__name__)


def _nothing(_labels: Mapping[str, str]) -> bool:
    return False


def compile_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels. None or "" selects everything (Calico's empty selector); an expression that
    does not parse is logged and matches nothing."""
    try:
        return parse(text or "").matches
    except SelectorError as exc:
        _log.error("invalid BGP selector matches nothing selector=%r error=%s", text, exc)
        return _nothing


def selector_error(text: str | None) -> str | None:
    """None if ``text`` parses (None and "" do), else the reason, naming the offset."""
    try:
        parse(text or "")
    except SelectorError as exc:
        return str(exc)
    return None

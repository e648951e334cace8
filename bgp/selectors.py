"""bgp.selectors: Calico selector expressions for BGPPeer ``nodeSelector``/``peerSelector``.

Uses ``policy.selectors`` when the policy package provides it, else the model's
parser (the same grammar). An expression that does not parse matches nothing
(fail closed, STYLE habit 7); the caller reports it as a field error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

_log = logging.getLogger(__name__)

try:  # the policy engineer's module, when present
    from policy.selectors import parse as _parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on what else is built
    from l3net.model.calico_selector import parse as _parse


def compile_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels; raises ValueError naming the offset for a bad expression."""
    sel = _parse(text if text is not None else "")
    return sel.matches


def selector_error(text: str) -> str | None:
    """None if ``text`` parses, else the reason."""
    try:
        compile_selector(text)
    except ValueError as exc:
        return str(exc)
    return None

"""l3net.model.validate.selectors: the two selector languages a resource may carry.

Owns the Calico selector expression check (one grammar, :mod:`l3net.model.calico_selector`; a
string that does not parse is refused here, so consumers may fail closed on anything else) and the
Kubernetes LabelSelector (``matchLabels`` and ``matchExpressions`` with In/NotIn/Exists/DoesNotExist).
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model import calico_selector
from l3net.model.validate.checker import Checker, enum, format_path, listof, obj, short, typename
from l3net.model.validate.names import label_key, label_map, label_value

_log = logging.getLogger(__name__)

__all__ = ["LABEL_SELECTOR", "calico_selector_check"]


def calico_selector_check(c: Checker, value: Any, path: str) -> Any:
    """A Calico selector expression that parses (``role == 'db' && has(tier)``); stored as written."""
    if not isinstance(value, str):
        return c.error(path, f"must be a selector string, not {typename(value)}")
    try:
        calico_selector.parse(value)
    except calico_selector.SelectorError as exc:
        return c.error(path, f"invalid selector {short(value)}: {exc}")
    return value


def _match_expression_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
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

# A Kubernetes metav1.LabelSelector.
LABEL_SELECTOR = obj({"matchLabels": label_map, "matchExpressions": listof(_MATCH_EXPRESSION)})

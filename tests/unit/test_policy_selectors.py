"""Selectors: Kubernetes LabelSelector semantics, Calico expressions, canonical form, the index."""

from __future__ import annotations

import pytest

from l3net.model.selectors import NOTHING, SelectorError, canonical_string, parse_calico, parse_label_selector
from policy.selectors import SelectorIndex

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("sel", "labels", "expected"), [
    ({}, {}, True),
    ({}, {"a": "b"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchLabels": {"app": "web"}}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}, {"app": "b"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {"app": "a"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {"app": "c"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "x"}, False),
    ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
     {"a": "1", "b": "2"}, True),
])
def test_label_selector_matches_like_kubernetes(sel, labels, expected) -> None:
    assert parse_label_selector(sel).matches(labels) is expected


def test_null_selector_matches_nothing_and_bad_selector_fails_closed() -> None:
    assert parse_label_selector(None) is NOTHING
    bad = {"matchExpressions": [{"key": "a", "operator": "Maybe", "values": []}]}
    assert parse_label_selector(bad).matches({"a": "x"}) is False
    with pytest.raises(SelectorError, match=r"podSelector.matchExpressions\[0\].operator"):
        parse_label_selector(bad, strict=True, where="podSelector")


@pytest.mark.parametrize(("expr", "labels", "expected"), [
    ("all()", {}, True),
    ("has(a)", {"a": "1"}, True),
    ("!has(a)", {"a": "1"}, False),
    ("a == 'x'", {"a": "x"}, True),
    ("a != 'x'", {}, True),
    ("a in {'x', 'y'}", {"a": "y"}, True),
    ("a not in {'x'}", {}, True),
    ("a == 'x' && (b == 'y' || !has(c))", {"a": "x", "c": "1"}, False),
    ("a == 'x' && (b == 'y' || !has(c))", {"a": "x"}, True),
])
def test_calico_expressions(expr, labels, expected) -> None:
    assert parse_calico(expr).matches(labels) is expected


def test_calico_parse_error_is_clear_and_fails_closed() -> None:
    with pytest.raises(SelectorError, match=r"spec\.selector"):
        parse_calico("a == ", strict=True, where="spec.selector")
    assert parse_calico("a == ").matches({"a": ""}) is False


def test_canonical_form_ignores_order() -> None:
    a = parse_label_selector({"matchLabels": {"x": "1", "y": "2"},
                              "matchExpressions": [{"key": "z", "operator": "In", "values": ["b", "a"]}]})
    b = parse_calico("z in {'a','b'} && y == '2' && x == '1'")
    assert canonical_string(a) == canonical_string(b)
    assert canonical_string(parse_label_selector({})) == "all()"
    assert canonical_string(parse_calico("x == '1'")) != canonical_string(parse_calico("x == '2'"))


def test_selector_index_tracks_members_incrementally() -> None:
    idx = SelectorIndex()
    idx.update_item("p1", {"app": "web"})
    idx.add_selector("web", parse_calico("app == 'web'"))
    idx.add_selector("notdb", parse_label_selector({"matchExpressions": [
        {"key": "app", "operator": "NotIn", "values": ["db"]}]}))
    assert idx.members("web") == {"p1"}
    assert idx.pop_changes() == {"web", "notdb"}
    idx.update_item("p2", {})
    assert idx.members("notdb") == {"p1", "p2"}
    assert idx.pop_changes() == {"notdb"}
    idx.update_item("p1", {"app": "db"})
    assert idx.members("web") == frozenset() and idx.members("notdb") == {"p2"}
    assert idx.pop_changes() == {"web", "notdb"}
    idx.update_item("p1", {"app": "db"})  # unchanged labels: nothing changes
    assert idx.pop_changes() == set()
    idx.remove_item("p2")
    idx.remove_selector("web")
    assert idx.pop_changes() == {"notdb", "web"}
    assert idx.members("notdb") == frozenset()

"""Calico selector expressions: parsing, evaluation, and errors with offsets."""

from __future__ import annotations

import pytest

from l3net.model.calico_selector import SelectorError, parse

pytestmark = pytest.mark.unit

LABELS = {"role": "db", "tier": "backend", "env": "prod-eu", "all": "x"}


@pytest.mark.parametrize(("expr", "expected"), [
    ("", True),
    ("all()", True),
    ("global()", True),
    ("role == 'db'", True),
    ('role == "web"', False),
    ("role != 'web'", True),
    ("missing != 'x'", True),
    ("has(tier)", True),
    ("!has(tier)", False),
    ("! has(nope)", True),
    ("role in {'db', 'cache'}", True),
    ("role in {}", False),
    ("role not in {'db'}", False),
    ("missing not in {'db'}", True),
    ("env contains 'eu'", True),
    ("env starts with 'prod'", True),
    ("env ends with 'us'", False),
    ("role == 'db' && has(tier)", True),
    ("role == 'web' || tier == 'backend'", True),
    ("!(role == 'db' && tier == 'backend')", False),
    ("(role == 'web' || role == 'db') && !has(missing)", True),
    ("all == 'x'", True),
    ("app.kubernetes.io/name == 'x'", False),
])
def test_parse_and_match(expr: str, expected: bool) -> None:
    sel = parse(expr)
    assert sel.matches(LABELS) is expected
    assert parse(str(sel)).matches(LABELS) is expected, "canonical form must parse to the same meaning"


@pytest.mark.parametrize("expr", [
    "role = 'db'", "role == db", "role == 'db", "role in {'a' 'b'}", "has(role", "has()", "(role == 'a'",
    "role == 'a' &&", "&& role == 'a'", "role", "role not {'a'}", "role starts 'a'", "all() extra",
    "!" * 200 + "all()", "role == 'a' | tier == 'b'",
])
def test_bad_selectors_raise_selector_error(expr: str) -> None:
    with pytest.raises(SelectorError) as ei:
        parse(expr)
    assert 0 <= ei.value.pos <= len(expr)

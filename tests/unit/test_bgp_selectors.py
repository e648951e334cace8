"""bgp.selectors: validation names the error; peer selection fails closed on a bad expression."""

from __future__ import annotations

import logging

import pytest

from bgp.selectors import compile_selector, selector_error

pytestmark = pytest.mark.unit


def test_valid_selectors_match_and_empty_selects_all() -> None:
    assert compile_selector("rack == 'r1'")({"rack": "r1"})
    assert not compile_selector("rack == 'r1'")({"rack": "r2"})
    assert compile_selector(None)({}) and compile_selector("")({"x": "y"})
    assert selector_error("has(rack)") is None and selector_error(None) is None


def test_bad_selector_is_an_error_for_validation_and_matches_nothing_for_selection(
        caplog: pytest.LogCaptureFixture) -> None:
    assert "offset" in (selector_error("rack == ") or "")
    with caplog.at_level(logging.ERROR, logger="bgp.selectors"):
        pred = compile_selector("rack == ")
    assert not pred({}) and not pred({"rack": ""})
    assert "matches nothing" in caplog.text

"""Property tests: whatever the input, the validators and the loader raise only ValidationError."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l3net.errors import ValidationError
from l3net.model.calico_selector import SelectorError, parse
from l3net.model.documents import load_documents
from l3net.model.validation import resource_from_document
from tests.unit.validation_cases import BAD, CALICO_MANIFESTS, K8S_DOCS_POLICY

pytestmark = pytest.mark.unit

VALID_DOCS: list[dict[str, Any]] = [d for d in yaml.safe_load_all(K8S_DOCS_POLICY + "---\n" + CALICO_MANIFESTS)]
VALID_DOCS += [b[1] for b in BAD]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["10.0.0.0/8", "fd00::/64", "all()", "TCP", "Ingress", "In", "64512", "3s",
                                     "10.0.0.1:179", "default", "Never", "http", ""]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner, max_size=4)),
    max_leaves=25)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return doc


def _validate(doc: Any) -> None:
    """Only ValidationError may escape; whatever validates must re-validate to the same resource."""
    try:
        res = resource_from_document(doc, "prop")
    except ValidationError as exc:
        assert exc.errors and all(e.reason for e in exc.errors)
        return
    again = resource_from_document(json.loads(json.dumps(res.to_document())), "again")
    assert again == res


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_values_raise_only_validation_error(value: Any) -> None:
    _validate(value)
    _validate({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"}, "spec": value})
    _validate({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": value, "spec": value})


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_DOCS), st.data())
def test_mutated_valid_documents_raise_only_validation_error(doc: dict[str, Any], data: st.DataObject) -> None:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _set(doc, path, data.draw(json_values))
    _validate(doc)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_validation_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        load_documents(text, "prop.yaml")


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(VALID_DOCS), st.data())
def test_mutated_json_text_raises_only_validation_error(doc: dict[str, Any], data: st.DataObject) -> None:
    text = json.dumps(doc)
    pos = data.draw(st.integers(0, len(text)))
    text = text[:pos] + data.draw(st.text(max_size=5)) + text[pos + data.draw(st.integers(0, 5)):]
    with contextlib.suppress(ValidationError):
        load_documents(text, "prop.json")


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="ab=!&|(){}',\" inothaswlcgeru.-_/", max_size=40))
def test_selector_parser_raises_only_selector_error(text: str) -> None:
    with contextlib.suppress(SelectorError):
        parse(text).matches({"a": "b"})

"""Files of documents: YAML/JSON, multi-document, List, syntax errors with positions, all-or-nothing,
and the checks between documents of one file."""

from __future__ import annotations

import json

import pytest

from l3net.errors import ValidationError
from l3net.model.documents import load_documents

pytestmark = pytest.mark.unit

POOL = "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n"


def _pools(*pairs: tuple[str, str]) -> str:
    return "---\n".join(POOL.format(name=n, cidr=c) for n, c in pairs)


def test_multi_document_yaml_and_empty_documents() -> None:
    text = "---\n" + _pools(("a", "10.0.0.0/16"), ("b", "10.1.0.0/16")) + "---\n"
    assert [r.name for r in load_documents(text, "f.yaml")] == ["a", "b"]


def test_json_object_and_array() -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "a"}, "spec": {"cidr": "10.0.0.0/16"}}
    assert load_documents(json.dumps(doc), "f.json")[0].name == "a"
    assert len(load_documents(json.dumps([doc, {**doc, "metadata": {"name": "b"}, "spec": {"cidr": "10.9.0.0/16"}}]),
                              "f.json")) == 2


def test_kind_list_items() -> None:
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "- {apiVersion: l3net.io/v1, kind: IPPool, metadata: {name: a}, spec: {cidr: 10.0.0.0/16}}\n"
            "- {apiVersion: l3net.io/v1, kind: IPPool, metadata: {name: b}, spec: {cidr: 10.0.0.0/33}}\n")
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "list.yaml")
    err = ei.value.errors[0]
    assert err.document == "list.yaml#1.items[1] IPPool/b" and err.path == "spec.cidr"


@pytest.mark.parametrize(("text", "where"), [
    ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [a\n", "line 5, column 1"),
    ("a: b\n  c: d\n", "line 2, column 4"),
    ("kind: IPPool\nkind: Node\n", "line 2, column 1"),
])
def test_invalid_yaml_reports_line_and_column(text: str, where: str) -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "bad.yaml")
    assert where in ei.value.errors[0].reason and ei.value.errors[0].document == "bad.yaml"


def test_invalid_json_reports_line_and_column() -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents('{\n  "kind": "IPPool",\n  oops\n}', "bad.json")
    assert "line 3, column 3" in ei.value.errors[0].reason


def test_one_bad_document_refuses_the_file_with_all_errors() -> None:
    text = _pools(("a", "10.0.0.0/16"), ("b", "10.1.0.1/16"), ("c", "300.0.0.0/8"))
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "f.yaml")
    assert [(e.document, e.path) for e in ei.value.errors] == [("f.yaml#2 IPPool/b", "spec.cidr"),
                                                               ("f.yaml#3 IPPool/c", "spec.cidr")]


def test_overlapping_pools_in_one_file_name_both() -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents(_pools(("a", "10.0.0.0/16"), ("b", "10.0.128.0/20")), "f.yaml")
    (err,) = ei.value.errors
    assert err.path == "spec.cidr" and "IPPool b" in err.reason and "IPPool a" in err.reason


def test_duplicate_names_in_one_file() -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents(_pools(("a", "10.0.0.0/16"), ("a", "10.0.0.0/16")), "f.yaml")
    assert "defined twice" in ei.value.errors[0].reason


def test_not_a_mapping_and_timestamps_stay_strings() -> None:
    with pytest.raises(ValidationError) as ei:
        load_documents("- 1\n- 2\n", "f.yaml")
    assert "must be an object" in ei.value.errors[0].reason
    text = POOL.format(name="a", cidr="10.0.0.0/16").replace("  name: a\n",
                                                             "  name: a\n  creationTimestamp: 2024-01-01T00:00:00Z\n")
    assert load_documents(text, "f.yaml")[0].extra_metadata["creationTimestamp"] == "2024-01-01T00:00:00Z"

"""l3net.model.documents: a file of resource documents in, validated resources out, all or nothing.

Accepts YAML (several documents separated by ``---``) or JSON (one object, or
an array of objects), and ``kind: List`` (or calicoctl's ``<Kind>List``) with
``items``. YAML is read strictly: duplicate keys are errors (PyYAML would keep
the last one silently) and timestamps stay strings. Any error in any document
refuses the whole file: :func:`load_documents` raises one ValidationError with
every error found, and returns nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

import yaml
import yaml.constructor

from l3net.errors import FieldError, ValidationError
from l3net.model.resource import Resource
from l3net.model.validation import document_name, resource_from_document

_log = logging.getLogger(__name__)

__all__ = ["check_file_consistency", "load_documents", "load_named_documents", "parse_text"]

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MAX_DOCUMENTS = 10000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and leaves timestamps as strings."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it with its position
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(source: str, exc: yaml.YAMLError) -> ValidationError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = f"invalid YAML{where}: {problem}" + (f" ({context})" if context else "")
    return ValidationError(FieldError(path="", reason=reason, document=source))


def parse_text(text: str, source: str) -> list[tuple[str, Any]]:
    """Split ``text`` into ``(document name, parsed value)`` pairs; syntax errors carry line and column."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(FieldError(
                path="", reason=f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                document=source)) from None
        except RecursionError:
            raise ValidationError(FieldError(path="", reason="JSON nested too deeply", document=source)) from None
        docs = data if isinstance(data, list) else [data]
    else:
        try:
            docs = list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise _yaml_error(source, exc) from None
        except RecursionError:
            raise ValidationError(FieldError(path="", reason="YAML nested too deeply", document=source)) from None
    out: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue  # an empty document between two '---'
        name = f"{source}#{i}"
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
                and "items" in doc:
            out.extend(_list_items(name, doc))
        else:
            out.append((name, doc))
    return out


def _list_items(name: str, doc: dict[str, Any]) -> list[tuple[str, Any]]:
    extra = [k for k in doc if k not in ("apiVersion", "kind", "metadata", "items")]
    if extra:
        raise ValidationError([FieldError(path=str(k), reason="unknown field in a List", document=name)
                               for k in extra])
    items = doc["items"]
    if not isinstance(items, list):
        raise ValidationError(FieldError(path="items", reason="must be a list of resources", document=name))
    return [(f"{name}.items[{j}]", item) for j, item in enumerate(items)]


def check_file_consistency(resources: list[tuple[str, Resource]]) -> list[FieldError]:
    """Errors between documents of one file: duplicate names, overlapping IP pools (both named)."""
    errors: list[FieldError] = []
    seen: dict[tuple[str, str | None, str], str] = {}
    pools: list[tuple[str, Resource]] = []
    for doc_name, res in resources:
        ident = (res.kind, res.namespace, res.name)
        if ident in seen:
            errors.append(FieldError(path="metadata.name", document=doc_name,
                                     reason=f"{res.ref} is defined twice in this file (also {seen[ident]})"))
        else:
            seen[ident] = doc_name
        if res.kind == "IPPool":
            net = ipaddress.ip_network(res.spec["cidr"])
            for other_name, other in pools:
                if other.name == res.name:
                    continue
                onet = ipaddress.ip_network(other.spec["cidr"])
                if onet.version == net.version and onet.overlaps(net):  # type: ignore[arg-type]
                    errors.append(FieldError(
                        path="spec.cidr", document=doc_name,
                        reason=f"IPPool {res.name} ({net}) overlaps IPPool {other.name} ({onet}) "
                               f"defined in {other_name}"))
            pools.append((doc_name, res))
    return errors


def load_documents(text: str, source: str) -> list[Resource]:
    """Parse and validate every document in ``text``; raise one ValidationError with all errors, or return all."""
    return [r for _, r in load_named_documents(text, source)]


def load_named_documents(text: str, source: str) -> list[tuple[str, Resource]]:
    """Like :func:`load_documents`, with each resource's document name (``file#2 Kind/name``) for messages."""
    parsed = parse_text(text, source)
    if len(parsed) > _MAX_DOCUMENTS:
        raise ValidationError(FieldError(path="", reason=f"more than {_MAX_DOCUMENTS} documents", document=source))
    errors: list[FieldError] = []
    resources: list[tuple[str, Resource]] = []
    for name, doc in parsed:
        try:
            res = resource_from_document(doc, name)
        except ValidationError as exc:
            errors.extend(exc.errors)
            continue
        resources.append((document_name(name, res.to_document()), res))
    errors.extend(check_file_consistency(resources))
    if errors:
        raise ValidationError(errors)
    if not parsed:
        _log.info("no documents source=%s", source)
    return resources

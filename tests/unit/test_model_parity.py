"""l3net.model.parity: every field of every kind is implemented (by a named consumer) or refused (issue 19)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model import (
    bgp_specs,
    bgpfilter_spec,
    felixconfiguration_spec,
    hostendpoint_spec,
    ippool_spec,
    ipreservation_spec,
    networkset_spec,
    policy_spec,
    service_spec,
    workload_spec,
)
from l3net.model.documents import load_documents
from l3net.model.parity import _NO_DEFAULT, PARITY, render_markdown
from l3net.model.resource import KINDS
from l3net.model.validate.checker import UNSUPPORTED, Check
from l3net.model.validate.kinds import SPECS
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# A small valid spec per kind, into which one field at a time is set.
_RULES = [{"action": "Allow", "source": {}, "destination": {}}]
BASE: dict[str, tuple[str, dict[str, Any]]] = {
    "IPPool": ("p", {"cidr": "10.0.0.0/16"}),
    "IPReservation": ("r", {}),
    "FelixConfiguration": ("default", {}),
    "Node": ("n1", {}),
    "BGPConfiguration": ("default", {}),
    "BGPPeer": ("peer", {"peerIP": "10.0.0.9", "asNumber": 65000}),
    "BGPFilter": ("f", {}),
    "WorkloadEndpoint": ("w", {"node": "n1"}),
    "Namespace": ("ns", {}),
    "NetworkPolicy": ("np", {}),
    "GlobalNetworkPolicy": ("g", {"selector": "all()", "ingress": copy.deepcopy(_RULES),
                                  "egress": copy.deepcopy(_RULES)}),
    "CalicoNetworkPolicy": ("cnp", {"selector": "all()", "ingress": copy.deepcopy(_RULES),
                                    "egress": copy.deepcopy(_RULES)}),
    "NetworkSet": ("ns", {"nets": ["192.0.2.0/24"]}),
    "GlobalNetworkSet": ("gns", {"nets": ["198.51.100.0/24", "2001:db8::/64"]}),
    "Service": ("web", {"clusterIP": "10.96.0.10"}),
    "HostEndpoint": ("n1-eth0", {"node": "n1", "interfaceName": "eth0"}),
}


def schema_paths(check: Check, path: str = "") -> Iterator[tuple[str, bool]]:
    """Every leaf field of a schema as (path, refused-by-an-unsupported-check); ``[]`` for list items."""
    if getattr(check, "unsupported", False):
        yield path, True
        return
    fields = getattr(check, "fields", None)
    if fields is not None:
        for key, sub in fields.items():
            yield from schema_paths(sub, f"{path}.{key}" if path else key)
        return
    item = getattr(check, "item", None)
    if item is not None:
        yield from schema_paths(item, path + "[]")
        return
    yield path, False


def covering_entry(kind: str, path: str) -> str | None:
    """The registry path that covers ``path``: itself or its nearest ancestor."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        for key in (candidate, candidate.removesuffix("[]")):
            if key in PARITY[kind]:
                return key
    return None


def test_every_kind_has_a_row_set_and_a_base_document() -> None:
    assert set(PARITY) == set(KINDS) == set(SPECS) == set(BASE)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_schema_field_is_implemented_or_refused(kind: str) -> None:
    paths = list(schema_paths(SPECS[kind]))
    uncovered = [p for p, _ in paths if covering_entry(kind, p) is None]
    assert not uncovered, f"{kind}: fields neither implemented nor refused in l3net.model.parity: {uncovered}"
    for path, is_unsupported in paths:
        entry = PARITY[kind][covering_entry(kind, path)]  # type: ignore[index]
        if is_unsupported:
            # A validator that refuses the field is listed as refused, on the field itself.
            assert entry.status == "refused" and covering_entry(kind, path) == path, (kind, path)
        else:
            assert entry.status == "implemented", f"{kind} {path}: listed refused but the validator accepts it"
    # No row names a field the schema does not have.
    names = [p for p, _ in paths]
    for key in PARITY[kind]:
        assert any(p == key or p.startswith((key + ".", key + "[]")) for p in names), f"{kind}: stale row {key}"


# kind -> (the model module that hands out its typed spec, the spec's type)
TYPED: dict[str, tuple[Any, Any]] = {**{kind: (bgp_specs, t) for kind, t in bgp_specs.SPEC_TYPES.items()},
                                     "IPPool": (ippool_spec, ippool_spec.IPPoolSpec),
                                     "IPReservation": (ipreservation_spec, ipreservation_spec.IPReservationSpec),
                                     "FelixConfiguration": (felixconfiguration_spec,
                                                            felixconfiguration_spec.FelixConfigurationSpec),
                                     "WorkloadEndpoint": (workload_spec, workload_spec.WorkloadSpec),
                                     "HostEndpoint": (hostendpoint_spec, hostendpoint_spec.HostEndpointSpec),
                                     **{kind: (networkset_spec, networkset_spec.NetworkSetSpec)
                                        for kind in networkset_spec.NETWORK_SET_KINDS},
                                     "Service": (service_spec, service_spec.ServiceSpec),
                                     "BGPFilter": (bgpfilter_spec, bgpfilter_spec.BGPFilterSpec),
                                     "NetworkPolicy": (policy_spec, policy_spec.KubernetesPolicySpec),
                                     **{kind: (policy_spec, policy_spec.CalicoPolicySpec)
                                        for kind in policy_spec.CALICO_POLICY_KINDS}}


def typed_fields(spec_type: Any) -> dict[str, set[Any]]:
    """The field names of a typed spec and of the typed values inside it (a list's items, a range, a rule and its
    sides), each with the typed values that have it, as a row's path ends with a field of either
    (``exportV4[].cidr``, ``ingress[].source.notNets``)."""
    names: dict[str, set[Any]] = {}
    todo, seen = [spec_type], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        hints = typing.get_type_hints(t)
        for f in dataclasses.fields(t):
            names.setdefault(f.name, set()).add(t)
            args, inner = [hints[f.name]], []
            while args:
                a = args.pop()
                args.extend(typing.get_args(a))
                inner.append(a)
            todo.extend(a for a in inner if isinstance(a, type) and dataclasses.is_dataclass(a))
    return names


@pytest.mark.parametrize(("kind", "path"), [(k, p) for k, rows in sorted(PARITY.items()) for p, f in rows.items()
                                            if f.status == "implemented"])
def test_implemented_fields_are_read_by_their_named_consumer(kind: str, path: str) -> None:
    entry = PARITY[kind][path]
    spec = importlib.util.find_spec(entry.consumer)
    assert spec is not None and spec.origin, f"{kind} {path}: consumer {entry.consumer} is not a module"
    source = Path(spec.origin).read_text()
    name = entry.name(path)
    if kind in TYPED and f'"{name}"' not in source:
        # A kind that reaches its consumer typed: the model's typed-spec module, or the one that defines the typed
        # value inside it (rule_spec for a policy's rules), parses the field; the consumer reads its attribute.
        module, spec_type = TYPED[kind]
        # camelCase -> snake_case, an acronym kept whole (serviceClusterIPs) or split off (disableBGPExport)
        spellings = {re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower(),
                     re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()}
        fields = typed_fields(spec_type)
        assert len(spellings & fields.keys()) == 1, (kind, name, spellings)
        (attribute,) = spellings & fields.keys()
        modules = {module, *(sys.modules[t.__module__] for t in fields[attribute])}
        assert any(f'"{name}"' in Path(str(m.__file__)).read_text() for m in modules), \
            f"{sorted(m.__name__ for m in modules)} never name {name!r}"
        assert re.search(rf"\.{attribute}\b", source), f"{entry.consumer} never reads .{attribute}"
        return
    assert f'"{name}"' in source or f"'{name}'" in source, f"{entry.consumer} never names {name!r}"


def _set(spec: dict[str, Any], path: str, value: Any) -> str:
    """Set ``path`` (``[]`` = the first item) in ``spec``; returns the concrete path an error names."""
    node: Any = spec
    concrete = []
    parts = path.split(".")
    for i, part in enumerate(parts):
        key, is_item = part.removesuffix("[]"), part.endswith("[]")
        last = i == len(parts) - 1
        if last and not is_item:
            node[key] = value
            concrete.append(key)
            break
        node = node.setdefault(key, [{}] if is_item else {})
        if is_item:
            node = node[0]
        concrete.append(f"{key}[0]" if is_item else key)
    return "spec." + ".".join(concrete)


def _doc(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    name, _ = BASE[kind]
    meta: dict[str, Any] = {"name": name}
    if KINDS[kind].namespaced:
        meta["namespace"] = "default"
    return {"apiVersion": KINDS[kind].canonical_api, "kind": KINDS[kind].doc_kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize(("kind", "path"), [(k, p) for k, rows in sorted(PARITY.items()) for p, f in rows.items()
                                            if f.status == "refused"])
def test_refused_fields_are_refused_with_the_field_named(kind: str, path: str) -> None:
    entry = PARITY[kind][path]
    spec = copy.deepcopy(BASE[kind][1])
    where = _set(spec, path, copy.deepcopy(entry.sample))
    with pytest.raises(ValidationError) as ei:
        resource_from_document(_doc(kind, spec))
    errors = [e for e in ei.value.errors if e.path == where]
    assert errors and errors[0].reason.startswith(UNSUPPORTED), [str(e) for e in ei.value.errors]
    assert f"{where}: {UNSUPPORTED}" in str(ei.value)
    if entry.default is not _NO_DEFAULT:
        ok = copy.deepcopy(BASE[kind][1])
        _set(ok, path, copy.deepcopy(entry.default))
        resource_from_document(_doc(kind, ok))  # Calico's default is still accepted


def test_the_base_documents_are_valid() -> None:
    for kind in BASE:
        resource_from_document(_doc(kind, copy.deepcopy(BASE[kind][1])))


def test_repo_manifests_still_apply() -> None:
    files = sorted(REPO.glob("topologies/*/*.yaml"))
    assert files
    for f in files:
        assert load_documents(f.read_text(), str(f)), f


def test_docs_table_is_rendered_from_the_registry() -> None:
    assert render_markdown() in (REPO / "docs" / "calico-parity.md").read_text()

"""l3net.model.ipreservation_spec: an IPReservation's typed spec, the one parse of the addresses IPAM never assigns."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from l3net.datastore.base import KeyValue
from l3net.errors import ValidationError
from l3net.ipam.reservations import reservations_from_kvs
from l3net.keys import KeyLayout
from l3net.model import ipreservation_spec as ipreservation_spec_module
from l3net.model.ipreservation_spec import IPReservationSpec, ipreservation_spec
from l3net.model.parity import PARITY
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def reservation(spec: dict[str, Any], name: str = "r1") -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                                   "metadata": {"name": name}, "spec": spec})


def test_every_entry_a_network_in_order() -> None:
    res = reservation({"reservedCIDRs": ["10.0.0.0/30", "10.0.0.9", "fd00::/120", "fd00::7"]})
    spec = ipreservation_spec(res)
    assert spec == IPReservationSpec(reserved_cidrs=tuple(ipaddress.ip_network(n) for n in (
        "10.0.0.0/30", "10.0.0.9/32", "fd00::/120", "fd00::7/128")))
    assert ipreservation_spec(res) is spec   # computed once per Resource object


def test_absent_and_empty_reserve_nothing() -> None:
    assert ipreservation_spec(reservation({})) == IPReservationSpec()
    assert ipreservation_spec(reservation({"reservedCIDRs": []})).reserved_cidrs == ()


@pytest.mark.parametrize("value", [["10.0.0.1/30"], ["10.0.0.300"], ["fe80::1%eth0"], [7], "10.0.0.0/30"])
def test_a_hand_built_reservation_the_model_refuses_gets_no_typed_spec(value: Any) -> None:
    res = Resource(kind="IPReservation", name="r1", spec={"reservedCIDRs": value})
    with pytest.raises(ValidationError) as err:
        ipreservation_spec(res)
    assert any(e.path.startswith("spec.reservedCIDRs") for e in err.value.errors), err.value.errors


def test_an_unknown_field_is_refused_too() -> None:
    with pytest.raises(ValidationError) as err:
        ipreservation_spec(Resource(kind="IPReservation", name="r1", spec={"reservedCIDR": ["10.0.0.0/30"]}))
    assert [e.path for e in err.value.errors] == ["spec.reservedCIDR"]


def test_a_hand_built_reservation_the_model_accepts() -> None:
    res = Resource(kind="IPReservation", name="r1", spec={"reservedCIDRs": ["10.0.0.8/29"]})
    assert ipreservation_spec(res).reserved_cidrs == (ipaddress.ip_network("10.0.0.8/29"),)


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind IPReservation"):
        ipreservation_spec(Resource(kind="IPPool", name="p", spec={"cidr": "10.0.0.0/16"}))


def test_ipam_reserves_what_the_typed_spec_says() -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": "r1"},
           "spec": {"reservedCIDRs": ["10.0.0.0/30", "10.0.0.9"]}}
    keys = KeyLayout("/p/")
    kv = KeyValue(key=keys.resource("ipreservations", "r1"), value=json.dumps(doc).encode(), mod_revision=1,
                  create_revision=1, version=1, lease=0)
    assert reservations_from_kvs(keys, [kv]).networks == \
        ipreservation_spec(resource_from_document(doc)).reserved_cidrs


def test_the_parity_consumer_reads_the_typed_field_the_model_parses() -> None:
    # As tests/unit/test_model_parity.py checks a typed kind: the model's module names the field, the consumer
    # that l3net.model.parity names reads the typed attribute and quotes no field of the raw document.
    entry = PARITY["IPReservation"]["reservedCIDRs"]
    spec = importlib.util.find_spec(entry.consumer)
    assert spec is not None and spec.origin
    source = Path(spec.origin).read_text()
    assert re.search(r"\.reserved_cidrs\b", source) and '"reservedCIDRs"' not in source
    assert '"reservedCIDRs"' in Path(ipreservation_spec_module.__file__).read_text()

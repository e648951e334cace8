"""l3net.ipam.report: the endpoints' addresses come from the model's typed WorkloadEndpoint spec (the decode every
reader shares), so ``ipam check`` counts as a user exactly the endpoints the agent acts on."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from l3net.datastore.memory import MemoryDatastore
from l3net.ipam import IPAM
from tests.unit.ipam_builders import KEYS, add_node, add_pool

pytestmark = pytest.mark.unit


def put_wep(ds: MemoryDatastore, name: str, spec: dict[str, Any]) -> str:
    key = KEYS.resource("workloadendpoints", name, "d")
    doc = {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": "d"},
           "spec": {"node": "a", **spec}}
    ds.put(key, json.dumps(doc).encode())
    return key


@pytest.fixture
def ds() -> MemoryDatastore:
    store = MemoryDatastore()
    add_node(store, "a")
    return store


def test_an_endpoints_addresses_and_container_make_it_the_user(ds: MemoryDatastore) -> None:
    add_pool(ds, "p", "10.13.0.0/24")
    ipam = IPAM(ds, KEYS)
    ip = ipam.auto_assign("net.k1", "a", {"containerID": "k1"})[0]
    put_wep(ds, "w1", {"ipNetworks": [f"{ip}/32"], "containerID": "k1"})
    report = ipam.check()
    assert report.ok and report.leaks == [] and report.missing_allocations == []
    put_wep(ds, "w1", {"ipNetworks": [f"{ip}/32"], "containerID": "k9"})   # another container's endpoint
    assert [a.ip for a in ipam.check().leaks] == [ip]
    w2 = put_wep(ds, "w2", {"ipNetworks": ["10.13.0.200/32"]})
    assert ipam.check().missing_allocations == [f"10.13.0.200 is used by {w2} but not allocated in IPAM"]


def test_an_endpoint_the_model_refuses_is_absent_and_logged(ds: MemoryDatastore,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    add_pool(ds, "p", "10.14.0.0/24")
    ipam = IPAM(ds, KEYS)
    ip = ipam.auto_assign("net.k1", "a", {"containerID": "k1"})[0]
    key = put_wep(ds, "w1", {"ipNetworks": [f"{ip}/32"], "containerID": "k1", "interfaceName": "eth0"})
    ds.put(KEYS.resource("workloadendpoints", "w2", "d"), b"{not json")
    with caplog.at_level(logging.WARNING, logger="l3net.ipam.report"):
        report = ipam.check()
    assert [a.ip for a in report.leaks] == [ip]
    assert any(key in r.getMessage() and "spec.interfaceName" in r.getMessage() for r in caplog.records)
    assert any("w2" in r.getMessage() for r in caplog.records)

"""l3net.ipam.report: the endpoints' addresses come from the model's typed WorkloadEndpoint spec (the decode every
reader shares), so ``ipam check`` counts as a user exactly the endpoints the agent acts on."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import pytest

import l3net.ipam.cli as ipam_cli
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


def test_a_dual_stack_cluster_is_audited_per_family(ds: MemoryDatastore, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # an IPv4 block beside an IPv6 pool (and the reverse) once raised TypeError out of ipam check and show
    add_pool(ds, "p4", "10.15.0.0/24")
    add_pool(ds, "p6", "fd00:15::/64", block_size=122)
    ipam = IPAM(ds, KEYS)
    v4 = ipam.auto_assign("net.k1", "a", {"containerID": "k1"})[0]
    v6 = ipam.assign("fd00:15::5", "net.k1", "a", {"containerID": "k1"})
    # the endpoint's address written long: the typed spec's address is the one IPAM allocated
    put_wep(ds, "w1", {"ipNetworks": [f"{v4}/32", "fd00:15:0:0:0:0:0:5/128"], "containerID": "k1"})
    report = ipam.check()
    assert report.ok and v6 == "fd00:15::5"
    assert [(p.name, p.in_use, p.blocks) for p in report.pools] == [("p4", 1, 1), ("p6", 1, 1)]

    monkeypatch.setattr(ipam_cli, "_ipam", lambda args: ipam)
    assert ipam_cli.cmd_show(argparse.Namespace(output="table", show_blocks=True)) == 0
    blocks = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("Block")]
    assert blocks == ["10.15.0.0/26", "fd00:15::/122"]

"""The quarantine as the operator reads it: the agent's status record and ``l3netctl node status``'s text."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from felix.calc import Model
from felix.quarantine import Quarantine
from felix.setaside import MAX_PER_CAUSE, SetAside, describe_key
from l3net import metrics
from l3net.keys import KeyLayout
from l3net.model import Resource
from l3net.nodestatus import format_quarantined, read_quarantined

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/q/")


@dataclass
class KV:
    value: bytes


class DictStore:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def get(self, key: str) -> KV | None:
        return KV(self.data[key]) if key in self.data else None


def test_quarantine_entries_metric_and_the_status_text() -> None:
    q = Quarantine()
    pol = Resource("GlobalNetworkPolicy", "web", {"selector": "all()"})
    wep = Resource("WorkloadEndpoint", "n1-k8s-q-eth0", {"node": "n1"}, namespace="default")
    q.last_good["GlobalNetworkPolicy/web"] = Resource("GlobalNetworkPolicy", "web", {})
    q.add("GlobalNetworkPolicy/web", pol, "iptables-restore refused table filter rc=2: bad", clock=lambda: 5.0)
    q.add("WorkloadEndpoint/default/n1-k8s-q-eth0", wep, "x" * 1000, clock=lambda: 6.0)
    report = q.report()
    assert [(e["object"], e["kind"], e["effect"]) for e in report] == [
        ("GlobalNetworkPolicy/web", "GlobalNetworkPolicy", "last good version"),
        ("WorkloadEndpoint/default/n1-k8s-q-eth0", "WorkloadEndpoint", "fail closed")]
    assert len(report[1]["reason"]) == 300  # bounded, whatever the kernel printed
    assert metrics.REGISTRY.get_sample_value("l3net_quarantined_objects", {"kind": "WorkloadEndpoint"}) == 1
    # Same content still there: stays; changed or deleted: lifted.
    assert q.excluded({"GlobalNetworkPolicy/web": pol, "WorkloadEndpoint/default/n1-k8s-q-eth0": wep}) == {
        "GlobalNetworkPolicy/web", "WorkloadEndpoint/default/n1-k8s-q-eth0"}
    assert q.excluded({"GlobalNetworkPolicy/web": Resource("GlobalNetworkPolicy", "web", {"order": 1})}) == set()
    assert metrics.REGISTRY.get_sample_value("l3net_quarantined_objects", {"kind": "WorkloadEndpoint"}) == 0

    ds = DictStore({KEYS.node_status("n1", "agent"): json.dumps({"ready": True, "quarantined": report}).encode(),
                    KEYS.node_status("n2", "agent"): json.dumps({"ready": True}).encode(),
                    KEYS.node_status("n3", "agent"): b"{not json"})
    got = read_quarantined(ds, KEYS, "n1")  # type: ignore[arg-type]
    assert got == report
    text = format_quarantined("n1", got)
    assert "Objects set aside on n1" in text
    assert "GlobalNetworkPolicy/web  cause: kernel refused  effect: last good version" in text
    assert read_quarantined(ds, KEYS, "n2") == [] and format_quarantined("n2", []).endswith("none")  # type: ignore[arg-type]
    assert read_quarantined(ds, KEYS, "n3") is None and read_quarantined(ds, KEYS, "n9") is None  # type: ignore[arg-type]


def test_describe_key_names_an_object_by_its_key_alone() -> None:
    assert describe_key(KEYS, KEYS.resource("workloadendpoints", "n1-k8s-q-eth0", "default")) == (
        "WorkloadEndpoint", "WorkloadEndpoint/default/n1-k8s-q-eth0")
    assert describe_key(KEYS, KEYS.resource("globalnetworkpolicies", "web")) == (
        "GlobalNetworkPolicy", "GlobalNetworkPolicy/web")
    assert describe_key(KEYS, KEYS.affinity("n1", "10.65.0.0/26")) == ("BlockAffinity", "BlockAffinity/n1/10.65.0.0/26")
    assert describe_key(KEYS, "/q/elsewhere/x") == ("Key", "/q/elsewhere/x")


def test_set_aside_lists_kernel_refusals_invalid_values_and_rejected_endpoints() -> None:
    model = Model(KEYS)
    pool = Resource("IPPool", "p", {"cidr": "10.65.0.0/16"})
    pol_key = KEYS.resource("globalnetworkpolicies", "broken")
    aff_key = KEYS.affinity("n1", "10.65.0.0/26")
    wep = Resource("WorkloadEndpoint", "n1-k8s-y-eth0", {"node": "n1", "orchestrator": "k8s", "pod": "y",
                                                         "endpoint": "eth0", "interfaceName": "caliy",
                                                         "ipNetworks": ["192.0.2.9/32"]}, namespace="default")
    wep_key = KEYS.resource("workloadendpoints", wep.name, "default")

    @dataclass
    class Upd:
        key: str
        value: bytes | None
        revision: int = 1

    model.apply([Upd(KEYS.resource("ippools", "p"), pool.to_json()), Upd(pol_key, b"{not json"),
                 Upd(aff_key, b'{"state": 7}'), Upd(wep_key, wep.to_json())])
    assert set(model.invalid) == {pol_key, aff_key}
    now = [100.0]
    aside = SetAside(KEYS, clock=lambda: now[0])
    kernel = [{"object": "NetworkPolicy/default/p", "kind": "NetworkPolicy", "effect": "absent", "reason": "rc=2",
               "since": 1.0}]
    got = aside.report(model, [wep_key], kernel)
    assert [(e["object"], e["cause"], e["effect"]) for e in got] == [
        ("NetworkPolicy/default/p", "kernel refused", "absent"),
        ("BlockAffinity/n1/10.65.0.0/26", "invalid value", "absent (invalid)"),
        ("GlobalNetworkPolicy/broken", "invalid value", "absent (invalid)"),
        ("WorkloadEndpoint/default/n1-k8s-y-eth0", "rejected", "no route, no policy (fail closed)")]
    assert got[3]["reason"] == "addresses outside every IPPool: 192.0.2.9/32" and got[3]["key"] == wep_key
    assert "not JSON" in got[2]["reason"] and all(e["since"] == 100.0 for e in got[1:])
    now[0] = 200.0
    assert [e["since"] for e in aside.report(model, [wep_key], [])] == [100.0, 100.0, 100.0]  # first seen
    model.apply([Upd(pol_key, None)])
    assert [e["object"] for e in aside.report(model, [], [])] == ["BlockAffinity/n1/10.65.0.0/26"]
    model.apply([Upd(pol_key, b"[]")])  # invalid again: a new entry, a new since
    assert [e["since"] for e in aside.report(model, [], [])] == [100.0, 200.0]
    text = format_quarantined("n1", got)
    assert "GlobalNetworkPolicy/broken  cause: invalid value  effect: absent (invalid)  reason: ValidationError" in text
    assert "stored value is not JSON" in text
    # Bounded, whatever the cluster holds.
    model.apply([Upd(KEYS.resource("globalnetworkpolicies", f"b{i}"), b"{") for i in range(MAX_PER_CAUSE + 5)])
    assert len(aside.report(model, [], [])) == MAX_PER_CAUSE

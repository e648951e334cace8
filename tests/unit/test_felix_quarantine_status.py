"""The quarantine as the operator reads it: the agent's status record and ``l3netctl node status``'s text."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from felix.quarantine import Quarantine, format_quarantined, read_quarantined
from l3net import metrics
from l3net.keys import KeyLayout
from l3net.model import Resource

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
    assert "Quarantined objects on n1" in text and "GlobalNetworkPolicy/web  effect: last good version" in text
    assert read_quarantined(ds, KEYS, "n2") == [] and format_quarantined("n2", []).endswith("none")  # type: ignore[arg-type]
    assert read_quarantined(ds, KEYS, "n3") is None and read_quarantined(ds, KEYS, "n9") is None  # type: ignore[arg-type]

"""Builders for the sync loop's input in the drivers rung: datastore updates (``Upd``) under ``KEYS``, and a
model that already holds the IPPool the workloads live in.

``BASE`` is a small world: three workloads (two on n1, one on n2) and n1's and n2's block affinities,
one of n1's pending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from felix.calc import Model
from l3net.constants import WORKLOAD_ROUTE_METRIC
from l3net.keys import KeyLayout
from l3net.model.resource import Resource
from l3net.model.validation import workload_endpoint_name
from tests.builders import Upd

M = WORKLOAD_ROUTE_METRIC
KEYS = KeyLayout("/t/")




def wep(pod: str, node: str, ip: str, iface: str) -> Upd:
    name = workload_endpoint_name(node, pod, "eth0")
    res = Resource(kind="WorkloadEndpoint", name=name, namespace="default",
                   spec={"node": node, "orchestrator": "k8s", "workload": "", "pod": pod, "endpoint": "eth0",
                         "ipNetworks": [ip], "interfaceName": iface})
    return Upd(KEYS.resource("workloadendpoints", name, "default"), res.to_json())


def pooled_model(cidr: str = "10.65.0.0/16") -> Model:
    """A model that already holds the IPPool the tests' workloads live in (the agent routes pool addresses only)."""
    m = Model(KEYS)
    m.apply([Upd(KEYS.resource("ippools", "test-pool"), Resource(kind="IPPool", name="test-pool",
                                                                 spec={"cidr": cidr}).to_json())])
    return m


def affinity(node: str, cidr: str, state: str = "confirmed") -> Upd:
    return Upd(KEYS.affinity(node, cidr), json.dumps({"state": state}).encode())


def res(plural: str, r: Resource) -> Upd:
    return Upd(KEYS.resource(plural, r.name, r.namespace), r.to_json())


BASE = [wep("a", "n1", "10.65.0.2/32", "cali1"), wep("b", "n1", "10.65.0.3/32", "cali2"),
        wep("c", "n2", "10.65.0.66/32", "cali9"), affinity("n1", "10.65.0.0/26"),
        affinity("n1", "10.65.5.0/26", "pending"), affinity("n2", "10.65.0.64/26")]


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait on the running event loop until ``cond()`` holds (polled every 10 ms, up to 5 s)."""
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")

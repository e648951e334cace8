"""felix.calc's indexes: CoverIndex answers like a scan of subnet_of, and the by-node index follows the model."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix.calc import CoverIndex, Model
from l3net.keys import KeyLayout

pytestmark = pytest.mark.unit

v4 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
               st.integers(0, 2**32 - 1), st.integers(8, 32))
v6 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
               st.integers(0, 2**128 - 1), st.integers(32, 128))
nets = st.one_of(v4, v6)


@given(st.lists(nets, max_size=12), nets)
def test_cover_index_agrees_with_a_scan(blocks, net) -> None:
    want = any(net.version == b.version and net.subnet_of(b) for b in blocks)
    assert (net in CoverIndex(blocks)) == want


def test_cover_index_inside_and_outside() -> None:
    idx = CoverIndex([ipaddress.ip_network("10.0.0.64/26"), ipaddress.ip_network("fd00::/64")])
    assert ipaddress.ip_network("10.0.0.70/32") in idx
    assert ipaddress.ip_network("10.0.0.64/26") in idx
    assert ipaddress.ip_network("10.0.0.0/25") not in idx  # wider than the block
    assert ipaddress.ip_network("10.0.0.130/32") not in idx
    assert ipaddress.ip_network("fd00::5/128") in idx
    assert ipaddress.ip_network("::a00:46/128") not in idx  # same bits, other family


@dataclass
class U:
    key: str
    value: bytes | None
    revision: int


def _wep(keys: KeyLayout, pod: str, node: str) -> U:
    name = f"{node}-k8s-{pod}-eth0"
    doc = {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0", "containerID": pod,
                    "ipNetworks": ["10.1.0.2/32"], "interfaceName": f"cali{pod}", "mac": "ee:ee:ee:ee:ee:ee"}}
    return U(keys.resource("workloadendpoints", name, "default"), json.dumps(doc).encode(), 1)


def test_by_node_index_follows_moves_deletes_and_bad_values() -> None:
    keys = KeyLayout("/t/")
    m = Model(keys)
    a = _wep(keys, "a", "n1")
    aff = U(keys.affinity("n1", "10.1.0.0/26"), b'{"state":"confirmed"}', 1)
    m.apply([a, _wep(keys, "b", "n2"), aff])
    assert [w.key for w in m.workloads_on("n1")] == [a.key]
    assert [w.dsts for w in m.workloads_on("n1")] == [("10.1.0.2/32",)]
    assert [str(x.cidr) for x in m.affinities_of("n1")] == ["10.1.0.0/26"]
    # n1's key now holds n2's endpoint (its name does not match the key, so it is invalid, as
    # l3netctl reads it too): it leaves n1's bucket and joins no other.
    moved = _wep(keys, "a", "n2")
    m.apply([U(a.key, moved.value, 2)])
    assert m.workloads_on("n1") == [] and len(m.workloads_on("n2")) == 1 and a.key in m.invalid
    assert "does not match its key" in m.invalid[a.key]
    m.apply([moved, U(a.key, b"not json", 3), U(aff.key, None, 3)])
    assert len(m.workloads_on("n2")) == 2
    m.apply([U(moved.key, None, 4)])
    assert len(m.workloads_on("n2")) == 1 and m.affinities_of("n1") == []
    assert sum(len(m.workloads_on(n)) for n in ("n1", "n2")) == len(m.workloads)

"""IPAM against a real etcd: concurrent allocation from many threads and nodes, and the ``l3netctl ipam`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.ipam import IPAM
from l3net.keys import KeyLayout

pytestmark = pytest.mark.integration

CTL = str(Path(sys.executable).parent / "l3netctl")


def put_pool(ds: EtcdDatastore, keys: KeyLayout, cidr: str, block_size: int) -> None:
    doc = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
           "spec": {"cidr": cidr, "blockSize": block_size}}
    ds.put(keys.resource("ippools", "p"), json.dumps(doc).encode())
    for node in ("n1", "n2", "n3"):
        ds.put(keys.resource("nodes", node), json.dumps({"apiVersion": "l3net.io/v1", "kind": "Node",
                                                          "metadata": {"name": node}, "spec": {}}).encode())


def test_concurrent_allocations_from_three_nodes_are_distinct_and_consistent(datastore: EtcdDatastore,
                                                                             key_layout: KeyLayout) -> None:
    put_pool(datastore, key_layout, "10.60.0.0/24", 28)
    ipam = IPAM(datastore, key_layout)
    jobs = [(f"net.w{i}", f"n{1 + i % 3}") for i in range(60)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        got = list(pool.map(lambda j: ipam.auto_assign(j[0], j[1], {"containerID": j[0]})[0], jobs))
    assert len(set(got)) == 60
    report = ipam.check()
    assert not (report.double_allocations or report.inconsistencies or report.orphaned_affinities)
    assert len(report.allocations) == 60
    # each address sits in a block affine to the node that asked for it (no borrowing was needed)
    assert report.borrowed == []
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda j: ipam.release_handle(j[0]), jobs))
    report = ipam.check()
    assert report.ok and report.allocations == []


def test_ctl_check_release_and_configure(datastore: EtcdDatastore, key_layout: KeyLayout, etcd_server) -> None:
    put_pool(datastore, key_layout, "10.61.0.0/24", 26)
    ipam = IPAM(datastore, key_layout)
    leaked = ipam.auto_assign("net.leak", "n1", {})[0]
    env = {**os.environ, "L3NET_ETCD_ENDPOINTS": etcd_server.endpoints, "L3NET_ETCD_PREFIX": key_layout.prefix}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CTL, "ipam", *args], capture_output=True, text=True, env=env, timeout=60)

    check = ctl("check")
    assert check.returncode == 1 and f"leaked address {leaked}" in check.stdout, check
    show = ctl("show", "--show-blocks")
    assert show.returncode == 0 and "10.61.0.0/26" in show.stdout and "host:n1" in show.stdout
    rel = ctl("release", "--ip", leaked)
    assert rel.returncode == 0 and f"released {leaked}" in rel.stdout
    assert ctl("check").returncode == 0
    assert ctl("release", "--handle", "net.leak").stdout.startswith("nothing to release")
    conf = ctl("configure", "--strictaffinity=true", "--max-blocks-per-host", "3")
    assert conf.returncode == 0 and "StrictAffinity: true" in conf.stdout and "MaxBlocksPerHost: 3" in conf.stdout
    assert ipam.config().strict_affinity and ipam.config().max_blocks_per_host == 3
    bad = ctl("configure", "--strictaffinity=maybe")
    assert bad.returncode == 1
    down = subprocess.run([CTL, "ipam", "check"], capture_output=True, text=True, timeout=60,
                          env={**env, "L3NET_ETCD_ENDPOINTS": "unix:///nonexistent/sock"})
    assert down.returncode == 2

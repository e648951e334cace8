"""Issue 12, CNI during an etcd outage: an ADD while etcd is hung (SIGSTOP) or down returns CNI error 11
("try again later") within 5 s and leaves nothing behind; once etcd is back the same ADD succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.lab.etcdserver import EtcdServer
from tests.netns.cni_rig import CNIRig, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]

ERROR_WITHIN = 5.0  # the bound


@pytest.fixture
def outage_rig(netns_factory, tmpfs_dir: Path, key_layout, tmp_path: Path) -> Iterator[tuple[CNIRig, EtcdServer]]:
    server = EtcdServer(tmpfs_dir / f"cni-outage-{uuid.uuid4().hex[:6]}", name="cnioutage")
    server.start()
    ds = EtcdDatastore(f"unix://{server.socket_path}")
    try:
        rig = make_rig(netns_factory, server, key_layout, ds, tmp_path)
        rig.etcd_endpoints = f"unix://{server.socket_path}"
        rig.add_pool("pool1", "10.242.0.0/24")
        yield rig, server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        ds.close()
        server.stop()


def add_fails_fast(rig: CNIRig, cid: str) -> None:
    ns = rig.pod_ns(cid)
    t0 = time.monotonic()
    res = rig.invoke("node-1", "ADD", cid, ns, pod=f"pod-{cid}")
    took = time.monotonic() - t0
    print(f"\nMEASURED CNI ADD during the outage answered in {took:.2f}s: {res.out}")
    assert res.rc == 1 and res.out.get("code") == 11, res
    assert "try again later" in res.out["msg"], res.out
    assert took <= ERROR_WITHIN, f"error 11 after {took:.2f}s"
    assert "Traceback" not in res.stderr
    assert rig.cali_links("node-1") == [] and rig.our_routes("node-1") == {}
    pod_links = subprocess.run(["ip", "-n", ns.rsplit("/", 1)[1], "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
    assert "eth0" not in pod_links


def test_add_during_hung_and_down_etcd_is_error_11_and_leaves_nothing(outage_rig) -> None:
    rig, server = outage_rig
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        add_fails_fast(rig, "hung")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert rig.leftovers() == []

    server.pause()
    add_fails_fast(rig, "down")
    server.start()
    assert rig.leftovers() == []

    ns = rig.pod_ns("back")
    res = rig.invoke("node-1", "ADD", "back", ns, pod="pod-back")
    assert res.rc == 0, res
    assert len(res.out["ips"]) == 1 and rig.cali_links("node-1")
    assert rig.invoke("node-1", "DEL", "back", ns, pod="pod-back").rc == 0
    assert rig.leftovers() == []

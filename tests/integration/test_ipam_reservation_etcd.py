"""IPReservation honoured by IPAM against a real etcd: reserved addresses are never auto-assigned."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.ipam import IPAM
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer

pytestmark = pytest.mark.integration

CTL = str(Path(sys.executable).parent / "l3netctl")

RESERVATION = """\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata:
  name: keep-out
spec:
  reservedCIDRs:
  - 10.61.0.0/30
  - 10.61.0.5
  - 10.61.0.16/28
"""
RESERVED = {str(a) for a in ipaddress.ip_network("10.61.0.0/30")} | {"10.61.0.5"} | \
    {str(a) for a in ipaddress.ip_network("10.61.0.16/28")}


def test_reserved_addresses_are_never_auto_assigned_until_the_reservation_goes(
        datastore: EtcdDatastore, key_layout: KeyLayout, etcd_server: EtcdServer, tmp_path: Path) -> None:
    pool = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
            "spec": {"cidr": "10.61.0.0/24", "blockSize": 28}}
    datastore.put(key_layout.resource("ippools", "p"), json.dumps(pool).encode())
    datastore.put(key_layout.resource("nodes", "n1"), json.dumps({"apiVersion": "l3net.io/v1", "kind": "Node",
                                                               "metadata": {"name": "n1"}, "spec": {}}).encode())
    manifest = tmp_path / "reservation.yaml"
    manifest.write_text(RESERVATION)
    env = {**os.environ, "L3NET_ETCD_ENDPOINTS": etcd_server.endpoints, "L3NET_ETCD_PREFIX": key_layout.prefix}
    applied = subprocess.run([CTL, "apply", "-f", str(manifest)], capture_output=True, text=True, env=env,
                             timeout=60)
    assert applied.returncode == 0, applied.stderr

    ipam = IPAM(datastore, key_layout)
    got = [ipam.auto_assign(f"net.w{i}", "n1")[0] for i in range(20)]
    assert len(set(got)) == 20
    assert not set(got) & RESERVED
    # The wholly reserved block is never claimed; the first block gives its 11 unreserved addresses.
    blocks = {cidr for _, cidr in ipam.affinities("n1")}
    assert blocks == {"10.61.0.0/28", "10.61.0.32/28"}
    assert sum(ipaddress.ip_address(ip) in ipaddress.ip_network("10.61.0.0/28") for ip in got) == 11
    # Asked for by name, a reserved address is still given (Calico's rule: reservations bind auto-assignment).
    assert ipam.assign("10.61.0.1", "net.static", "n1") == "10.61.0.1"
    report = ipam.check()
    assert not (report.double_allocations or report.inconsistencies or report.orphaned_affinities)

    datastore.delete(key_layout.resource("ipreservations", "keep-out"))
    more = [ipam.auto_assign(f"net.v{i}", "n1")[0] for i in range(8)]
    # With the reservation gone the remaining free addresses of the first block are used again.
    assert {"10.61.0.0", "10.61.0.2", "10.61.0.3", "10.61.0.5"} <= set(more)


def test_an_invalid_reservation_is_absent_and_logged_and_the_valid_ones_still_bind(
        datastore: EtcdDatastore, key_layout: KeyLayout, caplog: pytest.LogCaptureFixture) -> None:
    pool = {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
            "spec": {"cidr": "10.62.0.0/24", "blockSize": 28}}
    datastore.put(key_layout.resource("ippools", "p"), json.dumps(pool).encode())
    datastore.put(key_layout.resource("nodes", "n1"), json.dumps({"apiVersion": "l3net.io/v1", "kind": "Node",
                                                               "metadata": {"name": "n1"}, "spec": {}}).encode())

    def reservation(name: str, cidrs: list[str]) -> bytes:
        return json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                           "metadata": {"name": name}, "spec": {"reservedCIDRs": cidrs}}).encode()

    datastore.put(key_layout.resource("ipreservations", "good"), reservation("good", ["10.62.0.0/31"]))
    bad = key_layout.resource("ipreservations", "bad")
    datastore.put(bad, reservation("bad", ["10.62.0.3/31"]))   # host bits: the model refuses it
    ipam = IPAM(datastore, key_layout)
    assert ipam.reservations().networks == (ipaddress.ip_network("10.62.0.0/31"),)
    assert ipam.auto_assign("net.a", "n1")[0] == "10.62.0.2"   # the invalid one reserves nothing
    assert f"ignoring malformed IPReservation key={bad}" in caplog.text and "spec.reservedCIDRs" in caplog.text
    datastore.put(bad, reservation("bad", ["10.62.0.3/31"]).replace(b"/31", b"/32"))   # fixed: it binds again
    assert ipam.auto_assign("net.b", "n1")[0] == "10.62.0.4"

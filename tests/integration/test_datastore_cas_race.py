"""Compare-and-swap under concurrent writers: separate OS processes racing on one etcd key.

Each worker is ``python -c WORKER``: it connects, prints ``ready``, waits for ``go`` on stdin (so
both start together), runs its part and prints one JSON result line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer

pytestmark = pytest.mark.integration

WORKER = textwrap.dedent("""
    import json, sys
    from l3net.datastore import EtcdDatastore
    from l3net.errors import Conflict

    endpoint, mode, key, arg = sys.argv[1:5]
    ds = EtcdDatastore(endpoint)
    ds.revision()  # connected before the start line
    print("ready", flush=True)
    sys.stdin.readline()
    out = {}
    if mode == "increment":  # read, add one, CAS-write; retry on Conflict
        conflicts = 0
        for _ in range(int(arg)):
            while True:
                kv = ds.get(key)
                try:
                    ds.update(key, str(int(kv.value) + 1).encode(), kv.mod_revision)
                    break
                except Conflict:
                    conflicts += 1
        out = {"conflicts": conflicts}
    elif mode == "create":  # create-if-absent: exactly one creator may win
        try:
            ds.create(key, arg.encode())
            out = {"won": True}
        except Conflict:
            out = {"won": False}
    elif mode == "update-at":  # both were handed the same revision: only the first CAS may land
        rev = int(sys.stdin.readline())
        try:
            ds.update(key, arg.encode(), rev)
            out = {"won": True}
        except Conflict:
            out = {"won": False}
    print(json.dumps(out), flush=True)
""")


def race(mode: str, key: str, workers: list[tuple[str, str]], feed: str = "") -> list[dict[str, Any]]:
    """Start one worker per (endpoint, arg), release them together, return their results in order."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, endpoint, mode, key, arg], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for endpoint, arg in workers]
    try:
        for p in procs:
            assert p.stdout is not None and p.stderr is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", f"worker did not start: {line!r}"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n" + feed)
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_processes_incrementing_with_cas_lose_no_update(etcd_server: EtcdServer, key_layout: KeyLayout) -> None:
    n = 40
    key = key_layout.prefix + "counter"
    ds = EtcdDatastore(etcd_server.endpoints)
    ds.create(key, b"0")
    assert etcd_server.tcp_endpoint is not None
    # One worker over the unix socket, one over TCP: two processes, two transports, one key.
    results = race("increment", key, [(etcd_server.unix_endpoint, str(n)), (etcd_server.tcp_endpoint, str(n))])
    kv = ds.get(key)
    assert kv is not None and int(kv.value) == 2 * n, f"lost updates: {kv} {results}"
    assert kv.version == 2 * n + 1, "exactly one write per increment, none lost or doubled"


def test_create_race_has_exactly_one_winner(etcd_server: EtcdServer, key_layout: KeyLayout) -> None:
    key = key_layout.prefix + "claim"
    results = race("create", key, [(etcd_server.endpoints, "p1"), (etcd_server.endpoints, "p2")])
    assert sorted(r["won"] for r in results) == [False, True]
    winner = ["p1", "p2"][[r["won"] for r in results].index(True)]
    kv = EtcdDatastore(etcd_server.endpoints).get(key)
    assert kv is not None and kv.value == winner.encode() and kv.version == 1


def test_cas_with_the_same_revision_has_exactly_one_winner(etcd_server: EtcdServer,
                                                           key_layout: KeyLayout) -> None:
    key = key_layout.prefix + "block"
    ds = EtcdDatastore(etcd_server.endpoints)
    rev = ds.create(key, b"base")
    # Both read revision `rev` and both try to write on top of it: a lost update unless CAS works.
    results = race("update-at", key, [(etcd_server.endpoints, "p1"), (etcd_server.endpoints, "p2")], feed=f"{rev}\n")
    assert sorted(r["won"] for r in results) == [False, True]
    winner = ["p1", "p2"][[r["won"] for r in results].index(True)]
    kv = ds.get(key)
    assert kv is not None and kv.value == winner.encode() and kv.version == 2

"""tests.etcd_fixtures: a real etcd and per-test key prefixes, for the rungs that use etcd.

Imported by the conftest.py of each rung that provides them (integration, netns, e2e): the unit and
drivers rungs cannot ask for a real etcd at all. Session-scoped per rung: each rung that uses etcd
starts one, on tmpfs, stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer, free_port
from tests.run_tag import RUN_TAG

__all__ = ["datastore", "etcd_server", "key_layout", "tmpfs_dir"]


@pytest.fixture(scope="session")
def tmpfs_dir() -> Iterator[Path]:
    """A scratch directory on tmpfs (/dev/shm) for etcd data: etcd 3.4 cannot skip fsync."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    d = base / f"l3net-{RUN_TAG}-{uuid.uuid4().hex[:4]}"  # one per rung that asks for it
    d.mkdir(parents=True, exist_ok=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server(tmpfs_dir: Path) -> Iterator[EtcdServer]:
    """One real etcd for the rung's session: unix socket + loopback port, data on tmpfs."""
    server = EtcdServer(tmpfs_dir / "etcd", client_port=free_port(), name=tmpfs_dir.name.removeprefix("l3net-"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key_layout() -> KeyLayout:
    """A key prefix no other test uses, so tests share one etcd without seeing each other."""
    return KeyLayout(prefix=f"/{RUN_TAG}/{uuid.uuid4().hex[:8]}/")


@pytest.fixture
def datastore(etcd_server: EtcdServer) -> Iterator[EtcdDatastore]:
    ds = EtcdDatastore(etcd_server.endpoints)
    try:
        yield ds
    finally:
        ds.close()

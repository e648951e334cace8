"""Shared fixtures: a real etcd server, unique key prefixes, and network namespaces.

Every namespace, veth and process a test makes carries the run's unique prefix
and is removed in a finalizer, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from l3net import netns
from l3net.datastore import EtcdDatastore
from l3net.etcdserver import EtcdServer, free_port
from l3net.keys import KeyLayout

# Shared 2-core machines: no per-example deadline (timing is bench/'s job), no example database
# left in the work tree.
settings.register_profile("l3net", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("l3net")

IS_ROOT = os.geteuid() == 0
# Unique per pytest process: "lt" + 4 hex. Keeps interface names under 15 chars.
RUN_TAG = "lt" + uuid.uuid4().hex[:4]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root (network namespaces)")
    skip_etcd = pytest.mark.skip(reason="needs Debian's etcd-server on PATH (make setup)")
    for item in items:
        if "netns" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)
        if "integration" in item.keywords and shutil.which("etcd") is None:
            item.add_marker(skip_etcd)


@pytest.fixture(scope="session")
def tmpfs_dir() -> Iterator[Path]:
    """A scratch directory on tmpfs (/dev/shm) for etcd data: etcd 3.4 cannot skip fsync."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    d = base / f"l3net-{RUN_TAG}"
    d.mkdir(parents=True, exist_ok=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server(tmpfs_dir: Path) -> Iterator[EtcdServer]:
    """One real etcd for the session: unix socket + loopback port, data on tmpfs."""
    server = EtcdServer(tmpfs_dir / "etcd", client_port=free_port(), name=RUN_TAG)
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


class NetnsFactory:
    """Creates namespaces named ``<run tag><suffix>`` and removes them all at the end."""

    def __init__(self) -> None:
        self.tag = RUN_TAG + uuid.uuid4().hex[:2]
        self.created: list[str] = []
        self.pids: list[int] = []

    def __call__(self, suffix: str) -> str:
        name = f"{self.tag}{suffix}"
        netns.delete(name)
        netns.create(name)
        self.created.append(name)
        return name

    def veth(self, a_ns: str, a_if: str, b_ns: str, b_if: str) -> None:
        """A veth pair between two of our namespaces (never touching the root namespace)."""
        tmp_a, tmp_b = f"{self.tag}a{len(self.created)}", f"{self.tag}b{len(self.created)}"
        subprocess.run(["ip", "netns", "exec", a_ns, "ip", "link", "add", tmp_a, "type", "veth",
                        "peer", "name", tmp_b, "netns", b_ns], check=True)
        netns.run(a_ns, ["ip", "link", "set", tmp_a, "name", a_if, "up"])
        netns.run(b_ns, ["ip", "link", "set", tmp_b, "name", b_if, "up"])

    def cleanup(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        for name in reversed(self.created):
            netns.delete(name)


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()

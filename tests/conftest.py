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
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer, free_port

# Shared 2-core machines: no per-example deadline (timing is bench/'s job), no example database
# left in the work tree.
settings.register_profile("l3net", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("l3net")

IS_ROOT = os.geteuid() == 0
# Unique per pytest process: "lt" + 4 hex. Keeps interface names under 15 chars.
RUN_TAG = "lt" + uuid.uuid4().hex[:4]


# `make test` sets this: there, a tool or privilege that .ci/setup provides is required, and the run
# fails on any skip but the named ones below. Elsewhere (a laptop without root) tests skip with a reason.
STRICT = os.environ.get("L3NET_STRICT_SKIPS") == "1"

# The only skips a strict run accepts: (test name prefix, start of the skip reason, why it can be true).
ALLOWED_SKIPS: tuple[tuple[str, str, str], ...] = (
    ("test_sctp", "kernel has no SCTP sockets",
     "kernels built without CONFIG_IP_SCTP (this project's 2-core VMs) cannot open SCTP sockets at all"),
    ("test_shipped_topologies_valid_containerlab", "containerlab's schema is absent",
     "the schema is shared data read from ../shared/schemas/, absent from a lone clone"),
    ("test_schema_catches_what_containerlab_refuses", "containerlab's schema is absent",
     "the same shared schema"),
)
_unexpected_skips: list[str] = []


def _allowed_skip(name: str, reason: str) -> bool:
    return any(name.startswith(test) and reason.startswith(why) for test, why, _ in ALLOWED_SKIPS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not (STRICT and report.skipped) or report.when not in ("setup", "call"):
        return
    if isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    else:
        reason = str(report.longrepr)
    name = report.nodeid.rsplit("::", 1)[-1]
    if not _allowed_skip(name, reason):
        _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips:
        print("\nL3NET_STRICT_SKIPS: these tests skipped, and only the skips in tests/conftest.py "
              "ALLOWED_SKIPS may under make test:")
        for line in _unexpected_skips:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STRICT:
        missing = [what for what, ok in (("root", IS_ROOT), ("etcd (Debian etcd-server)", shutil.which("etcd")))
                   if not ok]
        if missing:
            raise pytest.UsageError(f"make test needs {' and '.join(missing)}: run it as root after .ci/setup")
        return
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

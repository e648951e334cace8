"""The ladder's policy, for every rung: what may skip, and what a strict run requires.

The fixtures of a rung live in that rung's conftest.py (tests/{unit,drivers,integration,netns,e2e}),
which takes real resources from tests.etcd_fixtures and tests.netns_fixtures, so a rung can only use
what it is allowed: unit and drivers tests cannot even ask for an etcd or a namespace. Every
namespace, veth and process a test makes carries the run's unique tag (tests.run_tag) and is removed
in a finalizer, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.netns_fixtures import NetnsFactory
from tests.run_tag import RUN_TAG

# NetnsFactory and RUN_TAG lived here; re-exported for branches in flight (import from their modules).
__all__ = ["RUN_TAG", "NetnsFactory"]

# Shared 2-core machines: no per-example deadline (timing is bench/'s job), no example database
# left in the work tree.
settings.register_profile("l3net", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("l3net")

IS_ROOT = os.geteuid() == 0


_PYTEST_PID = os.getpid()


def _interrupt_on_sigterm(signum: int, _frame: object) -> None:
    if os.getpid() != _PYTEST_PID:
        # A fork of pytest (pyroute2's netns helper is one, and pyroute2 ends it with SIGTERM) must die as
        # before: unwinding there would run the suspended fixtures' finalizers in the child, which would
        # delete the namespaces the parent's test is still using.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout, or someone stopping a slow run by PID) would end pytest without running a
    # single finalizer, leaving the run's namespaces, veths and etcd servers behind. As KeyboardInterrupt
    # it unwinds the running test and every fixture above it, as Ctrl-C does.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


# `make test` sets this: there, a tool or privilege that .ci/setup provides is required, and the run
# fails on any skip but the named ones below. Elsewhere (a laptop without root) tests skip with a reason.
STRICT = os.environ.get("L3NET_STRICT_SKIPS") == "1"

# The only skips a strict run accepts: (test name prefix, start of the skip reason, why it can be true).
ALLOWED_SKIPS: tuple[tuple[str, str, str], ...] = (
    ("test_sctp", "kernel has no SCTP sockets",
     "kernels built without CONFIG_IP_SCTP (this project's 2-core VMs) refuse socket(AF_INET, SOCK_STREAM, "
     "IPPROTO_SCTP) with EPROTONOSUPPORT; the test skips on that errno (or ESOCKTNOSUPPORT) only"),
) + (() if os.environ.get("CI") == "true" else (
    # ../shared/schemas/README.md: read containerlab's schema from there, never copy it, and skip the check
    # when the folder is absent (a clone without ../shared beside it). CI always has it: there it must run.
    ("test_", "containerlab's schema is absent",
     "the schema is shared data read from ../shared/schemas/, which a clone made elsewhere does not have"),
))
# The tools .ci/setup installs that tests call by name: a strict run refuses to start without them.
STRICT_TOOLS: tuple[tuple[str, str], ...] = (
    ("etcd", "Debian etcd-server"),
    ("openssl", "Debian openssl"),
)
_unexpected_skips: list[str] = []


def _allowed_skip(name: str, reason: str) -> bool:
    return any(name.startswith(test) and reason.startswith(why) for test, why, _ in ALLOWED_SKIPS)


def _note_skip(nodeid: str, longrepr: object) -> None:
    """Count one skip against ALLOWED_SKIPS. A test's name is the nodeid's last part; a module or class
    skipped while collected (module-level pytest.skip, importorskip) is named by its file or class."""
    reason = str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
    name = nodeid.rsplit("::", 1)[-1] if "::" in nodeid else Path(nodeid).name
    if not _allowed_skip(name, reason):
        _unexpected_skips.append(f"{nodeid}: {reason}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if STRICT and report.skipped and report.when in ("setup", "call"):
        _note_skip(report.nodeid, report.longrepr)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # A skip raised while a module is imported never reaches pytest_runtest_logreport: the module's
    # tests are not even collected, so it would hide every one of them from the policy.
    if STRICT and report.skipped:
        _note_skip(report.nodeid, report.longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips:
        print("\nL3NET_STRICT_SKIPS: these tests skipped, and only the skips in tests/conftest.py "
              "ALLOWED_SKIPS may under make test:")
        for line in _unexpected_skips:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


RUNGS = ("unit", "drivers", "integration", "netns", "e2e")
_TESTS_DIR = Path(__file__).parent


def _unmarked_for_their_rung(items: list[pytest.Item]) -> list[str]:
    """Tests under tests/<rung>/ without exactly the <rung> marker: a test belongs to one rung (what it also
    needs is a needs_root/needs_etcd marker, not a second rung)."""
    out = []
    for item in items:
        parts = item.path.relative_to(_TESTS_DIR).parts if item.path.is_relative_to(_TESTS_DIR) else ()
        if len(parts) <= 1 or parts[0] not in RUNGS:
            continue
        rungs = [r for r in RUNGS if item.get_closest_marker(r) is not None]
        if rungs != [parts[0]]:
            out.append(f"{item.nodeid} (rung markers {rungs}, wants [{parts[0]!r}])")
    return out


def needs_root(item: pytest.Item) -> bool:
    return item.get_closest_marker("netns") is not None or item.get_closest_marker("needs_root") is not None


def needs_etcd(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None or item.get_closest_marker("needs_etcd") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = _unmarked_for_their_rung(items)
    if unmarked:
        raise pytest.UsageError("every test carries its directory's rung marker and no other: "
                                + ", ".join(unmarked[:10]))
    if STRICT:
        missing = ([] if IS_ROOT else ["root"]) + [f"{tool} ({package})" for tool, package in STRICT_TOOLS
                                                   if shutil.which(tool) is None]
        if missing:
            raise pytest.UsageError(f"make test needs {' and '.join(missing)}: run it as root after .ci/setup")
        return
    skip_root = pytest.mark.skip(reason="needs root (network namespaces)")
    skip_etcd = pytest.mark.skip(reason="needs Debian's etcd-server on PATH (make setup)")
    for item in items:
        if needs_root(item) and not IS_ROOT:
            item.add_marker(skip_root)
        if needs_etcd(item) and shutil.which("etcd") is None:
            item.add_marker(skip_etcd)

"""A pytest run stopped with SIGTERM still runs its finalizers (tests/conftest.py), so a stopped run
leaves no namespace, veth or etcd server behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

_INNER_TEST = '''
import time
from pathlib import Path

import pytest

OUT = Path({out!r})


@pytest.fixture(scope="session")
def session_resource():
    yield
    (OUT / "session-finalized").write_text("yes")


@pytest.fixture
def test_resource(session_resource):
    yield
    (OUT / "test-finalized").write_text("yes")


def test_runs_until_stopped(test_resource):
    (OUT / "started").write_text("yes")
    time.sleep(120)
'''


def _run_and_terminate(tmp_path: Path, plugins: list[str]) -> tuple[int, Path]:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "test_inner.py").write_text(_INNER_TEST.format(out=str(out)))
    env = {k: v for k, v in os.environ.items() if k != "L3NET_STRICT_SKIPS"} | {"PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins, str(tmp_path / "test_inner.py")]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (out / "started").exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "inner pytest ended early"
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def test_sigterm_unwinds_every_fixture_of_the_running_test(tmp_path: Path) -> None:
    code, out = _run_and_terminate(tmp_path, ["-p", "tests.conftest"])
    assert code == pytest.ExitCode.INTERRUPTED
    assert (out / "test-finalized").exists() and (out / "session-finalized").exists()


def test_without_the_handler_sigterm_skips_the_finalizers(tmp_path: Path) -> None:
    # The control: plain pytest dies on SIGTERM with nothing torn down, which is what the handler is for.
    code, out = _run_and_terminate(tmp_path, [])
    assert code == -signal.SIGTERM
    assert not (out / "test-finalized").exists() and not (out / "session-finalized").exists()


_FORKING_TEST = '''
import os
import signal
import time
from pathlib import Path

import pytest

OUT = Path({out!r})


@pytest.fixture
def resource():
    yield
    (OUT / "finalized").write_text(str(os.getpid()))


def test_a_forked_child_dies_of_sigterm_without_running_the_parents_finalizers(resource):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(3)
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert [p.name for p in OUT.iterdir()] == []
'''


def test_a_fork_of_pytest_still_dies_of_sigterm(tmp_path: Path) -> None:
    # pyroute2's namespace helper is a fork that pyroute2 ends with SIGTERM: unwinding there would run the
    # parent's suspended fixture finalizers in the child (it deleted a live test's namespaces once).
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "test_fork.py").write_text(_FORKING_TEST.format(out=str(out)))
    env = {k: v for k, v in os.environ.items() if k != "L3NET_STRICT_SKIPS"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           str(tmp_path / "test_fork.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Finalized once, by the parent (the child, had it unwound, would have written first and failed the test).
    assert [p.name for p in out.iterdir()] == ["finalized"]

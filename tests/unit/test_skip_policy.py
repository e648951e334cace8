"""tests/conftest.py's strict skip policy, run for real: under L3NET_STRICT_SKIPS=1 a skip outside
ALLOWED_SKIPS fails the run, whether it is raised while a test runs or while its module is collected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Only the skip policy's hooks: the strict root/etcd/openssl check of collection does not belong in a unit test.
_INNER_CONFTEST = "from tests.conftest import pytest_collectreport, pytest_runtest_logreport, pytest_sessionfinish\n"


def _strict_run(tmp_path: Path, files: dict[str, str]) -> tuple[int, str]:
    (tmp_path / "conftest.py").write_text(_INNER_CONFTEST)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = os.environ | {"PYTHONPATH": str(ROOT), "L3NET_STRICT_SKIPS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_an_allowed_skip_passes(tmp_path: Path) -> None:
    code, out = _strict_run(tmp_path, {"test_a.py": (
        "import pytest\n"
        "def test_sctp():\n"
        "    pytest.skip('kernel has no SCTP sockets: socket(...) failed with EPROTONOSUPPORT')\n"
        "def test_ok():\n"
        "    pass\n")})
    assert code == 0, out
    assert "L3NET_STRICT_SKIPS" not in out


def test_a_skip_while_running_fails_the_run(tmp_path: Path) -> None:
    code, out = _strict_run(tmp_path, {"test_a.py": (
        "import pytest\n"
        "def test_x():\n"
        "    pytest.skip('some tool is missing')\n")})
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "test_a.py::test_x: some tool is missing" in out


@pytest.mark.parametrize("module", [
    "import pytest\npytest.skip('no tool here', allow_module_level=True)\ndef test_x():\n    pass\n",
    "import pytest\npytest.importorskip('l3net_no_such_module')\ndef test_x():\n    pass\n",
], ids=["module-level-skip", "importorskip"])
def test_a_skip_while_collecting_fails_the_run(tmp_path: Path, module: str) -> None:
    code, out = _strict_run(tmp_path, {"test_mod.py": module, "test_ok.py": "def test_ok():\n    pass\n"})
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "L3NET_STRICT_SKIPS" in out and "test_mod.py: " in out, out


def test_an_allowed_name_with_another_reason_fails_the_run(tmp_path: Path) -> None:
    code, out = _strict_run(tmp_path, {"test_a.py": (
        "import pytest\n"
        "def test_sctp():\n"
        "    pytest.skip('the namespace went away')\n")})
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "test_a.py::test_sctp: the namespace went away" in out

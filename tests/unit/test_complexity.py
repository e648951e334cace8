"""No function in product code is over McCabe complexity 15 (issue 14).

Runs the venv's ruff (rule C901 at 15, ``# noqa`` ignored, so nothing can opt out) over the product
packages and fails naming every offender.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("l3net", "felix", "bgp", "policy", "bench")
MAX_COMPLEXITY = 15

_MESSAGE = re.compile(r"`(?P<name>[^`]+)` is too complex \((?P<score>\d+) > \d+\)")


def _offenders() -> dict[tuple[str, str], tuple[int, int]]:
    """(path, function) -> (complexity, line) of every function over MAX_COMPLEXITY in PRODUCT."""
    ruff = Path(sys.executable).parent / "ruff"
    assert ruff.exists(), f"{ruff} is missing: run .ci/setup"
    proc = subprocess.run(
        [str(ruff), "check", "--no-cache", "--ignore-noqa", "--select", "C901",
         "--config", f"lint.mccabe.max-complexity={MAX_COMPLEXITY}", "--output-format", "json", *PRODUCT],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    # ruff exits 1 when it finds offenders; anything else is ruff itself failing.
    assert proc.returncode in (0, 1), f"ruff failed ({proc.returncode}): {proc.stderr}"
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for item in json.loads(proc.stdout):
        m = _MESSAGE.fullmatch(item["message"])
        assert m is not None, f"unexpected C901 message: {item['message']!r}"
        path = Path(item["filename"]).resolve().relative_to(REPO).as_posix()
        out[(path, m["name"])] = (int(m["score"]), item["location"]["row"])
    return out


@pytest.fixture(scope="module")
def offenders() -> dict[tuple[str, str], tuple[int, int]]:
    return _offenders()


def test_no_function_over_complexity_15(offenders: dict[tuple[str, str], tuple[int, int]]) -> None:
    bad = [f"{path}:{line} {name} has complexity {score} > {MAX_COMPLEXITY}"
           for (path, name), (score, line) in sorted(offenders.items())]
    assert not bad, "split these into smaller, well-named helpers:\n" + "\n".join(bad)


def test_the_check_sees_an_offender(tmp_path: Path) -> None:
    # Guards the test itself: ruff at this setting does report a function of complexity 16.
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(15))
    (tmp_path / "deep.py").write_text(f"def deep(x: int) -> int:\n{branches}\n    return -1\n")
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff), "check", "--no-cache", "--isolated", "--select", "C901",
         "--config", f"lint.mccabe.max-complexity={MAX_COMPLEXITY}", "--output-format", "json", "deep.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    found = [_MESSAGE.fullmatch(item["message"]) for item in json.loads(proc.stdout)]
    assert [(m["name"], m["score"]) for m in found if m] == [("deep", "16")]

"""tests/conftest.py's collection rule: a test carries its directory's rung marker and no other, and what it
needs beyond its rung (root, etcd) is a requirement marker that the skip policy reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import conftest as root_conftest

pytestmark = pytest.mark.unit

TESTS = Path(root_conftest.__file__).parent


@dataclass
class Item:
    """The three things the rule reads from a pytest item."""

    path: Path
    markers: set[str] = field(default_factory=set)

    @property
    def nodeid(self) -> str:
        return f"{self.path.relative_to(TESTS.parent)}::test_x"

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


@pytest.mark.parametrize(("rung", "markers", "ok"), [
    ("netns", {"netns"}, True),
    ("netns", {"netns", "needs_etcd", "slow"}, True),
    ("integration", {"integration", "needs_root"}, True),
    ("e2e", {"e2e", "needs_root", "needs_etcd", "soak"}, True),
    ("netns", {"netns", "integration"}, False),     # two rungs: the leak issue 14 named
    ("integration", {"integration", "netns"}, False),
    ("unit", set(), False),
    ("drivers", {"unit"}, False),
])
def test_one_rung_marker_per_test(rung: str, markers: set[str], ok: bool) -> None:
    item = Item(TESTS / rung / "test_x.py", markers)
    assert (root_conftest._unmarked_for_their_rung([item]) == []) is ok  # type: ignore[list-item]


@pytest.mark.parametrize(("markers", "root", "etcd"), [
    ({"unit"}, False, False),
    ({"netns"}, True, False),
    ({"netns", "needs_etcd"}, True, True),
    ({"integration"}, False, True),
    ({"integration", "needs_root"}, True, True),
    ({"e2e", "needs_root"}, True, False),
])
def test_requirements_come_from_the_rung_or_a_needs_marker(markers: set[str], root: bool, etcd: bool) -> None:
    item = Item(TESTS / "x" / "test_x.py", markers)
    assert (root_conftest.needs_root(item), root_conftest.needs_etcd(item)) == (root, etcd)  # type: ignore[arg-type]


def test_no_test_file_carries_a_second_rung_marker() -> None:
    """The source of every test module, as the rule sees it at collection: one rung each."""
    others = {d: [r for r in root_conftest.RUNGS if r != d] for d in root_conftest.RUNGS}
    offenders = [f"{f.relative_to(TESTS)}: pytest.mark.{r}" for d in root_conftest.RUNGS
                 for f in sorted((TESTS / d).glob("test_*.py")) for r in others[d]
                 if f"pytest.mark.{r}" in f.read_text()]
    assert offenders == []

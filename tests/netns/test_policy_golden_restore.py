"""The policy golden files (tests/unit/golden/policy) are valid kernel input.

For each scenario, in a fresh namespace: ``ipset restore`` of its sets (which the rules name), then
``iptables-restore --test --noflush`` of its filter/raw/nat scripts, so a golden file that the unit rung
accepts but the real tools refuse fails here. Reads the files only; the scenarios are built in
tests/unit/test_policy_golden.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from l3net import netns
from tests.netns_fixtures import NetnsFactory

pytestmark = [pytest.mark.netns]

GOLDEN = Path(__file__).parent.parent / "unit" / "golden" / "policy"
SCENARIOS = sorted(p.name.removesuffix(".iptables.txt") for p in GOLDEN.glob("*.iptables.txt"))


def test_every_scenario_has_both_files() -> None:
    assert len(SCENARIOS) >= 5
    assert {p.name for p in GOLDEN.glob("*.ipset.txt")} == {f"{s}.ipset.txt" for s in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden_restore_text_loads_into_the_real_tools(netns_factory: NetnsFactory, scenario: str) -> None:
    ns = netns_factory("gold")
    sets = (GOLDEN / f"{scenario}.ipset.txt").read_text()
    if sets:  # an empty node has no sets, and ipset restore of nothing proves nothing
        done = netns.run(ns, ["ipset", "restore"], input=sets, check=False)
        assert done.returncode == 0, done.stderr
        assert netns.run(ns, ["ipset", "list", "-n"]).stdout.split() == [
            line.split()[1] for line in sets.splitlines() if line.startswith("create ")]
    rules = (GOLDEN / f"{scenario}.iptables.txt").read_text()
    done = netns.run(ns, ["iptables-restore", "--test", "--noflush", "--wait"], input=rules, check=False)
    assert done.returncode == 0, done.stderr
    # --test must have changed nothing: the kernel chains hold no l3n rule afterwards.
    assert "l3n" not in netns.run(ns, ["iptables-save"]).stdout

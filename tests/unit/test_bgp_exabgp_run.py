"""bgp.exabgp_run: routes without ``next-hop self`` are shared between neighbours, SELF routes still copied."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


class _NextHop:
    def __init__(self, self_: bool) -> None:
        self.SELF = self_


class _Change:
    def __init__(self, self_: bool) -> None:
        self.nlri = type("N", (), {"nexthop": _NextHop(self_)})()


def test_patch_shares_non_self_routes_and_delegates_self_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.bgp.neighbor import Neighbor

    from bgp import exabgp_run

    calls = []
    monkeypatch.setattr(Neighbor, "remove_self", lambda self, change: calls.append(change) or "copied")
    assert exabgp_run.patch_remove_self()
    shared = _Change(False)
    assert Neighbor.remove_self(object(), shared) is shared and calls == []
    selfish = _Change(True)
    assert Neighbor.remove_self(object(), selfish) == "copied" and calls == [selfish]


def test_other_exabgp_series_run_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    import exabgp.version
    from exabgp.bgp.neighbor import Neighbor

    from bgp import exabgp_run

    original = Neighbor.remove_self
    monkeypatch.setattr(exabgp.version, "release", "6.0.0")
    assert not exabgp_run.patch_remove_self()
    assert Neighbor.remove_self is original

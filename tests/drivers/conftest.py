"""The drivers rung: felix's dataplane drivers and sync loop against the stateful fakes of tests.fakes.

No root, no etcd, no namespaces: tests/netns/test_route_contract.py is what holds the fakes to the kernel.
"""

from __future__ import annotations

import pytest

from tests.ladder import forbid_real_resources


@pytest.fixture(autouse=True)
def _drivers_rung(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_real_resources(monkeypatch, "drivers")

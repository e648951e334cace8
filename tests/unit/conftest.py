"""The unit rung: pure logic, no root, no etcd, no namespaces (tools that only parse, like ``bird -p``, may run).

Kernel and clock stand-ins come from tests.fakes; the real-resource fixtures are not provided here.
"""

from __future__ import annotations

import pytest

from tests.ladder import forbid_real_resources


@pytest.fixture(autouse=True)
def _unit_rung(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_real_resources(monkeypatch, "unit")

"""tests.netns_fixtures: network namespaces a test creates, tagged with the run's tag and always removed.

Imported by the conftest.py of the rungs that may create namespaces (netns, integration).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from l3net import netns
from tests.run_tag import RUN_TAG

__all__ = ["NetnsFactory", "netns_factory"]


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

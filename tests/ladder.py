"""tests.ladder: what the lower rungs may not do, enforced while their tests run.

The unit and drivers rungs run anywhere, without root or etcd: they cannot ask for the real-resource
fixtures (their conftest.py does not provide them), and :func:`forbid_real_resources` makes a direct
attempt to enter a namespace, open a route socket or start etcd fail with a message naming the rung
that may.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

import l3net.lab.etcdserver
import l3net.netns
import l3net.rtnl


def forbid_real_resources(monkeypatch: pytest.MonkeyPatch, rung: str) -> None:
    """Make namespace creation and entry, rtnetlink route sockets and etcd servers fail in this test."""

    def refuse(what: str, where: str) -> object:
        def fail(*_args: object, **_kwargs: object) -> NoReturn:
            pytest.fail(f"the {rung} rung does not {what}: use tests.fakes, or move the test to {where}",
                        pytrace=False)
        return fail

    monkeypatch.setattr(l3net.netns, "create", refuse("create namespaces", "tests/netns"))
    monkeypatch.setattr(l3net.netns, "in_netns", refuse("enter namespaces", "tests/netns"))
    monkeypatch.setattr(l3net.rtnl, "open_route_socket", refuse("open route sockets", "tests/netns"))
    monkeypatch.setattr(l3net.lab.etcdserver.EtcdServer, "start", refuse("start etcd", "tests/integration"))

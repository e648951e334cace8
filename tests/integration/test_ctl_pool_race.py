"""Two writers racing overlapping IPPools under different names against a real etcd: exactly one wins.

The overlap check reads the stored pools before the transaction; without the pool guard key in that
transaction both writers would pass the check and both commit (their keys differ).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from l3net.datastore import EtcdDatastore
from l3net.datastore.base import Op
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.documents import load_documents

pytestmark = pytest.mark.integration


class _CommitTogether:
    """A real datastore whose first commit on each thread waits until both threads are ready to commit,
    so both have already run their overlap checks: the race made certain instead of likely."""

    def __init__(self, ds: EtcdDatastore, parties: int) -> None:
        self._ds = ds
        self._barrier = threading.Barrier(parties, timeout=20)
        self._local = threading.local()

    def commit(self, ops: Sequence[Op]) -> int:
        if not getattr(self._local, "waited", False):
            self._local.waited = True
            self._barrier.wait()
        return self._ds.commit(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)


def _pool(name: str, cidr: str) -> str:
    return f"apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}}}\n"


@pytest.mark.parametrize("mode", ["apply", "create"])
def test_overlapping_pools_racing_under_different_names_exactly_one_wins(
        datastore: EtcdDatastore, key_layout: KeyLayout, mode: str) -> None:
    racing = _CommitTogether(datastore, 2)
    client = ResourceClient(racing, key_layout)  # type: ignore[arg-type]
    pools = {"race-a": "10.77.0.0/16", "race-b": "10.77.128.0/17"}
    results: dict[str, BaseException | None] = {}

    def write(name: str) -> None:
        try:
            getattr(client, mode)(load_documents(_pool(name, pools[name]), f"{name}.yaml"))
            results[name] = None
        except BaseException as exc:  # recorded and asserted below
            results[name] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(results) == set(pools), "a writer hung"
    winners = [n for n, exc in results.items() if exc is None]
    losers = [exc for exc in results.values() if exc is not None]
    assert len(winners) == 1, f"expected exactly one winner, got {results}"
    assert isinstance(losers[0], ValidationError) and "overlaps" in str(losers[0])
    stored = ResourceClient(datastore, key_layout).list("IPPool")
    assert [p.name for p in stored] == winners


def test_non_overlapping_pools_racing_both_win(datastore: EtcdDatastore, key_layout: KeyLayout) -> None:
    """The guard makes concurrent pool writers retry, not fail."""
    client = ResourceClient(_CommitTogether(datastore, 2), key_layout)  # type: ignore[arg-type]
    pools = {"ok-a": "10.78.0.0/16", "ok-b": "10.79.0.0/16"}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            client.create(load_documents(_pool(name, pools[name]), f"{name}.yaml"))
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(p.name for p in ResourceClient(datastore, key_layout).list("IPPool")) == sorted(pools)

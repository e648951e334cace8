"""Fixtures of the netns rung: a real agent on a node namespace, fed by the session's real etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.lab.etcdserver import EtcdServer
from tests.etcd_fixtures import datastore, etcd_server, key_layout, tmpfs_dir
from tests.netns.felix_rig import Node
from tests.netns_fixtures import NetnsFactory, netns_factory

# Fixtures this rung provides besides its own below (imported, so pytest registers them for tests/netns only).
__all__ = ["datastore", "etcd_server", "key_layout", "netns_factory", "node", "tmpfs_dir"]


@pytest.fixture
def node(netns_factory: NetnsFactory, etcd_server: EtcdServer, datastore: EtcdDatastore, key_layout: KeyLayout,
         tmp_path: Path) -> Iterator[Node]:
    """One node namespace with a real agent (started by the test); its log is printed if it died badly."""
    n = Node(netns_factory, datastore, key_layout, f"unix://{etcd_server.socket_path}", tmp_path)
    yield n
    code = n.stop_agent()
    if code not in (None, 0, -9):
        print(n.log()[-5000:])

"""Fixtures of the integration rung: real etcd, ExaBGP, BIRD and FRR processes, in namespaces the tests create."""

from __future__ import annotations

from tests.etcd_fixtures import datastore, etcd_server, key_layout, tmpfs_dir
from tests.netns_fixtures import netns_factory

# Fixtures this rung provides (imported, so pytest registers them for tests/integration only).
__all__ = ["datastore", "etcd_server", "key_layout", "netns_factory", "tmpfs_dir"]

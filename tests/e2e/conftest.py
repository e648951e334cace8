"""Fixtures of the e2e rung: whole topologies (tests.e2e.e2e_helpers.running_lab) and a real etcd."""

from __future__ import annotations

from tests.etcd_fixtures import datastore, etcd_server, key_layout, tmpfs_dir

# Fixtures this rung provides (imported, so pytest registers them for tests/e2e only).
__all__ = ["datastore", "etcd_server", "key_layout", "tmpfs_dir"]

"""l3net.datastore: the one narrow interface to etcd (see :mod:`.base`)."""

from __future__ import annotations

import os

from l3net.datastore.base import Check, CheckPrefix, Create, Datastore, Delete, KeyValue, Op, Put, Update, WatchEvent
from l3net.datastore.etcd import EtcdDatastore, TLSFiles

__all__ = ["Check", "CheckPrefix", "Create", "Datastore", "Delete", "EtcdDatastore", "KeyValue", "Op", "Put",
           "TLSFiles", "Update", "WatchEvent", "connect_from_env"]

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"


def connect_from_env(endpoints: str | None = None, ca: str | None = None, cert: str | None = None,
                     key: str | None = None) -> EtcdDatastore:
    """Build the etcd client from explicit values, falling back to ``L3NET_ETCD_*`` variables."""
    env = os.environ
    return EtcdDatastore(
        endpoints or env.get("L3NET_ETCD_ENDPOINTS") or DEFAULT_ENDPOINTS,
        TLSFiles(ca=ca or env.get("L3NET_ETCD_CA_CERT_FILE"),
                 cert=cert or env.get("L3NET_ETCD_CERT_FILE"),
                 key=key or env.get("L3NET_ETCD_KEY_FILE")),
    )

"""l3net.cli.common: datastore flags shared by every ``l3netctl`` command group.

Subcommand modules (``l3net.ipam.cli``, ``bgp.status_cli``) build their parsers
with ``parents=[datastore_parent()]`` and call :func:`open_datastore` in their
``func(args)``; the flags are also accepted before the subcommand.
"""

from __future__ import annotations

import argparse
import os

from l3net.constants import DEFAULT_ETCD_PREFIX
from l3net.datastore import EtcdDatastore, connect_from_env
from l3net.errors import FieldError, ValidationError
from l3net.keys import KeyLayout

__all__ = ["add_datastore_args", "datastore_parent", "open_datastore"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNREACHABLE = 2


def add_datastore_args(parser: argparse.ArgumentParser) -> None:
    """Add the ``--etcd-*`` flags; defaults are SUPPRESS so a flag given before the subcommand survives."""
    group = parser.add_argument_group("datastore (flags override L3NET_ETCD_* variables)")
    group.add_argument("--etcd-endpoints", default=argparse.SUPPRESS, metavar="URLS",
                       help="comma list of http://, https:// or unix:///path (env L3NET_ETCD_ENDPOINTS, "
                            "default http://127.0.0.1:2379)")
    group.add_argument("--etcd-ca-cert-file", default=argparse.SUPPRESS, metavar="FILE",
                       help="CA bundle for https endpoints (env L3NET_ETCD_CA_CERT_FILE)")
    group.add_argument("--etcd-cert-file", default=argparse.SUPPRESS, metavar="FILE",
                       help="client certificate (env L3NET_ETCD_CERT_FILE)")
    group.add_argument("--etcd-key-file", default=argparse.SUPPRESS, metavar="FILE",
                       help="client key (env L3NET_ETCD_KEY_FILE)")
    group.add_argument("--etcd-prefix", default=argparse.SUPPRESS, metavar="PREFIX",
                       help=f"key prefix (env L3NET_ETCD_PREFIX, default {DEFAULT_ETCD_PREFIX})")


def datastore_parent() -> argparse.ArgumentParser:
    """A parent parser carrying the datastore flags, for ``add_parser(..., parents=[datastore_parent()])``."""
    parent = argparse.ArgumentParser(add_help=False)
    add_datastore_args(parent)
    return parent


def key_layout_from_args(args: argparse.Namespace) -> KeyLayout:
    prefix = getattr(args, "etcd_prefix", None) or os.environ.get("L3NET_ETCD_PREFIX") or DEFAULT_ETCD_PREFIX
    try:
        return KeyLayout(prefix)
    except ValueError as exc:
        raise ValidationError(FieldError(path="--etcd-prefix", reason=str(exc))) from None


def open_datastore(args: argparse.Namespace) -> tuple[EtcdDatastore, KeyLayout]:
    """The datastore and key layout the flags (or ``L3NET_ETCD_*``) describe. Connects lazily."""
    keys = key_layout_from_args(args)
    try:
        ds = connect_from_env(getattr(args, "etcd_endpoints", None), getattr(args, "etcd_ca_cert_file", None),
                              getattr(args, "etcd_cert_file", None), getattr(args, "etcd_key_file", None))
    except ValueError as exc:
        raise ValidationError(FieldError(path="--etcd-endpoints", reason=str(exc))) from None
    return ds, keys

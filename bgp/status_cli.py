"""bgp.status_cli: ``l3netctl node status [NODE]``, the Calico-style BGP peer table.

Registers the ``node`` command group through ``add_parser(subparsers)``; reads
what the agents publish under ``status/<node>/bgp`` (see :mod:`bgp.status`).
Also prints the objects the node's agent set aside (``status/<node>/agent``: kernel
refusals, invalid values, rejected endpoints; see :mod:`felix.setaside`). Exit status 1
when the asked node has published nothing (agent down or lease expired).
"""

from __future__ import annotations

import argparse
import os
import sys

from bgp import status as bgp_status
from bgp.bfd import status as bfd_status
from l3net.constants import DEFAULT_ETCD_PREFIX
from l3net.keys import KeyLayout
from l3net.nodestatus import format_quarantined, read_quarantined


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    node = subparsers.add_parser("node", help="node commands (status)")
    node_sub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    st = node_sub.add_parser("status", help="print a node's BGP peer table (all nodes when NODE is omitted)")
    st.add_argument("node", nargs="?", default=None, help="node name")
    st.set_defaults(func=run_status)
    node.set_defaults(func=lambda _a: (node.print_help(), 1)[1])
    return node


def run_status(args: argparse.Namespace) -> int:
    from l3net.datastore import connect_from_env

    keys = KeyLayout(os.environ.get("L3NET_ETCD_PREFIX") or DEFAULT_ETCD_PREFIX)
    ds = connect_from_env()
    try:
        if args.node:
            st = bgp_status.read(ds, keys, args.node)
            quarantined = read_quarantined(ds, keys, args.node)
            if st is None and quarantined is None:
                print(f"no BGP status for node {args.node!r} (is its agent running?)", file=sys.stderr)
                return 1
            if st is not None:
                print(bgp_status.format_table(st))
            if quarantined is not None:
                print(format_quarantined(args.node, quarantined))
            _print_bfd(ds, keys, args.node)
            return 0
        all_status = bgp_status.read_all(ds, keys)
        if not all_status:
            print("no node has published a BGP status", file=sys.stderr)
            return 1
        for st in all_status:
            print(bgp_status.format_table(st))
            quarantined = read_quarantined(ds, keys, st.node)
            if quarantined:
                print(format_quarantined(st.node, quarantined))
            _print_bfd(ds, keys, st.node)
        return 0
    finally:
        ds.close()


def _print_bfd(ds: object, keys: KeyLayout, node: str) -> None:
    """The node's BFD sessions under its BGP table, when it has published any."""
    sessions = bfd_status.read(ds, keys, node)
    if sessions is not None:
        print(bfd_status.format_table(sessions))

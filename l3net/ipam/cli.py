"""l3net.ipam.cli: the ``l3netctl ipam`` command group (show, check, release, configure).

Registered by ``l3net.cli.ctl`` through :func:`add_parser`. Exit codes follow
``l3netctl``: 0 ok, 1 a problem found or invalid input, 2 datastore unreachable
(raised as DatastoreUnavailable and mapped by ``ctl.main``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from typing import Any

from l3net.cli.common import EXIT_INVALID, EXIT_OK, datastore_parent, open_datastore
from l3net.ipam.allocator import IPAM, IPAMError
from l3net.ipam.report import block_in_pool

_log = logging.getLogger(__name__)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _ipam(args: argparse.Namespace) -> IPAM:
    ds, keys = open_datastore(args)
    return IPAM(ds, keys)


def cmd_show(args: argparse.Namespace) -> int:
    report = _ipam(args).check()
    if args.output == "json":
        doc: dict[str, Any] = {
            "pools": [vars(p) for p in report.pools],
            "allocations": len(report.allocations), "borrowed": len(report.borrowed),
        }
        if args.show_blocks:
            doc["blocks"] = [vars(b) for b in report.blocks]
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    rows = [("GROUPING", "CIDR", "AFFINITY", "IPS TOTAL", "IPS IN USE", "IPS FREE")]
    for p in report.pools:
        pct = f" ({100 * p.in_use // max(p.size, 1)}%)"
        rows.append((f"IP Pool {p.name}" + (" (disabled)" if p.disabled else ""), p.cidr, "",
                     str(p.size), f"{p.in_use}{pct}", str(p.size - p.in_use)))
        if args.show_blocks:
            net = ipaddress.ip_network(p.cidr)
            for b in report.blocks:
                if block_in_pool(b.cidr, net):
                    rows.append(("Block", b.cidr, b.affinity or "(none)", str(b.size), str(b.in_use),
                                 str(b.size - b.in_use)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(report.allocations)} addresses allocated, {len(report.borrowed)} borrowed, "
          f"{len(report.held)} on sticky hold")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    report = _ipam(args).check()
    if args.output == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"Checked {len(report.blocks)} blocks, {len(report.allocations)} allocations.")
        for a in report.borrowed:
            print(f"borrowed: {a.ip} from block {a.block} (affine to {a.block_node}) used on node {a.node}")
        for line in report.problems():
            print(line)
        print("IPAM is consistent." if report.ok else f"Found {len(report.problems())} problems.")
    return EXIT_OK if report.ok else EXIT_INVALID


def cmd_release(args: argparse.Namespace) -> int:
    ipam = _ipam(args)
    try:
        if args.handle:
            freed = ipam.release_handle(args.handle)
        else:
            try:
                ipaddress.ip_address(args.ip)
            except ValueError:
                print(f"--ip: {args.ip!r} is not an IP address", file=sys.stderr)
                return EXIT_INVALID
            freed = ipam.release_ips([args.ip])
    except IPAMError as exc:
        print(f"release failed: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not freed:
        print("nothing to release (already free)")
    for ip in freed:
        print(f"released {ip}")
    return EXIT_OK


def cmd_configure(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.strictaffinity is not None:
        changes["strictAffinity"] = args.strictaffinity
    if args.max_blocks_per_host is not None:
        changes["maxBlocksPerHost"] = args.max_blocks_per_host
    if args.sticky_hold_seconds is not None:
        changes["stickyHoldSeconds"] = args.sticky_hold_seconds
    ipam = _ipam(args)
    cfg = ipam.set_config(**changes) if changes else ipam.config()
    print(f"StrictAffinity: {str(cfg.strict_affinity).lower()}")
    print(f"MaxBlocksPerHost: {cfg.max_blocks_per_host}")
    print(f"AutoAllocateBlocks: {str(cfg.auto_allocate_blocks).lower()}")
    print(f"StickyHoldSeconds: {cfg.sticky_hold_seconds:g}")
    return EXIT_OK


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ipam`` and its subcommands on ``l3netctl``'s subparsers."""
    parent = datastore_parent()
    ipam = subparsers.add_parser("ipam", help="IP address management: show, check, release, configure",
                                 parents=[parent])
    sub = ipam.add_subparsers(dest="ipam_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("show", help="Pool and block usage", parents=[parent])
    p.add_argument("--show-blocks", action="store_true", help="one line per block")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", help="Report leaks, double allocations, orphaned affinities, borrowed addresses "
                                     "(exit 1 when anything is wrong)", parents=[parent])
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("release", help="Release one address or everything a handle holds", parents=[parent])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--ip", help="address to release")
    what.add_argument("--handle", help="handle to release (<network>.<containerID>)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("configure", help="Change IPAM settings (prints the result)", parents=[parent])
    p.add_argument("--strictaffinity", type=_bool, metavar="true|false",
                   help="never borrow addresses from other nodes' blocks")
    p.add_argument("--max-blocks-per-host", type=int, metavar="N", help="blocks a node may claim (0 = 20)")
    p.add_argument("--sticky-hold-seconds", type=float, metavar="S",
                   help="how long a released sticky address stays reserved")
    p.set_defaults(func=cmd_configure)
    return ipam

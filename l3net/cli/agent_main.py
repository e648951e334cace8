"""l3net.cli.agent_main: the ``l3net`` command (agent, route reflector, lab, bench).

Each subcommand lives with the package that owns it and registers itself
through ``add_parser(subparsers)``; this module only dispatches. It is one of
the two composition roots allowed to import the layers above the ``l3net`` core
(docs/interfaces.md, "Layers").
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

import bench.cli
import bgp.cli
import felix.cli
import l3net.kube.cli
import l3net.lab.cli

# subcommand -> module providing add_parser(subparsers) that sets args.func (in this order in --help)
SUBCOMMANDS: dict[str, ModuleType] = {
    "agent": felix.cli,
    "route-reflector": bgp.cli,
    "kube-controller": l3net.kube.cli,
    "lab": l3net.lab.cli,
    "bench": bench.cli,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l3net", description="l3net: pure-L3 container networking.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

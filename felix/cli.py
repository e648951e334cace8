"""felix.cli: the ``l3net agent`` subcommand (flags from :mod:`felix.config`'s table)."""

from __future__ import annotations

import argparse
import sys

from felix import config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("agent", help="run the node agent (felix)",
                              description="The l3net node agent: programs this node's routes, interfaces "
                                          "and policy from the datastore. Every flag also reads L3NET_<NAME>.")
    config.add_arguments(p, skip=("log_level",))
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name, None) for name in config.PARAMS_BY_NAME}
    # --log-level belongs to the top-level parser; it counts as a flag only when changed.
    if flags.get("log_level") == "INFO":
        flags["log_level"] = None
    try:
        cfg = config.load(flags)
    except config.ConfigError as exc:
        print(f"l3net agent: bad configuration: {exc}", file=sys.stderr)
        return 2
    from felix import main

    return main.run(cfg)

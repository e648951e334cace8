"""bench.cli: the ``l3net-bench [all|NAME...] [--quick]`` command (also ``l3net bench``).

Runs the chosen benchmarks one after the other and exits non-zero if any of them
could not measure what it should. ``bench`` is installed with the project, so the
``l3net`` command reaches this module with a plain import.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from bench import BENCHMARKS, framework, report

_log = logging.getLogger(__name__)

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
_DESCRIPTION = (f"Run l3net's benchmarks (see bench/README.md). NAME is one of: {', '.join(BENCHMARKS)}; "
                "'all' runs every one.")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", default=["all"], metavar="all|NAME", help="benchmarks to run (default all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, numbers mean little")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                   help=f"where JSON and PNG go (default {DEFAULT_RESULTS})")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``l3net bench`` subcommand."""
    _arguments(subparsers.add_parser(
        "bench", help="run benchmarks: ratios measured side by side, JSON and PNG in bench/results",
        description=_DESCRIPTION))


def main(argv: list[str] | None = None) -> int:
    """The ``l3net-bench`` command."""
    parser = argparse.ArgumentParser(prog="l3net-bench", description=_DESCRIPTION)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    _arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run(args)


def _command(name: str, args: argparse.Namespace) -> str:
    """The exact command line that re-runs one benchmark the way it ran now."""
    prog = sys.argv[0] if sys.argv and sys.argv[0].endswith("l3net") else "l3net"
    parts = [prog, "bench", name]
    if args.quick:
        parts.append("--quick")
    if Path(args.results_dir).resolve() != DEFAULT_RESULTS.resolve():
        parts += ["--results-dir", str(args.results_dir)]
    return shlex.join(parts)


_MAIN_PID = os.getpid()


def _sigterm(signum: int, _frame: FrameType | None) -> None:
    """In the bench process: turn SIGTERM into an exception so every cleanup runs.

    A child forked without exec (pyroute2 forks one to open a socket inside a
    namespace, then terminates it) inherits this handler: it must die as
    usual, not raise, or its half-done work leaks into the parent.
    """
    if os.getpid() != _MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt("SIGTERM")


def run(args: argparse.Namespace) -> int:
    known: list[str] = list(BENCHMARKS)
    if args.list:
        for name in known:
            print(f"{name:16} {getattr(framework.load(name), 'TITLE', '')}")
        return 0
    names = known if "all" in args.names else list(args.names)
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"l3net bench: unknown benchmark(s) {', '.join(unknown)}; choose from: all, {', '.join(known)}",
              file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401 - checked up front: every benchmark writes a plot
    except ModuleNotFoundError:
        print("l3net bench: needs matplotlib: not available (pip install 'l3net[bench]' or "
              ".venv/bin/pip install matplotlib)", file=sys.stderr)
        return 2
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    codes: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        for name in names:
            codes[name] = framework.execute(name, quick=args.quick, results_dir=Path(args.results_dir),
                                            command=_command(name, args))
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\n### summary ({time.monotonic() - t0:.0f} s)")
    for name, code in codes.items():
        print(f"  {name:16} {_outcome(Path(args.results_dir), name, code)}")
        print(f"  {'':16} re-run: {_command(name, args)}")
    if not args.quick and Path(args.results_dir).resolve() == DEFAULT_RESULTS.resolve():
        report.write_readme(report.render(report.load_results()))
        print(f"updated the results table in {report.README}")
    return max(codes.values(), default=0)


def _outcome(results_dir: Path, name: str, code: int) -> str:
    """One line per benchmark for the summary, read back from the JSON it wrote."""
    try:
        doc = json.loads((results_dir / f"{name}.json").read_text())
    except (OSError, ValueError):
        return f"exit {code} (no readable result)"
    if doc["status"] in ("unavailable", "error"):
        return f"{'FAILED' if doc['status'] == 'unavailable' else 'ERROR'}: {doc['error']}"
    missed = [t["name"] for t in doc["targets"] if t["pass"] is False]
    open_ = [t["name"] for t in doc["targets"] if t.get("verdict") == "insufficient rounds"]
    parts = []
    if missed:
        parts.append(f"targets missed: {', '.join(missed)}")
    if open_:
        parts.append(f"no verdict (fewer than 10 rounds): {', '.join(open_)}")
    if doc["targets"] and not parts:
        parts.append("all targets met")
    text = ", ".join(["measured", *parts])
    if doc["unavailable"]:
        text = "FAILED, partly measured: " + "; ".join(doc["unavailable"])
    return text


if __name__ == "__main__":
    sys.exit(main())

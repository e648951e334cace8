"""bench.bgpsim: ExaBGP's API process for simulated route-reflector clients (many sessions, one ExaBGP).

Run by ExaBGP (``process sim { run python -m bench.bgpsim ...; encoder json; }``). It
- counts, per session (keyed by our local address), the distinct IPv4 prefixes received, from
  ExaBGP's parsed JSON (announce adds, withdraw removes);
- appends ``up IP T``, ``done IP T`` (the first time a session holds ``--expect`` prefixes) and
  ``announced T`` lines to ``--status`` (T is ``time.monotonic()``: one clock for the whole host);
- waits for a line on the ``--trigger`` FIFO, then announces every session's prefixes from ``--plan``
  (JSON ``{local_ip: [prefix, ...]}``), one command per session with all its prefixes.
Exits when ExaBGP closes its stdin. Lines it cannot parse are ignored (acks, plain text).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from typing import Any


class Status:
    """Appends timestamped lines to the status file; thread-safe (two threads write)."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime
        self._lock = threading.Lock()

    def write(self, *parts: str) -> None:
        with self._lock:
            self._fh.write(" ".join([*parts, f"{time.monotonic():.6f}"]) + "\n")
            self._fh.flush()


def _announce(trigger: str, plan: dict[str, list[str]], peer: str, status: Status) -> None:
    with open(trigger) as fh:
        fh.readline()
    for local, prefixes in plan.items():
        sys.stdout.write(f"neighbor {peer} local-ip {local} announce attributes next-hop {local} "
                         f"nlri {' '.join(prefixes)}\n")
    sys.stdout.flush()
    status.write("announced")


def _prefixes(update: dict[str, Any], key: str) -> list[str]:
    section = update.get(key, {}).get("ipv4 unicast")
    if section is None:
        return []
    if isinstance(section, list):  # withdraw: [{"nlri": ...}]
        return [e["nlri"] if isinstance(e, dict) else str(e) for e in section]
    out = []
    for entries in section.values():  # announce: {next_hop: [{"nlri": ...}]}
        out += [e["nlri"] if isinstance(e, dict) else str(e) for e in entries]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bgpsim")
    p.add_argument("--status", required=True)
    p.add_argument("--trigger", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--expect", type=int, required=True)
    args = p.parse_args(argv)
    with open(args.plan) as fh:
        plan: dict[str, list[str]] = json.load(fh)
    status = Status(args.status)
    threading.Thread(target=_announce, args=(args.trigger, plan, args.peer, status), daemon=True).start()
    have: dict[str, set[str]] = defaultdict(set)
    done: set[str] = set()
    for line in sys.stdin:
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        local = msg.get("neighbor", {}).get("address", {}).get("local")
        if local is None:
            continue
        if msg.get("type") == "state":
            status.write(str(msg.get("neighbor", {}).get("state")), local)
            continue
        update = msg.get("neighbor", {}).get("message", {}).get("update")
        if msg.get("type") != "update" or not update:
            continue
        got = have[local]
        got.update(_prefixes(update, "announce"))
        got.difference_update(_prefixes(update, "withdraw"))
        if local not in done and len(got) >= args.expect:
            done.add(local)
            status.write("done", local, str(len(got)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

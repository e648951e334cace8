"""Test rig for BFD: l3net's speaker on a loop thread, and FRR bfdd / BIRD 2 as real peers in namespaces.

Every process is started in a namespace the test created, with its own config, pid,
socket and log paths under the test's tmp_path, registered with the netns factory
(killed by PID at the end) and stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bgp.bfd.packet import State
from bgp.bfd.session import SessionConfig, StateChange
from bgp.bfd.speaker import BfdSpeaker, PeerKey
from l3net import netns
from tests.waiting import wait_for

T = TypeVar("T")

FRR_BFDD = "/usr/lib/frr/bfdd"


@dataclass
class Recorded:
    key: PeerKey
    change: StateChange
    wall: float


@dataclass
class L3netBfd:
    """A BfdSpeaker for namespace ``ns`` on its own event-loop thread; records every state change."""

    ns: str
    changes: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"bfd-{self.ns}", daemon=True)
        self.thread.start()
        self.speaker = BfdSpeaker(self._record, netns=self.ns)
        self.call(self.speaker.start())

    def _record(self, key: PeerKey, change: StateChange) -> None:
        self.changes.append(Recorded(key, change, time.time()))

    def call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()
        return self.call(run())  # type: ignore[no-any-return]

    def add(self, peer: str, config: SessionConfig, multihop: bool = False, local: str | None = None) -> PeerKey:
        key = PeerKey.parse(peer, multihop)
        self.do(lambda: self.speaker.add_session(key, config, local))
        return key

    def state(self, key: PeerKey) -> State | None:
        return self.do(lambda: self.speaker.state(key))

    def close(self) -> None:
        try:
            self.call(self.speaker.stop(admin_down=False))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class Peer(Protocol):
    kind: str

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...
    def session(self, peer: str) -> dict[str, Any] | None: ...
    def down_time(self, peer: str) -> float | None: ...


def _local_ts(text: str, fmt: str) -> float:
    """A peer's log or CLI time (local time zone, milliseconds) as an epoch time."""
    return datetime.datetime.strptime(text, fmt).timestamp()


class _Daemon:
    kind = ""

    def __init__(self, ns: str, run_dir: Path, pids: list[int]) -> None:
        self.ns = ns
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pids = pids
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str]) -> None:
        log = open(self.dir / f"{self.kind}.log", "ab")  # noqa: SIM115  (owned by the child)
        self.proc = subprocess.Popen(netns.nsenter_cmd(self.ns, cmd), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self._pids.append(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: the peer dies without a word, as a crashed node does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        p = self.dir / f"{self.kind}.log"
        return p.read_text(errors="replace") if p.exists() else ""


class FrrBfdd(_Daemon):
    """FRR's bfdd run by hand (never as a service) with its own config, pid, vty and control socket paths."""

    kind = "frr"

    def __init__(self, ns: str, run_dir: Path, pids: list[int], local: str, peers: list[str],
                 interval_ms: int = 300, mult: int = 3, multihop: bool = False,
                 pairs: list[tuple[str, str]] | None = None) -> None:
        """One session per peer from ``local``, or one per (peer, local address) in ``pairs``."""
        super().__init__(ns, run_dir, pids)
        # bfdd drops to the frr user, which must reach and own its paths: pytest's tmp_path is root-only,
        # so the daemon's own files live in a directory of their own under /tmp, removed by stop().
        self.rt = Path(tempfile.mkdtemp(prefix="l3n-bfdd-"))
        os.chmod(self.rt, 0o755)
        shutil.chown(self.rt, "frr", "frr")
        hop = " multihop" if multihop else ""
        pairs = pairs or [(p, local) for p in peers]
        body = "".join(f" peer {p}{hop} local-address {lo}\n  receive-interval {interval_ms}\n"
                       f"  transmit-interval {interval_ms}\n  detect-multiplier {mult}\n !\n" for p, lo in pairs)
        (self.rt / "bfdd.conf").write_text(f"log timestamp precision 3\ndebug bfd peer\nbfd\n{body}!\n")

    def start(self) -> None:
        d = self.rt
        self._spawn([FRR_BFDD, "-f", str(d / "bfdd.conf"), "-i", str(d / "bfdd.pid"), "--vty_socket", str(d),
                     "--bfdctl", str(d / "bfdd.sock"), "-z", str(d / "zserv.api"), "-u", "frr", "-g", "frr",
                     "-P", "0", "--log", "stdout", "--log-level", "debug"])
        wait_for(lambda: (d / "bfdd.vty").exists(), 15, "bfdd's vty socket")

    def states(self) -> list[str]:
        """The state of every session bfdd holds."""
        r = subprocess.run(["vtysh", "--vty_socket", str(self.rt), "-d", "bfdd", "-c", "show bfd peers json"],
                           capture_output=True, text=True, timeout=10)
        return [s["status"] for s in json.loads(r.stdout or "[]")] if r.returncode == 0 else []

    def session(self, peer: str) -> dict[str, Any] | None:
        r = subprocess.run(["vtysh", "--vty_socket", str(self.rt), "-d", "bfdd", "-c", "show bfd peers json"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return None
        for s in json.loads(r.stdout or "[]"):
            if s.get("peer") == peer:
                return {"state": s["status"], "id": s["id"], "remote_id": s["remote-id"],
                        "remote_tx_ms": s.get("remote-transmit-interval"), "tx_ms": s.get("transmit-interval")}
        return None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.rt, ignore_errors=True)

    def down_count(self) -> int:
        """How many times any session of this bfdd left Up, from its own log."""
        return sum(1 for line in self.log().splitlines() if "state-change:" in line and "up -> down" in line)

    def down_time(self, peer: str) -> float | None:
        """When bfdd logged its session with ``peer`` leaving Up (epoch seconds), from its own log."""
        pat = re.compile(r"^(\S+ \S+) BFD: .*state-change: \[mhop:\S+ peer:" + re.escape(peer) + r" .*up -> down")
        times = [_local_ts(m.group(1), "%Y/%m/%d %H:%M:%S.%f") for line in self.log().splitlines()
                 if (m := pat.match(line))]
        return times[-1] if times else None


class BirdBfd(_Daemon):
    """BIRD 2 with only its ``bfd`` protocol, neighbours configured statically."""

    kind = "bird"

    def __init__(self, ns: str, run_dir: Path, pids: list[int], local: str, peers: list[str],
                 interval_ms: int = 300, mult: int = 3, multihop: bool = False, dev: str | None = None) -> None:
        super().__init__(ns, run_dir, pids)
        # BIRD's grammar wants "local" before "multihop".
        where = f" local {local}" + (" multihop on" if multihop else (f' dev "{dev}"' if dev else ""))
        neigh = "".join(f"  neighbor {p}{where};\n" for p in peers)
        timers = f"min rx interval {interval_ms} ms; min tx interval {interval_ms} ms; multiplier {mult};"
        block = "multihop" if multihop else 'interface "*"'
        (self.dir / "bird.conf").write_text(
            f"router id {local};\nlog stderr all;\nprotocol device {{}}\n"
            f"protocol bfd b1 {{\n  {block} {{ {timers} }};\n{neigh}}}\n")

    def start(self) -> None:
        self._spawn(["bird", "-f", "-c", str(self.dir / "bird.conf"), "-s", str(self.dir / "bird.ctl")])
        wait_for(lambda: (self.dir / "bird.ctl").exists(), 15, "bird's control socket")

    def _sessions(self) -> list[list[str]]:
        r = subprocess.run(["birdc", "-s", str(self.dir / "bird.ctl"), "show", "bfd", "sessions"],
                           capture_output=True, text=True, timeout=10)
        rows = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 6:
                try:
                    ipaddress.ip_address(parts[0])
                except ValueError:
                    continue  # a header or the protocol name
                rows.append(parts)
        return rows

    def session(self, peer: str) -> dict[str, Any] | None:
        for parts in self._sessions():
            if parts[0] == peer and len(parts) >= 6:
                return {"state": parts[2].lower(), "since": parts[3], "interval_s": float(parts[4]),
                        "timeout_s": float(parts[5])}
        return None

    def down_time(self, peer: str) -> float | None:
        s = self.session(peer)
        if s is None or s["state"] != "down":
            return None
        # birdc prints time of day only: today's date in local time.
        today = datetime.date.today().isoformat()
        return _local_ts(f"{today} {s['since']}", "%Y-%m-%d %H:%M:%S.%f")

"""bgp.bird_control: BIRD 2's control socket (what ``birdc`` speaks), and its ``show protocols [all]`` and
``show bfd sessions`` parsed.

The socket protocol: BIRD greets with ``0001 BIRD <version> ready.``; each reply line
starts with a four-digit code and ``-`` (more follows) or `` `` (last line), and a line
starting with a space continues the previous code. Codes 8000 and up are errors
(runtime 8xxx, parse 9xxx). :func:`command` is blocking (run it in an executor);
:func:`parse_protocols` and :func:`parse_bfd_sessions` are pure.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

_LINE_RE = re.compile(rb"^(\d{4})([ -])(.*)$")
_ROUTES_RE = re.compile(r"Routes:\s+(\d+) imported,(?: (\d+) filtered,)? (\d+) exported")
# the config's `timeformat protocol "%F %T.%3f"`; a BIRD adopted from an older config may print "%F %T"
_SINCE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


class BirdError(RuntimeError):
    """BIRD answered with an error code, or its socket could not be used."""


def command(sock_path: Path | str, cmd: str, timeout: float = 10.0) -> list[tuple[int, str]]:
    """Send one command; ``[(code, text), ...]`` of the reply. BirdError for an error reply or a socket problem."""
    if "\n" in cmd:
        raise ValueError("one command, one line")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            f = s.makefile("rwb")
            _read_reply(f)  # the greeting
            f.write(cmd.encode() + b"\n")
            f.flush()
            reply = _read_reply(f)
    except OSError as exc:
        raise BirdError(f"control socket {sock_path}: {exc}") from exc
    errors = [text for code, text in reply if code >= 8000]
    if errors:
        raise BirdError(f"{cmd!r}: {'; '.join(errors)}")
    return reply


def _read_reply(f: object) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    code = 0
    while True:
        raw = f.readline()  # type: ignore[attr-defined]
        if not raw:
            raise BirdError("control socket closed mid-reply")
        raw = raw.rstrip(b"\n")
        m = _LINE_RE.match(raw)
        if m is None:   # " text": continues the previous code
            out.append((code, raw[1:].decode(errors="replace")))
            continue
        code = int(m.group(1))
        out.append((code, m.group(3).decode(errors="replace")))
        if m.group(2) == b" ":
            return out


def alive(sock_path: Path | str, timeout: float = 2.0) -> bool:
    """True when a BIRD answers on ``sock_path``."""
    try:
        command(sock_path, "show status", timeout)
    except BirdError:
        return False
    return True


@dataclass(frozen=True)
class ProtocolState:
    """One ``protocol bgp`` as BIRD reports it."""

    name: str
    state: str        # BIRD's protocol state: up | start | down | flush
    since: float      # wall-clock seconds of the last state change (0 when unknown)
    bgp_state: str    # Established, Active, Connect, Passive, Idle, OpenSent, OpenConfirm, ...
    last_error: str
    imported: int
    exported: int


def _since(text: str) -> float:
    """BIRD's local date-time as epoch seconds (0.0 when it does not parse)."""
    for fmt in _SINCE_FORMATS:
        try:
            return datetime.datetime.strptime(text, fmt).timestamp()
        except ValueError:
            continue
    return 0.0


def parse_protocols(reply: list[tuple[int, str]]) -> dict[str, ProtocolState]:
    """The BGP protocols of a ``show protocols [all]`` reply, by name (other protocols are skipped); route
    counts are only in the ``all`` form (0 otherwise)."""
    out: dict[str, ProtocolState] = {}
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None and current["proto"] == "BGP":
            # without "all", the Info column is the BGP state, then the last error if any
            state_word, _, rest = str(current["info"]).partition(" ")
            out[str(current["name"])] = ProtocolState(
                name=str(current["name"]), state=str(current["state"]), since=float(current["since"]),  # type: ignore[arg-type]
                bgp_state=str(current.get("bgp_state") or state_word),
                last_error=str(current.get("error", rest.strip())),
                imported=int(current.get("imported", 0)), exported=int(current.get("exported", 0)))  # type: ignore[call-overload]

    for code, text in reply:
        if code == 1002:   # "name proto table state date time info"
            flush()
            f = text.split()
            if len(f) < 4:
                current = None
                continue
            since = _since(" ".join(f[4:6])) if len(f) >= 6 else 0.0
            current = {"name": f[0], "proto": f[1], "state": f[3], "since": since, "info": " ".join(f[6:])}
            continue
        if current is None or code != 1006:
            continue
        line = text.strip()
        if line.startswith("BGP state:"):
            current["bgp_state"] = line.partition(":")[2].strip()
        elif line.startswith("Last error:"):
            current["error"] = line.partition(":")[2].strip()
        else:
            m = _ROUTES_RE.search(line)
            if m:   # one channel per protocol here (a peer is IPv4 or IPv6)
                current["imported"] = int(m.group(1))
                current["exported"] = int(m.group(3))
    flush()
    return out


@dataclass(frozen=True)
class BfdSessionState:
    """One row of ``show bfd sessions``."""

    peer: str
    interface: str    # "---" for a multihop session
    state: str        # BIRD's: AdminDown, Down, Init, Up (lower-cased here)
    since: float      # wall-clock seconds of the last state change (0 when unknown)
    interval_s: float  # the transmit interval in use (0 before the first packet)
    timeout_s: float   # the detection time (0 while the peer is unknown)

    @property
    def multihop(self) -> bool:
        return self.interface == "---"


def parse_bfd_sessions(reply: list[tuple[int, str]]) -> dict[str, BfdSessionState]:
    """The sessions of a ``show bfd sessions`` reply (code 1020), by canonical peer address.

    A row is ``address interface state date time interval timeout``; header lines, protocol name
    lines and anything that does not parse are skipped (a protocol that is not up prints a note).
    """
    out: dict[str, BfdSessionState] = {}
    for code, text in reply:
        if code != 1020:
            continue
        f = text.split()
        if len(f) != 7:
            continue
        try:
            peer = str(ipaddress.ip_address(f[0]))
            interval, timeout = float(f[5]), float(f[6])
        except ValueError:
            continue
        out[peer] = BfdSessionState(peer=peer, interface=f[1], state=f[2].lower(), since=_since(f"{f[3]} {f[4]}"),
                                    interval_s=interval, timeout_s=timeout)
    return out

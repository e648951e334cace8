"""bgp.exabgp_proc: starting and ending one ExaBGP process group (the speaker's child).

ExaBGP runs in its own process group (in the current network namespace or, for tests and the
lab, in ``netns`` via nsenter), dies with the agent (``PR_SET_PDEATHSIG``), and is ended by
process group: SIGTERM, then SIGKILL after a grace period. A leftover ExaBGP of the same run
directory (an agent that died without PDEATHSIG) is found by its pid file and killed, so that
it does not hold the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path

from bgp.secrets import write_private
from l3net.netns import nsenter_cmd

_log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 5.0


# The bridge imports the standard library only; run by path, without ``site`` (-S) and isolated (-I), it
# skips the environment's site-packages and .pth finders: a smaller process on every node, started faster.
BRIDGE_SCRIPT = Path(__file__).with_name("bridge.py")


def bridge_argv(python: str, socket_path: Path) -> list[str]:
    """The command ExaBGP runs as its API process: the bridge to the agent's socket at ``socket_path``."""
    return [python, "-S", "-I", str(BRIDGE_SCRIPT), "--socket", str(socket_path)]


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs ExaBGP when the agent dies (a kill -9 of the agent
    must take its ExaBGP along, else the next agent's ExaBGP cannot bind and its sessions collide)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def spawn(python: str, config: Path, log_path: Path, pid_path: Path, env: dict[str, str],
                netns: str | None) -> asyncio.subprocess.Process:
    """Start ``python -m bgp.exabgp_run server CONFIG`` with ``env`` added; output goes to ``log_path``."""
    cmd = [python, "-m", "bgp.exabgp_run", "server", str(config)]
    if netns:
        cmd = nsenter_cmd(netns, cmd)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **env},
            start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        log.close()
    pid_path.write_text(f"{proc.pid}\n")
    return proc


def kill_leftover(pid_path: Path, config: Path) -> None:
    """An ExaBGP of this run directory that outlived its agent (no PDEATHSIG then) holds the port: end it."""
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(config).encode() not in cmdline or b"exabgp" not in cmdline:
        return  # the pid was reused by something else
    _log.warning("killing a leftover ExaBGP pid=%d config=%s", pid, config)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM the process group, SIGKILL it after STOP_GRACE_S, and reap it."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def write_config(path: Path, text: str) -> bool:
    """Write ExaBGP's configuration (0600: it holds MD5 passwords); True when its text or mode changed."""
    try:
        if path.read_text() == text and path.stat().st_mode & 0o077 == 0:
            return False
    except OSError:
        pass
    write_private(path, text)
    return True

"""A podman that runs inside one test "node" namespace with all of its state under one scratch directory.

Follows testbed-facts §6 (measured on this machine): runc (crun fails on hybrid
cgroups), vfs storage, cgroupfs, no events, lowered ulimits (no CAP_SYS_RESOURCE),
a busybox-static rootfs imported as an image (no registry), and podman entered
into the node namespace with ``nsenter --net=`` (``ip netns exec`` remounts /sys
and runc then finds no cgroup mount). Podman's CNI backend finds ``l3net-cni``
through a shim in a plugin directory named by a private ``containers.conf``; the
shim records every CNI command it is given, so a test can prove podman itself
called ADD and DEL. Nothing here edits host configuration; ``reset`` removes
everything podman stored under the scratch root.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

REQUIRED_TOOLS = ("podman", "runc", "busybox", "nsenter")
INSTALL_HINT = "apt-get install -y --no-install-recommends podman runc busybox-static"
BUSYBOX_APPLETS = ("sh", "ip", "ping", "sleep", "cat")
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")


def missing_tools() -> list[str]:
    """The executables this rig needs that are not on PATH (empty when podman can run here)."""
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def write_plugin_shim(path: Path, target: str, calls_log: Path, stderr_log: Path, env: dict[str, str]) -> None:
    """An executable ``path`` that runs ``target`` with ``env`` set and logs each call's start and end.

    Lines are ``<COMMAND> <container id> <netns> <CNI_ARGS>`` before the call and
    ``<COMMAND>-done <container id> <exit status>`` after it, so a test can wait for
    a DEL that podman runs in the background. The environment is set here rather
    than inherited so the plugin does not depend on what podman forwards (DEL may
    come from conmon's cleanup process).
    """
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    log = shlex.quote(str(calls_log))
    path.write_text("#!/bin/sh\n"
                    f"{exports}"
                    f'echo "$CNI_COMMAND ${{CNI_CONTAINERID:-}} ${{CNI_NETNS:-}} ${{CNI_ARGS:-}}" >> {log}\n'
                    f'{shlex.quote(target)} "$@" 2>> {shlex.quote(str(stderr_log))}\n'
                    "rc=$?\n"
                    f'echo "$CNI_COMMAND-done ${{CNI_CONTAINERID:-}} $rc" >> {log}\n'
                    "exit $rc\n")
    path.chmod(0o755)


@dataclass
class Podman:
    """One podman installation rooted at ``base``, run in the network namespace ``netns``.

    Owns every file under ``base`` (storage, run state, network configs, the plugin
    shim). ``run`` raises ``subprocess.CalledProcessError`` with podman's stderr on
    failure; ``reset`` never raises so it can sit in a ``finally``.
    """

    base: Path
    netns: str
    plugin: str
    plugin_env: dict[str, str]

    @property
    def conf_dir(self) -> Path:
        return self.base / "net.d"

    @property
    def plugin_dir(self) -> Path:
        return self.base / "cni-bin"

    @property
    def calls_log(self) -> Path:
        return self.base / "cni-calls.log"

    @property
    def plugin_stderr(self) -> Path:
        return self.base / "cni-stderr.log"

    @property
    def containers_conf(self) -> Path:
        return self.base / "containers.conf"

    def setup(self) -> None:
        """Directories, the private containers.conf and the ``l3net-cni`` shim."""
        for d in (self.conf_dir, self.plugin_dir, self.base / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        write_plugin_shim(self.plugin_dir / "l3net-cni", self.plugin, self.calls_log, self.plugin_stderr,
                          self.plugin_env)
        # Plugin directories have no command-line flag in podman 4.3: containers.conf is the only way.
        self.containers_conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{self.plugin_dir}"]\n'
            f'network_config_dir = "{self.conf_dir}"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            f'tmp_dir = "{self.base / "tmp"}"\n'
            "[containers]\n"
            f"default_ulimits = {json.dumps(list(ULIMITS))}\n")

    def write_network(self, name: str, plugin_conf: dict[str, Any], cni_version: str = "1.0.0") -> Path:
        """A conflist ``name`` whose only plugin is ``plugin_conf`` (without cniVersion/name)."""
        body = {k: v for k, v in plugin_conf.items() if k not in ("cniVersion", "name")}
        path = self.conf_dir / f"{name}.conflist"
        path.write_text(json.dumps({"cniVersion": cni_version, "name": name, "plugins": [body]}, indent=1))
        return path

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "podman",
                "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
                "--tmpdir", str(self.base / "tmp"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                "--events-backend", "none", "--runtime", "runc", "--network-config-dir", str(self.conf_dir),
                *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.containers_conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(), timeout=timeout)
        _log.debug("podman %s -> %d\n%s%s", " ".join(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout,
                                                proc.stderr + self.diagnostics())
        return proc

    def diagnostics(self) -> str:
        """The shim's call log and the plugin's stderr, for assertion messages."""
        out = []
        for p in (self.calls_log, self.plugin_stderr):
            if p.exists():
                out.append(f"\n--- {p.name}\n{p.read_text()}")
        return "".join(out)

    def calls(self) -> list[list[str]]:
        """Every recorded plugin call as ``[command, container id, netns, args]``."""
        if not self.calls_log.exists():
            return []
        return [[*line.split(" ", 3), "", "", ""][:4] for line in self.calls_log.read_text().splitlines()]

    def finished(self, command: str, container_id: str) -> list[str]:
        """Exit statuses of the completed ``command`` calls for ``container_id``."""
        return [c[2] for c in self.calls() if c[0] == f"{command}-done" and c[1] == container_id]

    def import_busybox(self, image: str) -> None:
        """A one-binary busybox-static rootfs imported as ``image`` (no registry is reachable)."""
        rootfs = self.base / "rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy(shutil.which("busybox") or "busybox", rootfs / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            link = rootfs / "bin" / applet
            if not link.is_symlink():
                link.symlink_to("busybox")
        tarball = self.base / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        self.run("import", "--change", "CMD=/bin/sh", str(tarball), image)

    def cannot_run(self, image: str) -> str | None:
        """Why podman cannot run a container here (``--network none``, no CNI involved), or None when it can."""
        proc = self.run("run", "--rm", "--network", "none", *self.ulimit_args(), image, "/bin/sh", "-c", "exit 0",
                        check=False)
        if proc.returncode == 0:
            return None
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return f"podman cannot run a container on this machine (exit {proc.returncode}): " + (
            lines[-1] if lines else "no error output")

    def ulimit_args(self) -> list[str]:
        return [arg for u in ULIMITS for arg in ("--ulimit", u)]

    def reset(self) -> None:
        """Remove every container, image and file podman made under ``base`` (never raises).

        Not ``podman system reset``: it also resets machines and networks outside our
        root. Removing containers first makes podman run CNI DEL and unmount the
        per-container shm; any mount still under ``base`` is detached before deletion.
        """
        for args in (("rm", "-f", "-a", "-t", "0"), ("rmi", "-a", "-f")):
            try:
                self.run(*args, check=False, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                _log.warning("podman %s failed: %s", " ".join(args), exc)
        for mnt in sorted(mounts_under(self.base), reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base`` in this mount namespace."""
    root = str(base.resolve())
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                out.append(point)
    return out

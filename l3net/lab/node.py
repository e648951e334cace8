"""l3net.lab.node: where and how one lab node's processes run (namespaces, cwd, environment, the l3net argv).

Below the runtime, the pods and the Kubernetes lab, which all start processes inside nodes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l3net import netns

PREFIX_ENV = "L3NET_ETCD_PREFIX"


def l3net_argv(*args: str) -> list[str]:
    """The ``l3net`` command line of this installation (same interpreter, same venv)."""
    return [sys.executable, "-m", "l3net.cli.agent_main", *args]


@dataclass
class NodeRuntime:
    """Where and how a node's processes run: namespace, mount namespace, cwd, environment."""

    name: str
    netns: str
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    mntns: str | None = None

    def argv(self, cmd: list[str]) -> list[str]:
        wrap = ["nsenter", f"--net={netns.netns_path(self.netns)}"]
        if self.mntns:
            wrap += [f"--mount={self.mntns}", f"--wd={self.cwd}"]
        return [*wrap, "--", *cmd]

    def full_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # This installation's commands (l3net, exabgp, l3net-cni) first, as in the node image.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        env.update(self.env)
        return env

    @classmethod
    def from_state(cls, name: str, rec: dict[str, Any]) -> NodeRuntime:
        return cls(name, rec["netns"], rec["cwd"], dict(rec.get("env", {})), rec.get("mntns"))

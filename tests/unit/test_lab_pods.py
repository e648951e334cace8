"""The lab's l3net-cni: installed like deploy/install-cni.sh installs a node's (python3 -S), and it runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from l3net.lab import pods
from l3net.lab.state import LabState

pytestmark = pytest.mark.unit


def test_the_lab_installs_a_site_less_l3net_cni_once_and_it_runs_the_fallback_plugin(tmp_path: Path) -> None:
    state = LabState(tmp_path, {"name": "t"})
    path = pods.install_cni(state)
    assert path == tmp_path / "cni-bin" / "l3net-cni" and os.access(path, os.X_OK)
    assert path.read_text().splitlines()[0].endswith(" -S"), "no site module: the dev venv's finder is not paid"
    stamp = path.stat().st_mtime_ns
    assert pods.install_cni(state) == path and path.stat().st_mtime_ns == stamp, "unchanged: not rewritten"
    # No agent socket (""): the shim runs the full plugin in-process, so -S must still find its packages.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "VERSION"}
    conf = {"cniVersion": "1.0.0", "name": "l3net", "type": "l3net-cni", "agentSocket": ""}
    out = subprocess.run([str(path)], input=json.dumps(conf), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]


def test_concurrent_installs_each_write_their_own_temporary_and_leave_one_whole_file(tmp_path: Path) -> None:
    """Pods are added from several threads at once (bench footprint): one shared temporary name let a writer
    lose its file to another's rename (FileNotFoundError). Every writer starting before the file exists must
    succeed and leave exactly the binary, no temporaries."""
    import threading

    state = LabState(tmp_path, {"name": "t"})
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def install() -> None:
        barrier.wait()
        try:
            pods.install_cni(state)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in (tmp_path / "cni-bin").iterdir()) == ["l3net-cni"]
    assert (tmp_path / "cni-bin" / "l3net-cni").read_text() == pods.cni_wrapper_text()

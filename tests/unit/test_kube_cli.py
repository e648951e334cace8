"""``l3net kube-controller``: bad flags exit non-zero with a sentence naming the flag, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("args", "needle"), [
    (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig"),
    (["--kubeconfig", "/nonexistent/kubeconfig", "--resync-interval", "0"], "--resync-interval"),
])
def test_bad_flags_exit_2_naming_the_flag(args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "l3net.cli.agent_main", "kube-controller", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr

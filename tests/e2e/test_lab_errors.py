"""Every lab failure a user can cause ends in one sentence naming what and why, exit status 1, no
traceback, and nothing created: a bad or unreachable L3NET_ETCD_ENDPOINTS, a bind source that does
not exist, a manifest that does not validate, the etcd peer port taken by another program."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net import netns
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.etcdserver import EtcdServer, free_port
from l3net.lab.runtime import LabRuntime, check_endpoints, down, endpoint_problem
from l3net.lab.topology import load_topology

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

L3NET = [sys.executable, "-m", "l3net.cli.agent_main"]

TOPOLOGY = """
name: {name}
topology:
  nodes:
    a:
      kind: linux
{binds}
    b: {{kind: linux}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
"""


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    name = "le" + uuid.uuid4().hex[:6]
    base = Path("/run/l3net") / f"t{name}"
    monkeypatch.setenv(st.RUN_BASE_ENV, str(base))
    monkeypatch.delenv("L3NET_ETCD_ENDPOINTS", raising=False)
    try:
        yield name, tmp_path
    finally:
        down(name, out=lambda _m: None)
        for ns_name in netns.list_names():
            if ns_name.startswith(f"clab-{name}-"):
                netns.delete(ns_name)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def write(folder: Path, name: str, binds: str = "") -> Path:
    path = folder / f"{name}.clab.yml"
    path.write_text(TOPOLOGY.format(name=name, binds=binds))
    return path


def lab_up(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*L3NET, "lab", "up", "--no-wait", str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def assert_refused_cleanly(result: subprocess.CompletedProcess[str], name: str, *expected: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    assert [n for n in netns.list_names() if n.startswith(f"clab-{name}-")] == []
    assert not st.lab_dir(name).exists()


def closed_port() -> int:
    port = free_port()  # bound and released: nothing listens there now
    return port


def test_missing_unix_socket_endpoint_is_named_with_its_reason(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    ep = f"unix://{folder}/no-such-etcd.sock"
    result = lab_up(write(folder, name), L3NET_ETCD_ENDPOINTS=ep)
    assert_refused_cleanly(result, name, ep, "does not exist", "unset L3NET_ETCD_ENDPOINTS")


def test_unreachable_tcp_endpoint_and_bad_scheme_are_each_named(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    port = closed_port()
    eps = f"http://127.0.0.1:{port},ftp://example"
    result = lab_up(write(folder, name), L3NET_ETCD_ENDPOINTS=eps)
    assert_refused_cleanly(result, name, f"http://127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}",
                           "ftp://example: the scheme must be unix://, http:// or https://")


def test_a_file_that_is_not_a_socket_and_a_listener_that_is_not_etcd(lab_env: tuple[str, Path]) -> None:
    _name, folder = lab_env
    plain = folder / "plain-file"
    plain.write_text("x")
    assert endpoint_problem(f"unix://{plain}") == f"{plain} is not a socket"
    with socket.socket() as srv:  # accepts, then says nothing: not etcd
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        problem = endpoint_problem(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=1)
    assert problem is not None and problem.startswith("not answering as etcd"), problem


@pytest.mark.needs_etcd
def test_one_good_endpoint_is_enough(etcd_server: EtcdServer, tmp_path: Path) -> None:
    assert endpoint_problem(etcd_server.unix_endpoint) is None
    check_endpoints(f"unix://{tmp_path}/gone.sock,{etcd_server.unix_endpoint}")  # no error: e2 answers
    with pytest.raises(LabError, match=r"gone\.sock: the socket file"):
        check_endpoints(f"unix://{tmp_path}/gone.sock")


def test_missing_bind_source_is_refused_before_anything_is_created(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    path = write(folder, name, binds="      binds:\n        - missing.txt:/etc/hostname:ro")
    result = lab_up(path)
    assert_refused_cleanly(result, name, f"a: bind source {folder / 'missing.txt'} does not exist")


def test_invalid_manifest_is_refused_with_its_file_and_field(lab_env: tuple[str, Path]) -> None:
    name, folder = lab_env
    path = write(folder, name)
    (folder / name).mkdir()
    bad = folder / name / "10-pool.yaml"
    bad.write_text("apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/33}\n")
    result = lab_up(path)
    assert_refused_cleanly(result, name, f"manifest {bad}", "cidr")


def test_etcd_peer_port_in_use_is_named(lab_env: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab picks a free loopback port for etcd's peers; another program may take it first."""
    name, folder = lab_env
    topo = load_topology(write(folder, name))
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        monkeypatch.setattr("l3net.lab.etcdserver.free_port", lambda: port)
        with pytest.raises(LabError, match=re.escape(f"peer port 127.0.0.1:{port} is already in use")):
            LabRuntime(topo, out=lambda _m: None).up(wait_bgp=False)
    assert [n for n in netns.list_names() if n.startswith(f"clab-{name}-")] == []
    assert not st.lab_dir(name).exists()

"""A real runtime as the client: podman (CNI backend) calls l3net-cni for a container in a node namespace.

Podman runs entered into the rig's ``node-1`` namespace (testbed-facts §6: runc,
vfs, cgroupfs, lowered ulimits, a busybox-static rootfs imported as an image) with
a conflist whose plugin type is ``l3net-cni`` and etcd reached over its unix
socket. The test checks what ADD built (pool address, Calico veth and /32 route,
WorkloadEndpoint, a ping to the node), then that ``podman rm -f`` made podman
call DEL and that nothing is left; a second test lets a container exit by itself,
so DEL comes from podman's own cleanup process (started by conmon), not from the
CLI the test runs. Skipped where podman, runc or busybox are not installed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3net.model.validation import host_veth_name
from tests.netns.cni_rig import CNI_BIN, CNIRig, make_rig
from tests.netns.podman_rig import INSTALL_HINT, Podman, missing_tools

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd, pytest.mark.slow]

MISSING = missing_tools()
POOL = "10.242.0.0/24"
NETWORK = "l3net-podman"


@pytest.fixture
def podman_on_node(netns_factory: Any, etcd_server: Any, key_layout: Any, datastore: Any) -> Iterator[
        tuple[CNIRig, Podman, str]]:
    """The two-node CNI rig, a podman rooted in a short scratch dir run in ``node-1``'s namespace, its image.

    Skips (with podman's own error) when podman is installed but cannot run even a
    container without networking here, e.g. inside an unprivileged container.
    """
    # A short base: conmon's unix sockets live under it and sun_path holds 108 bytes.
    base = Path(tempfile.mkdtemp(prefix=f"{netns_factory.tag}-pm", dir="/tmp"))
    podman: Podman | None = None
    try:
        rig = make_rig(netns_factory, etcd_server, key_layout, datastore, base / "locks")
        rig.add_pool("pool1", POOL)
        podman = Podman(base=base / "podman", netns=rig.nodes["node-1"], plugin=CNI_BIN,
                        plugin_env={"L3NET_CNI_LOCK_DIR": str(base / "locks")})
        podman.setup()
        podman.write_network(NETWORK, rig.conf("node-1", log_level="info"))
        image = f"localhost/{netns_factory.tag}-busybox"
        podman.import_busybox(image)
        reason = podman.cannot_run(image)
        if reason is not None:
            pytest.skip(reason + podman.diagnostics())
        assert podman.calls() == [], "a --network none container must not call the CNI plugin"
        yield rig, podman, image
    finally:
        if podman is not None:
            podman.reset()
        if (base / "podman").exists():
            raise AssertionError(f"podman state left under {base / 'podman'}")
        shutil.rmtree(base, ignore_errors=True)


needs_podman = pytest.mark.skipif(bool(MISSING), reason=f"podman e2e needs {', '.join(MISSING)} on PATH "
                                  f"({INSTALL_HINT}); not installed on this machine")


@needs_podman
def test_podman_runs_a_container_through_l3net_cni(podman_on_node: tuple[CNIRig, Podman, str],
                                                    netns_factory: Any) -> None:
    rig, podman, image = podman_on_node
    name = f"{netns_factory.tag}-c1"

    # ADD: podman creates the container's namespace and calls l3net-cni through its CNI backend.
    cid = podman.run("run", "-d", "--name", name, "--network", NETWORK, *podman.ulimit_args(),
                     image, "/bin/sleep", "600").stdout.strip()
    info = json.loads(podman.run("inspect", "--format", "json", name).stdout)[0]
    assert info["Id"] == cid
    ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    sandbox = info["NetworkSettings"]["SandboxKey"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL), info["NetworkSettings"]
    adds = [c for c in podman.calls() if c[0] == "ADD"]
    assert [c[1] for c in adds] == [cid], podman.diagnostics()
    assert f"K8S_POD_NAME={name}" in adds[0][3]
    assert podman.finished("ADD", cid) == ["0"]

    # Inside the container: the /32 on eth0, and the node is reachable through proxy ARP.
    addr = podman.run("exec", name, "ip", "-4", "addr", "show", "eth0").stdout
    assert f"inet {ip}/32" in addr, addr
    routes = podman.run("exec", name, "ip", "-4", "route").stdout
    assert "default via 169.254.1.1" in routes, routes
    ping = podman.run("exec", name, "ping", "-c", "1", "-W", "5", rig.node_ip["node-1"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # Host side in the node namespace: Calico-named veth, its /32 route with our protocol (76), proxy ARP.
    veth = host_veth_name("default", name)
    assert rig.cali_links("node-1") == [veth]
    links = rig.links("node-1")
    assert links[veth]["mac"] == "ee:ee:ee:ee:ee:ee"
    assert rig.our_routes("node-1") == {f"{ip}/32": links[veth]["index"]}
    assert rig.sysctl("node-1", f"net/ipv4/conf/{veth}/proxy_arp") == "1"
    assert rig.cali_links("node-2") == []

    # The datastore: one WorkloadEndpoint for this container, one allocation on node-1.
    weps, _ = rig.ds.list(rig.keys.resource_dir("workloadendpoints"))
    specs = [json.loads(kv.value)["spec"] for kv in weps]
    assert len(specs) == 1, specs
    assert specs[0]["containerID"] == cid
    assert specs[0]["node"] == "node-1"
    assert specs[0]["pod"] == name
    assert specs[0]["interfaceName"] == veth
    assert specs[0]["ipNetworks"] == [f"{ip}/32"]
    allocs = rig.ipam.check().allocations
    assert [(a.ip, a.node) for a in allocs] == [(ip, "node-1")]

    # DEL: removing the container makes podman call the plugin again, and everything goes.
    podman.run("rm", "-f", "-t", "0", name)
    assert "0" in podman.finished("DEL", cid), podman.diagnostics()
    assert rig.leftovers() == [], podman.diagnostics()
    report = rig.ctl("ipam", "check")
    assert report.returncode == 0, report.stdout + report.stderr
    assert not os.path.exists(sandbox), f"podman left the container namespace {sandbox}"
    assert podman.run("ps", "-a", "-q").stdout.strip() == ""


@needs_podman
def test_container_exit_makes_podman_cleanup_call_del(podman_on_node: tuple[CNIRig, Podman, str],
                                                      netns_factory: Any) -> None:
    rig, podman, image = podman_on_node
    name = f"{netns_factory.tag}-c2"
    cid = podman.run("run", "-d", "--name", name, "--network", NETWORK, *podman.ulimit_args(),
                     image, "/bin/sh", "-c", "ip -4 addr show eth0").stdout.strip()
    assert podman.run("wait", name).stdout.strip() == "0"
    out = podman.run("logs", name).stdout
    assert f"inet {POOL.rsplit('.', 1)[0]}." in out, out
    # conmon runs `podman container cleanup` after the exit; wait for it (a deadline, not a speed assert).
    deadline = time.monotonic() + 30
    while not podman.finished("DEL", cid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert podman.finished("DEL", cid) == ["0"], podman.diagnostics()
    assert rig.leftovers() == [], podman.diagnostics()
    # The stopped container still exists; removing it must not need (or break) a second DEL.
    podman.run("rm", name)
    assert set(podman.finished("DEL", cid)) == {"0"}, podman.diagnostics()
    assert rig.leftovers() == []

"""A real runtime as the client: podman (CNI backend) calls l3net-cni for a container in a node namespace.

Follows testbed-facts §6: runc, vfs storage, cgroupfs, ulimits, a busybox rootfs
imported as an image, podman entered into the node namespace with nsenter.
Skipped where podman, runc or busybox-static are not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.netns.cni_rig import CNI_BIN, make_rig

pytestmark = [pytest.mark.netns, pytest.mark.integration, pytest.mark.slow]

MISSING = [t for t in ("podman", "runc", "busybox") if shutil.which(t) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"podman e2e needs {', '.join(MISSING)} (apt-get install podman runc "
                                          "busybox-static); not installed on this machine")
def test_podman_runs_a_container_through_l3net_cni(netns_factory, etcd_server, key_layout, datastore,
                                                    tmp_path: Path) -> None:
    rig = make_rig(netns_factory, etcd_server, key_layout, datastore, tmp_path / "locks")
    rig.add_pool("pool1", "10.242.0.0/24")
    plugin_dir, conf_dir, root = tmp_path / "bin", tmp_path / "net.d", tmp_path / "storage"
    for d in (plugin_dir, conf_dir, root, tmp_path / "locks"):
        d.mkdir(parents=True, exist_ok=True)
    (plugin_dir / "l3net-cni").symlink_to(CNI_BIN)
    conf = rig.conf("node-1")
    conflist = {"cniVersion": "1.0.0", "name": "l3net", "plugins": [{k: v for k, v in conf.items()
                                                                       if k not in ("cniVersion", "name")}]}
    (conf_dir / "l3net.conflist").write_text(json.dumps(conflist))
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "", rootfs / "bin" / "busybox")
    for tool in ("sh", "ip", "ping"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    tarball = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    podman = ["nsenter", f"--net=/run/netns/{rig.nodes['node-1']}", "podman", "--root", str(root / "root"),
              "--runroot", str(root / "run"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
              "--events-backend", "none", "--runtime", "runc", "--network-config-dir", str(conf_dir),
              "--cni-config-dir", str(conf_dir)]
    env = {**os.environ, "CNI_PATH": str(plugin_dir), "L3NET_CNI_LOCK_DIR": str(tmp_path / "locks")}
    image = f"localhost/{netns_factory.tag}-busybox"
    subprocess.run([*podman, "import", str(tarball), image], check=True, env=env, capture_output=True)
    try:
        run = subprocess.run([*podman, "run", "--rm", "--network", "l3net", "--ulimit", "nofile=1024:1024",
                              "--ulimit", "nproc=1024:1024", image, "/bin/sh", "-c",
                              f"ip -4 addr show eth0 && ping -c 1 -W 5 {rig.node_ip['node-1']}"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "inet 10.242.0." in run.stdout
    finally:
        subprocess.run([*podman, "rmi", "-f", image], env=env, capture_output=True)
    assert rig.leftovers() == []

"""The CNI plugin's pod read against the lab's API stand-in: values, and the errors kubelet sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from l3net.cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CNIError
from l3net.cni.kubepod import read_pod
from l3net.lab.etcdserver import free_port
from l3net.lab.kubeapi import KubeAPIServer

pytestmark = pytest.mark.integration


def test_read_pod_values_and_errors(tmp_path: Path) -> None:
    srv = KubeAPIServer().start()
    try:
        cfg = srv.kubeconfig(str(tmp_path / "kubeconfig"))
        st = srv.store
        st.create(st.rtype("serviceaccounts"), "default", {"metadata": {"name": "robot", "labels": {"k": "v"}}})
        st.create(st.rtype("pods"), "default", {
            "metadata": {"name": "p", "labels": {"app": "db"},
                         "annotations": {"cni.projectcalico.org/ipv4pools": '["p1"]'}},
            "spec": {"serviceAccountName": "robot",
                     "containers": [{"name": "c", "ports": [{"name": "pg", "containerPort": 5432}]}]}})
        info = read_pod(cfg, "default", "p")
        assert info.labels["app"] == "db" and info.labels["pcsa.k"] == "v" and info.service_account == "robot"
        assert info.ports == [{"name": "pg", "protocol": "TCP", "port": 5432}] and info.pools == ("p1",)
        with pytest.raises(CNIError) as err:
            read_pod(cfg, "default", "missing")
        assert err.value.code == INVALID_CONFIG and "default/missing" in str(err.value)
    finally:
        srv.stop()
    # the API is gone: "try again later", which kubelet retries
    down = KubeAPIServer(port=free_port())
    cfg = down.kubeconfig(str(tmp_path / "down"))
    down.stop()
    with pytest.raises(CNIError) as err:
        read_pod(cfg, "default", "p")
    assert err.value.code == TRY_AGAIN_LATER
    with pytest.raises(CNIError) as err:
        read_pod(str(tmp_path / "nope"), "default", "p")
    assert err.value.code == INVALID_CONFIG and "kubernetes.kubeconfig" in str(err.value)

"""l3netctl with FelixConfiguration against a real etcd: apply, get (table and YAML) and delete; a Calico field
without an l3net setting is refused by name (exit 1) and nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l3net.cli.ctl import main
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout

pytestmark = pytest.mark.integration

FELIX = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info, routeRefreshInterval: 30s}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.worker-1}
spec: {logSeverityScreen: debug}
"""


@pytest.fixture
def env(etcd_server, key_layout: KeyLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L3NET_ETCD_ENDPOINTS", etcd_server.tcp_endpoint)
    monkeypatch.setenv("L3NET_ETCD_PREFIX", key_layout.prefix)


def test_apply_get_delete(env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "felix.yaml"
    path.write_text(FELIX)
    assert main(["apply", "-f", str(path)]) == 0
    assert "Successfully applied 2" in capsys.readouterr().out
    assert main(["get", "felixconfigurations"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["NAME", "LOGSEVERITY", "ROUTEREFRESH"], ["default", "Info", "30s"], ["node.worker-1", "Debug"]]
    assert main(["get", "felixconfig", "default", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "FelixConfiguration" and doc["spec"] == {"logSeverityScreen": "Info",
                                                                    "routeRefreshInterval": "30s"}
    assert main(["delete", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["get", "felixconfigs", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


def test_unsupported_field_is_refused_and_nothing_stored(env: None, tmp_path: Path, datastore: EtcdDatastore,
                                                         key_layout: KeyLayout,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "felix.yaml"
    path.write_text(FELIX + "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n"
                            "metadata: {name: node.worker-2}\nspec: {ipipEnabled: true}\n")
    assert main(["apply", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert "spec.ipipEnabled: l3net does not support this field (l3net routes natively)" in err
    assert datastore.list(key_layout.resource_dir("felixconfigurations"))[0] == []

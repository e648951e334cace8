"""deploy/*.yaml: every manifest parses and matches the Kubernetes API models of the `kubernetes` package
(no unknown fields at any depth, required fields present), and the DaemonSet installs the CNI plugin."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


_PRIMITIVE = {"str", "int", "bool", "float", "object", "datetime", "date", "Dict[str, object]"}


def model_name(doc: dict[str, Any]) -> str:
    group_version = doc["apiVersion"]
    version = group_version.split("/")[-1].capitalize()
    return f"{version}{doc['kind']}"


def check(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Walk ``value`` against the model ``type_name``: unknown keys and wrong shapes are errors."""
    if type_name in _PRIMITIVE:
        return
    m = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, m.group(1), f"{path}[{i}]", errors)
        return
    m = re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return
        for k, item in value.items():
            check(item, m.group(1) or m.group(2), f"{path}.{k}", errors)
        return
    klass = getattr(k8s, type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} mapping")
        return
    json_to_attr = {v: k for k, v in klass.attribute_map.items()}
    for key, item in value.items():
        if key not in json_to_attr:
            errors.append(f"{path}.{key}: unknown field for {type_name}")
            continue
        check(item, klass.openapi_types[json_to_attr[key]], f"{path}.{key}", errors)


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in MANIFESTS:
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc is not None:
                out.append((f"{f.name}#{i}", doc))
    return out


@pytest.mark.parametrize(("where", "doc"), documents(), ids=[w for w, _ in documents()])
def test_manifest_matches_kubernetes_models(where: str, doc: dict[str, Any]) -> None:
    name = model_name(doc)
    assert hasattr(k8s, name), f"{where}: no Kubernetes model {name}"
    errors: list[str] = []
    check(doc, name, where, errors)
    assert not errors, errors

    # Deserialising builds every nested model; with client-side validation on, a missing
    # required field (a container's name, a selector, a roleRef's kind, ...) raises here.
    obj = k8s.ApiClient().deserialize(json.dumps(doc), name, "application/json")
    assert obj.metadata.name == doc["metadata"]["name"]


def test_every_manifest_file_has_documents() -> None:
    assert {f.name for f in MANIFESTS} >= {"l3net-node.yaml", "l3net-route-reflector.yaml", "rbac.yaml",
                                          "l3net-config.yaml"}


def test_unknown_field_is_caught() -> None:
    errors: list[str] = []
    check({"spec": {"template": {"spec": {"containers": [{"name": "x", "imagee": "y"}]}}}}, "V1DaemonSet", "t",
          errors)
    assert errors == ["t.spec.template.spec.containers[0].imagee: unknown field for V1Container"]


def test_missing_required_field_is_caught() -> None:
    text = json.dumps({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
                       "spec": {"template": {}}})  # no selector
    with pytest.raises(ValueError, match="selector"):
        k8s.ApiClient().deserialize(text, "V1DaemonSet", "application/json")


def test_daemonset_installs_cni_plugin_and_conflist() -> None:
    ds = next(doc for _, doc in documents() if doc["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    init = {c["name"]: c for c in pod["initContainers"]}["install-cni"]
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert {"/host/opt/cni/bin", "/host/etc/cni/net.d"} <= mounts
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/opt/cni/bin", "/etc/cni/net.d"} <= host_paths
    script = (DEPLOY / "install-cni.sh").read_text()
    assert "l3net-cni" in script and "10-l3net.conflist" in script
    cm = next(doc for _, doc in documents() if doc["kind"] == "ConfigMap")
    conflist = json.loads(cm["data"]["cni_network_config"])
    assert conflist["plugins"][0]["type"] == "l3net-cni"

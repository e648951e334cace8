"""deploy/: every flag and environment variable the manifests set is one the code reads (issue 15).

Flags are checked by parsing each container's command line with the real ``l3net`` parser (argparse
refuses unknown flags); variables must be read by name somewhere in the package or install-cni.sh;
the conflist in the ConfigMap, filled in as install-cni.sh does, must pass the plugin's own parser.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3net.cli.agent_main import build_parser
from l3net.cni.config import parse_netconf

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CODE = [p for pkg in ("l3net", "felix", "bgp", "policy") for p in (ROOT / pkg).rglob("*.py")]
NOT_OURS: set[str] = set()  # variables a manifest may set that l3net does not read: none


def containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("DaemonSet", "Deployment"):
                continue
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                out.append((f"{path.name}:{c['name']}", c))
    return out


def argv_of(container: dict[str, Any]) -> list[str] | None:
    """The ``l3net`` arguments a container runs (None for a script)."""
    cmd, args = container.get("command"), container.get("args", [])
    if cmd is None:
        return list(args)  # the image's ENTRYPOINT is `l3net`
    if cmd[:2] == ["sh", "-c"]:
        words = shlex.split(cmd[2].replace('"$NODE_NAME"', "node1"))
        words = words[1:] if words[0] == "exec" else words
        assert words[0] == "l3net", f"a shell command that is not l3net: {cmd}"
        return words[1:]
    return None


@pytest.mark.parametrize(("where", "container"), containers(), ids=[w for w, _ in containers()])
def test_every_flag_is_parsed_by_the_code(where: str, container: dict[str, Any]) -> None:
    argv = argv_of(container)
    if argv is None:
        assert container["command"] == ["/opt/l3net/install-cni.sh"], where
        return
    args = build_parser().parse_args(argv)  # exits (SystemExit) on an unknown flag
    assert getattr(args, "func", None) is not None, f"{where}: {argv} names no command"


@pytest.mark.parametrize(("where", "container"), containers(), ids=[w for w, _ in containers()])
def test_every_variable_is_read_by_the_code(where: str, container: dict[str, Any]) -> None:
    from felix.config import PARAMS

    agent_params = {p.env for p in PARAMS}  # the agent's settings table: L3NET_<NAME> for every parameter
    sources = [p.read_text() for p in CODE] + [(DEPLOY / "install-cni.sh").read_text(),
                                               " ".join(container.get("command", []))]
    for env in container.get("env", []):
        name = env["name"]
        if name in NOT_OURS or name in agent_params:
            continue
        read = any(f'"{name}"' in s or f"'{name}'" in s or f"${{{name}" in s or f"${name}" in s for s in sources)
        if not read and any(f"{name}" in s for s in sources):
            # read through a constant: ENV = "NAME" somewhere, then os.environ.get(ENV)
            read = any(f'= "{name}"' in s for s in sources)
        assert read, f"{where}: sets {name}, which no code reads"


def test_conflist_passes_the_plugin_parser() -> None:
    cm = yaml.safe_load((DEPLOY / "l3net-config.yaml").read_text())
    text = cm["data"]["cni_network_config"]
    fills = (("__KUBERNETES_NODE_NAME__", "node1"), ("__ETCD_ENDPOINTS__", cm["data"]["etcd_endpoints"]),
             ("__ETCD_PREFIX__", cm["data"]["etcd_prefix"]), ("__ETCD_CA_CERT_FILE__", ""),
             ("__ETCD_CERT_FILE__", ""), ("__ETCD_KEY_FILE__", ""))
    for placeholder, value in fills:
        assert placeholder in text and placeholder in (DEPLOY / "install-cni.sh").read_text()
        text = text.replace(placeholder, value)
    conflist = json.loads(text)
    plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"], name=conflist["name"])
    conf = parse_netconf(plugin, "ADD")
    assert conf.kubeconfig == "/etc/cni/net.d/l3net-kubeconfig" and conf.agent_socket == "/run/l3net/cni.sock"
    # what the runtime mounts for the agent serving ADD, and where install-cni writes the kubeconfig
    node = next(iter(yaml.safe_load_all((DEPLOY / "l3net-node.yaml").read_text())))
    mounts = {m["mountPath"] for c in node["spec"]["template"]["spec"]["containers"] for m in c["volumeMounts"]}
    assert {"/var/run/netns", "/etc/cni/net.d", "/run/l3net"} <= mounts
    assert node["spec"]["template"]["spec"]["hostPID"] is True


def test_rbac_is_exactly_what_the_code_uses() -> None:
    rules = {}
    for doc in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()):
        if doc["kind"] in ("ClusterRole", "Role"):
            rules[doc["metadata"]["name"]] = {(g, r, v) for rule in doc["rules"] for g in rule["apiGroups"]
                                              for r in rule["resources"] for v in rule["verbs"]}
    assert rules["l3net-node"] == {("", "pods", "get"), ("", "serviceaccounts", "get")}
    from l3net.kube.controller import KINDS

    groups = {"Namespace": ("", "namespaces"), "Pod": ("", "pods"), "Node": ("", "nodes"),
              "ServiceAccount": ("", "serviceaccounts"), "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
              "Service": ("", "services")}
    assert rules["l3net-kube-controller"] == {(*groups[k], v) for k in KINDS for v in ("list", "watch")}
    assert rules["l3net-kube-controller-lease"] == {("coordination.k8s.io", "leases", v)
                                                    for v in ("get", "create", "update")}

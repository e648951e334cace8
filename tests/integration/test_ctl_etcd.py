"""l3netctl against a real etcd: round trips, every bad input refused with exit 1 and the field path
and nothing stored, exit 2 naming an unreachable endpoint. Most cases call main() in-process; a few
run the installed console script as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from l3net.cli.ctl import main
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient, pool_guard_key
from l3net.model.documents import load_documents

pytestmark = pytest.mark.integration

CTL = str(Path(sys.executable).with_name("l3netctl"))

BASELINE = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: base-pool}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: l3net.io/v1
kind: Node
metadata: {name: n1}
spec: {bgp: {ipv4Address: 10.1.0.11/24, asNumber: 65001}}
"""

GOOD = "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: good-pool}\nspec: {cidr: 10.9.0.0/16}\n---\n"


def _np(spec: str) -> str:
    return ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-web, namespace: web}\n"
            f"spec: {spec}\n")


# (id, file text, expected field path or text in stderr)
BAD_FILES = [
    ("invalid-yaml", "kind: IPPool\nmetadata: {name: [x}\n", "line 7, column 20"),
    ("unknown-field", _np("{podSelector: {}, ingres: []}"), "spec.ingres"),
    ("cidr-invalid", _np("{ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/40}}]}]}"),
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ("cidr-host-bits", _np("{ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]}"),
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ("except-outside", _np("{ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}"),
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("peer-both", _np("{ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}"),
     "spec.ingress[0].from[0]"),
    ("peer-empty", _np("{ingress: [{from: [{}]}]}"), "spec.ingress[0].from[0]"),
    ("selector-operator", _np("{podSelector: {matchExpressions: [{key: a, operator: In}]}}"),
     "spec.podSelector.matchExpressions[0].values"),
    ("port-range", _np("{ingress: [{ports: [{port: 65536}]}]}"), "spec.ingress[0].ports[0].port"),
    ("endport", _np("{ingress: [{ports: [{port: 90, endPort: 80}]}]}"), "spec.ingress[0].ports[0].endPort"),
    ("protocol", _np("{ingress: [{ports: [{protocol: ICMP}]}]}"), "spec.ingress[0].ports[0].protocol"),
    ("named-port", _np("{ingress: [{ports: [{port: web_port}]}]}"), "spec.ingress[0].ports[0].port"),
    ("policy-types", _np("{policyTypes: [Ingress, Outbound]}"), "spec.policyTypes[1]"),
    ("dns-name", _np("{}").replace("allow-web", "Allow_Web"), "metadata.name"),
    ("label-syntax", _np("{podSelector: {matchLabels: {'-app': web}}}"), "spec.podSelector.matchLabels"),
    ("pool-overlap-in-file", "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p1}\n"
                             "spec: {cidr: 10.50.0.0/16}\n---\napiVersion: l3net.io/v1\nkind: IPPool\n"
                             "metadata: {name: p2}\nspec: {cidr: 10.50.1.0/24}\n", "spec.cidr"),
    ("pool-overlap-stored", "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p3}\n"
                            "spec: {cidr: 10.0.128.0/20}\n", "overlaps IPPool base-pool"),
    ("block-size", "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p4}\n"
                   "spec: {cidr: 10.60.0.0/16, blockSize: 34}\n", "spec.blockSize"),
    ("block-larger-than-pool", "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p5}\n"
                               "spec: {cidr: 10.61.0.0/28, blockSize: 26}\n", "spec.blockSize"),
    ("link-local-pool", "apiVersion: l3net.io/v1\nkind: IPPool\nmetadata: {name: p6}\n"
                        "spec: {cidr: 169.254.0.0/16}\n", "spec.cidr"),
    ("asn-range", "apiVersion: l3net.io/v1\nkind: Node\nmetadata: {name: n2}\nspec: {bgp: {asNumber: 0}}\n",
     "spec.bgp.asNumber"),
    ("asn-non-numeric", "apiVersion: l3net.io/v1\nkind: Node\nmetadata: {name: n2}\n"
                        "spec: {bgp: {asNumber: sixty}}\n", "spec.bgp.asNumber"),
    ("peer-ip-not-ip", "apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: tor}\n"
                       "spec: {peerIP: tor.example, asNumber: 65000}\n", "spec.peerIP"),
    ("network-set-net", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: ext}\n"
                        "spec: {nets: [192.0.2.0/24, 10.0.0.0/33]}\n", "spec.nets[1]"),
    ("peer-ip-own-node", "apiVersion: l3net.io/v1\nkind: BGPPeer\nmetadata: {name: tor}\n"
                         "spec: {node: n1, peerIP: 10.1.0.11, asNumber: 65000}\n", "own address"),
]


@pytest.fixture
def env(etcd_server, key_layout: KeyLayout, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"L3NET_ETCD_ENDPOINTS": etcd_server.tcp_endpoint, "L3NET_ETCD_PREFIX": key_layout.prefix}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **values}


def _snapshot(ds: EtcdDatastore, keys: KeyLayout) -> list[tuple[str, bytes, int]]:
    kvs, _ = ds.list(keys.prefix)
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
@pytest.mark.parametrize("verb", ["apply", "create"])
def test_bad_input_exit_1_names_path_and_stores_nothing(
        verb: str, text: str, expected: str, env: dict[str, str], datastore: EtcdDatastore, key_layout: KeyLayout,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ResourceClient(datastore, key_layout).apply(load_documents(BASELINE, "baseline"))
    before = _snapshot(datastore, key_layout)
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + text)  # a good document first: it must not be stored either
    rc = main([verb, "-f", str(path)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert expected in err
    assert str(path) in err
    assert "Traceback" not in err
    assert _snapshot(datastore, key_layout) == before


def test_apply_get_delete_roundtrip_in_process(env: dict[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "res.yaml"
    path.write_text(BASELINE + "---\n" + _np("{podSelector: {matchLabels: {app: web}}, ingress: [{from: "
                                              "[{podSelector: {}}], ports: [{port: http}]}]}"))
    assert main(["apply", "-f", str(path)]) == 0
    assert "Successfully applied 3" in capsys.readouterr().out

    assert main(["get", "ippools"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "BLOCKSIZE", "NAT", "DISABLED", "SELECTOR"]
    assert table[1].split() == ["base-pool", "10.0.0.0/16", "26", "false", "false", "all()"]

    assert main(["get", "node", "n1", "-o", "json"]) == 0
    node = json.loads(capsys.readouterr().out)
    assert node["spec"]["bgp"]["asNumber"] == 65001 and node["metadata"]["uid"]

    assert main(["get", "networkpolicies"]) == 0  # default namespace: nothing there
    assert capsys.readouterr().out.splitlines()[1:] == []
    assert main(["get", "netpol", "-A"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["web", "allow-web"]

    # get -o yaml | apply -f - round trips unchanged (resourceVersion acts as CAS)
    assert main(["get", "ippool", "-o", "yaml"]) == 0
    listing = capsys.readouterr().out
    assert yaml.safe_load(listing)["kind"] == "List"
    (tmp_path / "back.yaml").write_text(listing)
    assert main(["apply", "-f", str(tmp_path / "back.yaml")]) == 0
    capsys.readouterr()

    assert main(["create", "-f", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err

    assert main(["delete", "networkpolicy", "allow-web", "-n", "web"]) == 0
    assert main(["delete", "networkpolicy", "allow-web", "-n", "web"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["delete", "-f", str(path), "--skip-not-exists"]) == 0
    assert main(["get", "ippool", "base-pool"]) == 1
    capsys.readouterr()
    assert main(["get", "nodes", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


NETWORK_SETS = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: external, labels: {role: external}}
spec: {nets: [192.0.2.0/24, "2001:db8::/64"]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: web, labels: {role: partner}}
spec: {nets: [198.51.100.0/28]}
"""


def test_network_sets_apply_list_and_delete(env: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sets.yaml"
    path.write_text(NETWORK_SETS)
    assert main(["apply", "-f", str(path)]) == 0
    assert "Successfully applied 2" in capsys.readouterr().out
    assert main(["get", "globalnetworksets"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["NAME", "NETS", "LABELS"], ["external", "192.0.2.0/24,2001:db8::/64", "role=external"]]
    assert main(["get", "networksets", "-A"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["web", "partners", "198.51.100.0/28", "role=partner"]
    assert main(["get", "networkset", "partners", "-n", "web", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "NetworkSet" and doc["spec"]["nets"] == ["198.51.100.0/28"]
    assert main(["delete", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["get", "gns", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


SERVICE = """\
apiVersion: l3net.io/v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, loadBalancerIPs: [198.51.100.5], externalTrafficPolicy: Local, selector: {app: web}}
"""


def test_a_service_applies_lists_and_is_refused_by_field(env: dict[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SERVICE)
    assert main(["apply", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["get", "svc", "-n", "shop"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["NAME", "CLUSTER-IP", "EXTERNAL-IPS", "LB-IPS", "TRAFFIC-POLICY"],
        ["web", "10.96.0.10", "198.51.100.5", "Local"]]  # no external IPs: an empty column
    path.write_text(SERVICE.replace("198.51.100.5", "198.51.100.0/24"))
    assert main(["apply", "-f", str(path)]) == 1
    assert "spec.loadBalancerIPs[0]" in capsys.readouterr().err
    assert main(["delete", "service", "web", "-n", "shop"]) == 0


BOTH_NETWORK_POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  order: 100
  selector: app == 'web'
  serviceAccountSelector: role == 'frontend'
  ingress: [{action: Allow, source: {serviceAccounts: {names: [api]}}}]
"""


def test_calico_and_kubernetes_network_policies_of_one_name_live_apart(
        env: dict[str, str], tmp_path: Path, datastore: EtcdDatastore, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(BOTH_NETWORK_POLICIES)
    assert main(["apply", "-f", str(path)]) == 0
    assert "Successfully applied 2" in capsys.readouterr().out
    keys = KeyLayout(env["L3NET_ETCD_PREFIX"])
    k8s = datastore.get(keys.resource("networkpolicies", "web", "shop"))
    calico = datastore.get(keys.resource("caliconetworkpolicies", "web", "shop"))
    assert k8s is not None and calico is not None
    assert json.loads(k8s.value)["apiVersion"] == "networking.k8s.io/v1"
    assert json.loads(calico.value)["apiVersion"] == "projectcalico.org/v3"
    assert main(["get", "cnp", "-n", "shop"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["NAME", "ORDER", "SELECTOR", "TYPES"], ["web", "100", "app", "==", "'web'", "Ingress"]]
    assert main(["get", "networkpolicy", "web", "-n", "shop", "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["apiVersion"] == "networking.k8s.io/v1"
    assert main(["get", "caliconetworkpolicy", "web", "-n", "shop", "-o", "yaml"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert (doc["apiVersion"], doc["kind"]) == ("projectcalico.org/v3", "NetworkPolicy")
    assert doc["spec"]["serviceAccountSelector"] == "role == 'frontend'"
    # Deleting one by its file entry leaves the other.
    path.write_text(BOTH_NETWORK_POLICIES.split("---\n")[1])
    assert main(["delete", "-f", str(path)]) == 0
    assert datastore.get(keys.resource("caliconetworkpolicies", "web", "shop")) is None
    assert datastore.get(keys.resource("networkpolicies", "web", "shop")) is not None


def test_replace_requires_existing(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD)
    assert main(["replace", "-f", str(path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["create", "-f", str(path)]) == 0
    path.write_text(GOOD.replace("cidr: 10.9.0.0/16", "cidr: 10.9.0.0/16, natOutgoing: true"))
    assert main(["replace", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["get", "ippool", "good-pool", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["natOutgoing"] is True


def test_subprocess_stdin_apply_get_delete(env: dict[str, str], datastore: EtcdDatastore,
                                           key_layout: KeyLayout) -> None:
    run = subprocess.run([CTL, "apply", "-f", "-"], input=BASELINE, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    got = subprocess.run([CTL, "get", "nodes"], env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.splitlines()[1].split()[:3] == ["n1", "65001", "10.1.0.11/24"]
    # global flags after the subcommand override the environment
    other = subprocess.run([CTL, "get", "nodes", "--etcd-prefix", key_layout.prefix + "other/"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and len(other.stdout.splitlines()) == 1
    bad = subprocess.run([CTL, "apply", "-f", "-"], input=_np("{ingress: [{from: [{}]}]}"), env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "<stdin>#1 NetworkPolicy/web/allow-web: spec.ingress[0].from[0]:" in bad.stderr
    gone = subprocess.run([CTL, "delete", "node", "n1"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 0
    assert [kv.key for kv in datastore.list(key_layout.prefix)[0]] == [pool_guard_key(key_layout),
                                                                       key_layout.resource("ippools", "base-pool")]


def test_subprocess_unreachable_datastore_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD)
    env = {**os.environ, "L3NET_ETCD_ENDPOINTS": "http://127.0.0.1:9"}
    for argv in (["apply", "-f", str(path)], ["get", "ippools"]):
        run = subprocess.run([CTL, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert "127.0.0.1:9" in run.stderr and "Traceback" not in run.stderr
    # validation happens before connecting: bad input is still exit 1
    path.write_text("kind: [")
    run = subprocess.run([CTL, "apply", "-f", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1


def test_subprocess_help_and_version() -> None:
    run = subprocess.run([CTL, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "usage: l3netctl" in run.stdout and "--etcd-endpoints" in run.stdout
    version = subprocess.run([CTL, "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "Client Version" in version.stdout

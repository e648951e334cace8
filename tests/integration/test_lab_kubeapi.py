"""The lab's Kubernetes API stand-in, driven by the real kubectl and by l3net.kube.api (list/watch)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.kube.api import ApiError, KubeAPI
from l3net.lab.kubeapi import KubeAPIServer
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KUBECTL = shutil.which("kubectl")


@pytest.fixture
def kubeapi(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, str]]:
    srv = KubeAPIServer(bookmark_interval=0.3).start()
    try:
        yield srv, srv.kubeconfig(str(tmp_path / "kubeconfig"))
    finally:
        srv.stop()


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if KUBECTL is None:
        pytest.fail("kubectl is missing: .ci/setup installs Debian's kubectl package")
    proc = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, *args], input=stdin, capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


POD = """apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    ports: [{name: http, containerPort: 8080}]
"""

POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: http}]
"""


def test_kubectl_create_apply_label_delete(kubeapi: tuple[KubeAPIServer, str]) -> None:
    srv, cfg = kubeapi
    st = srv.store
    kubectl(cfg, "create", "namespace", "shop")
    kubectl(cfg, "label", "namespace", "shop", "team=a")
    assert st.get(st.rtype("namespaces"), "", "shop")["metadata"]["labels"] == {
        "team": "a", "kubernetes.io/metadata.name": "shop"}
    assert "pod/web-1 created" in kubectl(cfg, "apply", "-f", "-", stdin=POD + "---\n" + POLICY).stdout
    pod = st.get(st.rtype("pods"), "shop", "web-1")
    assert pod["metadata"]["labels"] == {"app": "web"} and pod["spec"]["serviceAccountName"] == "default"
    rv = pod["metadata"]["resourceVersion"]
    assert "unchanged" in kubectl(cfg, "apply", "-f", "-", stdin=POD).stdout
    assert st.get(st.rtype("pods"), "shop", "web-1")["metadata"]["resourceVersion"] == rv  # no-op apply
    kubectl(cfg, "apply", "-f", "-", stdin=POD.replace("{app: web}", "{app: web, tier: front}"))
    kubectl(cfg, "label", "pod", "-n", "shop", "web-1", "app=db", "--overwrite")
    kubectl(cfg, "label", "pod", "-n", "shop", "web-1", "tier-")
    assert st.get(st.rtype("pods"), "shop", "web-1")["metadata"]["labels"] == {"app": "db"}
    out = kubectl(cfg, "get", "pods", "-A", "-l", "app in (db,x),!tier", "-o", "name").stdout.split()
    assert out == ["pod/web-1"]
    assert kubectl(cfg, "get", "pods", "-A", "-l", "app=web", "-o", "name").stdout.split() == []
    np = st.get(st.rtype("networkpolicies"), "shop", "allow-http")
    assert np["spec"]["ingress"][0]["ports"] == [{"port": "http"}]
    kubectl(cfg, "create", "serviceaccount", "robot", "-n", "shop")
    assert kubectl(cfg, "get", "sa", "-n", "shop", "-o", "name").stdout.split() == [
        "serviceaccount/default", "serviceaccount/robot"]
    kubectl(cfg, "delete", "pod", "-n", "shop", "web-1")
    bad = kubectl(cfg, "get", "pod", "-n", "shop", "web-1", check=False)
    assert bad.returncode != 0 and "not found" in bad.stderr
    # a pod in a namespace that does not exist is refused, naming the namespace
    bad = kubectl(cfg, "apply", "-f", "-", stdin=POD.replace("shop", "nowhere"), check=False)
    assert bad.returncode != 0 and 'namespaces "nowhere" not found' in bad.stderr
    kubectl(cfg, "delete", "namespace", "shop")
    assert st.list(st.rtype("networkpolicies"), "")["items"] == []


def test_optimistic_concurrency_and_dry_run(kubeapi: tuple[KubeAPIServer, str]) -> None:
    _, cfg = kubeapi
    api = KubeAPI(cfg)
    ns = api.create("Namespace", {"metadata": {"name": "a"}})
    stale = json.loads(json.dumps(ns))
    ns["metadata"]["labels"]["x"] = "1"
    api.replace("Namespace", ns)
    stale["metadata"]["labels"]["x"] = "2"
    with pytest.raises(ApiError) as err:
        api.replace("Namespace", stale)
    assert err.value.status == 409
    assert api.get("Namespace", "a")["metadata"]["labels"]["x"] == "1"
    kubectl(cfg, "apply", "--dry-run=server", "-f", "-", stdin=POD.replace("shop", "a"))
    assert api.get("Pod", "web-1", "a") is None


def test_list_continue_is_a_snapshot_and_expires(kubeapi: tuple[KubeAPIServer, str]) -> None:
    srv, cfg = kubeapi
    st = srv.store
    rt = st.rtype("namespaces")
    for i in range(5):
        st.create(rt, "", {"metadata": {"name": f"ns{i}"}})
    page = st.list(rt, "", limit=3)
    assert [o["metadata"]["name"] for o in page["items"]] == ["default", "kube-system", "ns0"]
    assert page["metadata"]["remainingItemCount"] == 4
    st.delete(rt, "", "ns3")
    st.create(rt, "", {"metadata": {"name": "ns9"}})
    rest = st.list(rt, "", limit=10, cont=page["metadata"]["continue"])
    # the continuation serves the first page's snapshot: ns3 still there, ns9 not yet
    assert [o["metadata"]["name"] for o in rest["items"]] == ["ns1", "ns2", "ns3", "ns4"]
    assert rest["metadata"]["resourceVersion"] == page["metadata"]["resourceVersion"]
    api = KubeAPI(cfg)
    items, _ = api.list("Namespace", limit=2)  # the client walks the continue chain
    assert sorted(o["metadata"]["name"] for o in items) == ["default", "kube-system", "ns0", "ns1", "ns2", "ns4",
                                                            "ns9"]
    st.expire()
    with pytest.raises(ApiError) as err:
        api._call("GET", "/api/v1/namespaces", {"limit": 1, "continue": page["metadata"]["continue"]})
    assert err.value.status == 410


def test_watch_resume_bookmarks_and_gone(kubeapi: tuple[KubeAPIServer, str]) -> None:
    srv, cfg = kubeapi
    api = KubeAPI(cfg)
    _, rv0 = api.list("Namespace")
    api.create("Namespace", {"metadata": {"name": "w1", "labels": {"k": "v"}}})
    events = []
    for ev in api.watch("Namespace", rv0, timeout_seconds=5):
        events.append(ev)
        if ev["type"] == "BOOKMARK":
            break
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w1"
    bookmark_rv = events[-1]["object"]["metadata"]["resourceVersion"]
    assert int(bookmark_rv) >= int(events[0]["object"]["metadata"]["resourceVersion"])
    # resume from the bookmark: nothing replays, the next change arrives
    got: list[dict] = []

    def consume() -> None:
        for ev in api.watch("Namespace", bookmark_rv, timeout_seconds=5):
            got.append(ev)
            if ev["type"] == "ERROR":
                return

    opened = srv.watches_opened
    t = threading.Thread(target=consume)
    t.start()
    wait_for(lambda: srv.watches_opened > opened, 10, "the resumed watch is open")
    api.create("Namespace", {"metadata": {"name": "w2"}})
    wait_for(lambda: any(e["type"] == "ADDED" for e in got), 10, "w2 arrives on the resumed watch")
    srv.store.expire()  # the window is forgotten: the open watch ends with an ERROR 410
    t.join(10)
    kinds = [e["type"] for e in got if e["type"] != "BOOKMARK"]
    assert kinds == ["ADDED", "ERROR"] and got[-1]["object"]["code"] == 410
    assert [e["object"]["metadata"]["name"] for e in got if e["type"] == "ADDED"] == ["w2"]
    with pytest.raises(ApiError) as err:
        next(iter(api.watch("Namespace", bookmark_rv, timeout_seconds=2)))
    assert err.value.status == 410


def test_watch_selector_reports_leaving_as_deleted(kubeapi: tuple[KubeAPIServer, str]) -> None:
    srv, _ = kubeapi
    st = srv.store
    rt = st.rtype("namespaces")
    start = str(st.resource_version)
    st.create(rt, "", {"metadata": {"name": "s1", "labels": {"team": "a"}}})
    st.patch(rt, "", "s1", "application/merge-patch+json", {"metadata": {"labels": {"team": "b"}}})
    evs = list(st.watch(rt, "", start, label_sel="team=a", timeout=0.5))
    assert [e["type"] for e in evs] == ["ADDED", "DELETED"]
    with pytest.raises(Exception, match="labelSelector"):
        st.watch(rt, "", start, label_sel="team in (a")


def test_deploy_manifests_apply_to_the_stand_in(kubeapi: tuple[KubeAPIServer, str]) -> None:
    srv, cfg = kubeapi
    deploy = str(Path(__file__).resolve().parents[2] / "deploy")
    out = kubectl(cfg, "apply", "--dry-run=client", "-f", deploy).stdout
    assert "daemonset.apps/l3net-node created (dry run)" in out
    assert "deployment.apps/l3net-kube-controller created (dry run)" in out
    kubectl(cfg, "apply", "--dry-run=server", "-f", deploy)
    assert srv.store.list(srv.store.rtype("daemonsets"), "")["items"] == []  # a dry run stores nothing
    kubectl(cfg, "apply", "-f", deploy)
    assert "unchanged" in kubectl(cfg, "apply", "-f", deploy).stdout
    ds = srv.store.get(srv.store.rtype("daemonsets"), "kube-system", "l3net-node")
    assert ds["spec"]["template"]["spec"]["hostPID"] is True


def test_https_serving_with_kubectl(tmp_path: Path) -> None:
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    srv = KubeAPIServer(certfile=str(cert), keyfile=str(key)).start()
    try:
        assert srv.url.startswith("https://")
        cfg = srv.kubeconfig(str(tmp_path / "kubeconfig"))
        kubectl(cfg, "create", "namespace", "tls-ok")
        assert srv.store.get(srv.store.rtype("namespaces"), "", "tls-ok")["metadata"]["name"] == "tls-ok"
        items, _ = KubeAPI(cfg).list("Namespace")
        assert "tls-ok" in {i["metadata"]["name"] for i in items}
    finally:
        srv.stop()

"""The kube-controller against the lab's API stand-in and a real etcd: mirror, marks, resync, 410, nodes, leases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore
from l3net.ipam import IPAM
from l3net.keys import KeyLayout
from l3net.kube.api import KubeAPI
from l3net.kube.controller import REGISTRY, KubeController
from l3net.kube.leader import LeaderElector
from l3net.kube.translate import MARK, MARK_VALUE
from l3net.lab.kubeapi import KubeAPIServer
from l3net.model.client import ResourceClient
from l3net.model.validation import resource_from_document, workload_endpoint_name
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubeAPI]:
    srv = KubeAPIServer(bookmark_interval=0.5).start()
    api = KubeAPI(srv.kubeconfig(str(tmp_path / "kubeconfig")))
    api.server = srv  # type: ignore[attr-defined]
    try:
        yield api
    finally:
        api.close()
        srv.stop()


@pytest.fixture
def controllers(cluster: KubeAPI, datastore: EtcdDatastore, key_layout: KeyLayout) -> Iterator[list[KubeController]]:
    made: list[KubeController] = []
    yield made
    for c in made:
        c.stop()


def new_controller(made: list[KubeController], api: KubeAPI, ds: EtcdDatastore, keys: KeyLayout) -> KubeController:
    c = KubeController(api, ds, keys, resync_interval=3600, retry_interval=0.2).start()
    made.append(c)
    assert c.wait_idle(20), "the controller never finished its first pass"
    return c


def pod(ns: str, name: str, node: str, labels: dict[str, str], sa: str = "default") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": "x",
                                     "ports": [{"name": "http", "containerPort": 8080},
                                               {"containerPort": 9000}]}]}}


def cni_endpoint(client: ResourceClient, ns: str, podname: str, node: str, ip: str) -> None:
    """The WorkloadEndpoint the CNI plugin writes at ADD (before the controller knows about it)."""
    if client.get("IPPool", "p") is None:  # an endpoint's address must lie in a pool
        client.apply([resource_from_document({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
                                              "spec": {"cidr": "10.244.0.0/16", "blockSize": 26}})])
    doc = {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
           "metadata": {"name": workload_endpoint_name(node, podname, "eth0"), "namespace": ns,
                        "labels": {"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s"}},
           "spec": {"node": node, "orchestrator": "k8s", "pod": podname, "endpoint": "eth0", "containerID": "c1",
                    "interfaceName": "cali0123456789a", "ipNetworks": [f"{ip}/32"], "mac": "02:00:00:00:00:01"}}
    client.apply([resource_from_document(doc)])


def test_mirror_namespaces_policies_pods_and_marks(cluster: KubeAPI, datastore: EtcdDatastore,
                                                   key_layout: KeyLayout, controllers: list) -> None:
    client = ResourceClient(datastore, key_layout)
    # written with l3netctl (no mark): the controller must never touch it
    client.apply([resource_from_document({"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "ops", "labels": {"by": "hand"}}})])
    cluster.create("Namespace", {"metadata": {"name": "shop", "labels": {"team": "a"}}})
    cluster.create("Namespace", {"metadata": {"name": "ops", "labels": {"by": "kube"}}})
    cluster.create("ServiceAccount", {"metadata": {"name": "robot", "labels": {"role": "bot"}}}, "shop")
    cluster.create("Pod", pod("shop", "web-1", "n1", {"app": "web"}, sa="robot"), "shop")
    cni_endpoint(client, "shop", "web-1", "n1", "10.244.0.5")
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "allow-http", "namespace": "shop"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"ports": [{"port": "http"}]}]}}
    cluster.create("NetworkPolicy", np, "shop")
    ctl = new_controller(controllers, cluster, datastore, key_layout)

    shop = client.get("Namespace", "shop")
    assert shop is not None and shop.labels["team"] == "a" and shop.annotations == {MARK: MARK_VALUE}
    ops = client.get("Namespace", "ops")
    assert ops is not None and ops.labels == {"by": "hand"} and MARK not in ops.annotations
    assert ctl.foreign["Namespace"] == 1
    pol = client.get("NetworkPolicy", "allow-http", "shop")
    assert pol is not None and pol.spec["ingress"] == [{"ports": [{"port": "http"}]}]
    wep = client.list("WorkloadEndpoint", "shop")[0]
    assert wep.labels == {"app": "web", "pcsa.role": "bot", "projectcalico.org/namespace": "shop",
                          "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "robot"}
    assert wep.spec["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert wep.spec["serviceAccountName"] == "robot"

    # label changes flow through the watch
    p = cluster.get("Pod", "web-1", "shop")
    p["metadata"]["labels"] = {"app": "db"}
    cluster.replace("Pod", p, "shop")
    wait_for(lambda: client.list("WorkloadEndpoint", "shop")[0].labels.get("app") == "db", 10, "pod relabel")
    cluster._call("PATCH", "/api/v1/namespaces/shop", body={"metadata": {"labels": {"team": "b"}}},
                  content_type="application/merge-patch+json")
    wait_for(lambda: client.get("Namespace", "shop").labels.get("team") == "b", 10, "namespace relabel")
    # deletions: ours go, the hand-written one stays
    cluster._call("DELETE", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/allow-http")
    cluster._call("DELETE", "/api/v1/namespaces/ops")
    wait_for(lambda: client.get("NetworkPolicy", "allow-http", "shop") is None, 10, "policy deleted")
    assert ctl.wait_idle(10)
    assert client.get("Namespace", "ops") is not None


def metric_writes() -> float:
    return sum(s.value for m in REGISTRY.collect() if m.name == "l3net_kube_controller_writes"
               for s in m.samples if s.name.endswith("_total"))


def test_services_are_mirrored_with_their_load_balancer_status(cluster: KubeAPI, datastore: EtcdDatastore,
                                                               key_layout: KeyLayout, controllers: list) -> None:
    client = ResourceClient(datastore, key_layout)
    cluster.create("Namespace", {"metadata": {"name": "shop"}})
    svc = {"metadata": {"name": "web", "namespace": "shop"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
                    "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    cluster.create("Service", svc, "shop")
    ctl = new_controller(controllers, cluster, datastore, key_layout)
    got = client.get("Service", "web", "shop")
    assert got is not None and got.annotations == {MARK: MARK_VALUE}
    assert got.spec == {"clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local", "selector": {"app": "web"}}
    # The load balancer controller fills in the status: the address reaches the datastore.
    cluster.patch_status("Service", "web", "shop", {"loadBalancer": {"ingress": [{"ip": "198.51.100.5"}]}})
    wait_for(lambda: client.get("Service", "web", "shop").spec.get("loadBalancerIPs") == ["198.51.100.5"], 10,
             "load balancer IP mirrored")
    assert ctl.wait_idle(10)
    writes = ctl.writes["Service"]
    # An unchanged Service after a restart of the controller makes no write.
    ctl.stop()
    again = new_controller(controllers, cluster, datastore, key_layout)
    assert again.writes["Service"] == 0 and writes == 2
    cluster._call("DELETE", "/api/v1/namespaces/shop/services/web")
    wait_for(lambda: client.get("Service", "web", "shop") is None, 10, "service deleted")


def test_restart_and_410_converge_without_spurious_writes(cluster: KubeAPI, datastore: EtcdDatastore,
                                                          key_layout: KeyLayout, controllers: list) -> None:
    client = ResourceClient(datastore, key_layout)
    for i in range(12):
        cluster.create("Namespace", {"metadata": {"name": f"ns{i}", "labels": {"i": str(i)}}})
        cluster.create("Pod", pod(f"ns{i}", "p", "n1", {"app": f"a{i}"}), f"ns{i}")
        cni_endpoint(client, f"ns{i}", "p", "n1", f"10.244.0.{i + 10}")
    first = new_controller(controllers, cluster, datastore, key_layout)  # 12 + default + kube-system
    assert first.writes["Namespace"] == 14 and first.writes["WorkloadEndpoint"] == 12
    first.stop()

    # a second controller (a restart) over equal state: zero writes, in its counters and in the metric
    metric_before = metric_writes()
    second = new_controller(controllers, cluster, datastore, key_layout)
    assert sum(second.writes.values()) == 0, second.stats()
    assert metric_writes() == metric_before

    # the API forgets its window: every watch gets 410 and the controller relists, again without writes
    second.reflectors["Namespace"].page_size = 5  # relist in continue pages
    cluster.server.store.expire()  # type: ignore[attr-defined]
    wait_for(lambda: all(r.relists_gone >= 1 for r in second.reflectors.values()), 15, "relist after 410")
    assert second.wait_idle(15)
    assert sum(second.writes.values()) == 0, second.stats()

    # a change made while the controller is down is picked up by the next one, exactly once
    second.stop()
    cluster._call("PATCH", "/api/v1/namespaces/ns3", body={"metadata": {"labels": {"i": "changed"}}},
                  content_type="application/merge-patch+json")
    cluster._call("DELETE", "/api/v1/namespaces/ns4")
    third = new_controller(controllers, cluster, datastore, key_layout)
    assert client.get("Namespace", "ns3").labels["i"] == "changed"
    assert client.get("Namespace", "ns4") is None
    assert dict(third.writes) == {"Namespace": 2}, third.stats()
    assert metric_writes() == metric_before + 2


def test_deleted_node_releases_its_ipam(cluster: KubeAPI, datastore: EtcdDatastore, key_layout: KeyLayout,
                                        controllers: list) -> None:
    client = ResourceClient(datastore, key_layout)
    datastore.put(key_layout.resource("ippools", "p"), json.dumps(
        {"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": "p"},
         "spec": {"cidr": "10.244.0.0/16", "blockSize": 26}}).encode())
    ipam = IPAM(datastore, key_layout)
    cluster.create("Node", {"metadata": {"name": "n1", "labels": {"zone": "a"}}})
    cluster.create("Node", {"metadata": {"name": "n2"}})
    ip1 = ipam.auto_assign("net.c1", "n1", {"namespace": "default", "pod": "a"})[0]
    ip2 = ipam.auto_assign("net.c2", "n2", {"namespace": "default", "pod": "b"})[0]
    cni_endpoint(client, "default", "a", "n1", ip1)
    cni_endpoint(client, "default", "b", "n2", ip2)
    ctl = new_controller(controllers, cluster, datastore, key_layout)
    node = client.get("Node", "n1")
    assert node is not None and node.labels == {"zone": "a"} and node.annotations == {MARK: MARK_VALUE}

    cluster._call("DELETE", "/api/v1/nodes/n1")
    wait_for(lambda: not ipam.affinities("n1", state=None), 10, "n1's affinities released")
    assert ctl.wait_idle(10)
    assert ipam.handle_ips("net.c1") == [] and ipam.handle_ips("net.c2") == [ip2]
    assert [w.spec["node"] for w in client.list("WorkloadEndpoint")] == ["n2"]
    assert client.get("Node", "n1") is None and ipam.affinities("n2")
    report = ipam.check()
    assert not report.orphaned_affinities and not report.double_allocations and not report.inconsistencies

    # deleted while no controller ran: released at the next start
    ctl.stop()
    cluster._call("DELETE", "/api/v1/nodes/n2")
    new_controller(controllers, cluster, datastore, key_layout)
    assert ipam.handle_ips("net.c2") == [] and not ipam.affinities("n2", state=None)


def test_lease_elects_one_leader_and_fails_over(cluster: KubeAPI) -> None:
    started: list[str] = []
    a = LeaderElector(cluster, "kube-system", "ctl", "a", lease_duration=3, renew_interval=0.5, retry_interval=0.3,
                      on_start=lambda: started.append("a")).start()
    wait_for(lambda: a.is_leader, 10, "a leads")
    b = LeaderElector(cluster, "kube-system", "ctl", "b", lease_duration=3, renew_interval=0.5, retry_interval=0.3,
                      on_start=lambda: started.append("b")).start()
    try:
        time.sleep(1.5)
        assert not b.is_leader and started == ["a"]
        a.stop(release=True)
        wait_for(lambda: b.is_leader, 10, "b takes over")
        lease = cluster.get("Lease", "ctl", "kube-system")
        assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] >= 1
    finally:
        b.stop()
        a.stop()


def test_a_policy_l3net_refuses_is_skipped_and_the_rest_converges(cluster: KubeAPI, datastore: EtcdDatastore,
                                                                   key_layout: KeyLayout, controllers: list) -> None:
    client = ResourceClient(datastore, key_layout)
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "bad-port", "namespace": "default"},
           "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}}
    good = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {"podSelector": {}}}
    cluster.create("NetworkPolicy", bad, "default")
    cluster.create("NetworkPolicy", good, "default")
    ctl = new_controller(controllers, cluster, datastore, key_layout)
    assert client.get("NetworkPolicy", "bad-port", "default") is None
    assert client.get("NetworkPolicy", "deny-all", "default") is not None
    assert ctl.invalid["NetworkPolicy"] == 1 and ctl.errors == 0
    # once the object is fixed in the API, it is stored
    fixed = cluster.get("NetworkPolicy", "bad-port", "default")
    fixed["spec"]["ingress"][0]["ports"][0]["port"] = 7000
    cluster.replace("NetworkPolicy", fixed, "default")
    wait_for(lambda: client.get("NetworkPolicy", "bad-port", "default") is not None, 10, "the fixed policy")


def test_a_pod_naming_its_account_with_the_deprecated_field_gets_that_accounts_labels(
        cluster: KubeAPI, datastore: EtcdDatastore, key_layout: KeyLayout, controllers: list) -> None:
    """``spec.serviceAccount`` alone (deprecated, still honoured by the API server) names the account whose
    labels the endpoint carries, and a relabel of that account reaches the endpoint, as for
    ``serviceAccountName``."""
    client = ResourceClient(datastore, key_layout)
    cluster.create("Namespace", {"metadata": {"name": "old"}})
    cluster.create("ServiceAccount", {"metadata": {"name": "legacy", "labels": {"era": "old"}}}, "old")
    legacy = pod("old", "w-1", "n1", {"app": "w"})
    del legacy["spec"]["serviceAccountName"]
    legacy["spec"]["serviceAccount"] = "legacy"
    cluster.create("Pod", legacy, "old")
    cni_endpoint(client, "old", "w-1", "n1", "10.244.0.9")
    ctl = new_controller(controllers, cluster, datastore, key_layout)
    wep = client.list("WorkloadEndpoint", "old")[0]
    assert wep.labels["pcsa.era"] == "old" and wep.labels["projectcalico.org/serviceaccount"] == "legacy"
    sa = cluster.get("ServiceAccount", "legacy", "old")
    sa["metadata"]["labels"] = {"era": "new"}
    cluster.replace("ServiceAccount", sa, "old")
    wait_for(lambda: client.list("WorkloadEndpoint", "old")[0].labels.get("pcsa.era") == "new", 10,
             "account relabel reaches the endpoint")
    assert ctl.wait_idle(10)

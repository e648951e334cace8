"""Calico's namespaced NetworkPolicy and service-account matching: the reference evaluator states the rules,
and every case is also run through the compiled program (policy.simulator), which must agree."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from l3net.model import Resource
from policy.compiler import compile_policy
from policy.evaluator import Packet, is_allowed
from policy.simulator import Cluster
from tests.builders import ns, wep

pytestmark = pytest.mark.unit

NSS = [ns("a", {"team": "x"}), ns("b", {"team": "y"})]


def _pod(name: str, namespace: str, node: str, ip: str, labels: dict[str, str], account: str,
         account_labels: dict[str, str] | None = None) -> Resource:
    w = wep(name, namespace, node, ip, labels)
    sa = {f"pcsa.{k}": v for k, v in (account_labels or {}).items()}
    return dataclasses.replace(w, spec={**w.spec, "serviceAccountName": account}, labels={**w.labels, **sa})


A_WEB = _pod("web", "a", "n1", "10.0.1.2", {"app": "web"}, "api", {"tier": "front"})
A_DB = _pod("db", "a", "n1", "10.0.1.3", {"app": "db"}, "default")
B_WEB = _pod("web", "b", "n2", "10.0.2.2", {"app": "web"}, "api", {"tier": "front"})  # A_WEB's twin in b
B_CLI = _pod("cli", "b", "n2", "10.0.2.3", {"app": "cli"}, "robot", {"tier": "back"})
# Claims the api account by label, but its spec says otherwise: the name comes from the spec only.
A_FAKE = _pod("fake", "a", "n2", "10.0.2.4", {"app": "cli", "pcsa.projectcalico.org/name": "api"}, "default")
WLS = [A_WEB, A_DB, B_WEB, B_CLI, A_FAKE]
NODES = ("n1", "n2")


def cnp(name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    return Resource("CalicoNetworkPolicy", name, spec, namespace=namespace)


def gnp(name: str, spec: dict[str, Any]) -> Resource:
    return Resource("GlobalNetworkPolicy", name, spec)


def allowed(pols: list[Resource], src: Resource, dst: Resource, port: int = 80) -> bool:
    """The evaluator's verdict for a TCP connection src -> dst, after checking the compiled rules agree."""
    pkt = Packet(src.spec["ipNetworks"][0].split("/")[0], dst.spec["ipNetworks"][0].split("/")[0], "TCP", port)
    expected = is_allowed(pols, NSS, WLS, pkt)
    programs = {n: compile_policy([w for w in WLS if w.spec["node"] == n], WLS, pols, NSS) for n in NODES}
    assert Cluster(programs, WLS).send(pkt) is expected, (pkt, expected)
    return expected


def test_applies_only_in_its_namespace() -> None:
    deny_web = cnp("deny-web", "a", {"selector": "app == 'web'", "ingress": [{"action": "Deny"}]})
    assert not allowed([deny_web], B_CLI, A_WEB)
    assert allowed([deny_web], B_CLI, B_WEB)  # same labels, other namespace: unaffected
    assert allowed([deny_web], B_CLI, A_DB)   # its namespace, not selected


def test_rule_selector_reads_in_the_policy_namespace_unless_namespace_selector() -> None:
    own_ns = cnp("from-web", "a", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"selector": "app == 'web'"}}]})
    assert allowed([own_ns], A_WEB, A_DB)
    assert not allowed([own_ns], B_WEB, A_DB)  # a web pod, but in b: end of tier
    any_ns = cnp("from-web", "a", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"selector": "app == 'web'", "namespaceSelector": "all()"}}]})
    assert allowed([any_ns], B_WEB, A_DB)
    team_y = cnp("from-web", "a", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"namespaceSelector": "team == 'y'"}}]})
    assert allowed([team_y], B_CLI, A_DB) and not allowed([team_y], A_WEB, A_DB)


def test_not_selector_alone_means_the_policy_namespace_except() -> None:
    pol = cnp("not-web", "a", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"notSelector": "app == 'web'"}}]})
    assert allowed([pol], A_FAKE, A_DB)
    assert not allowed([pol], A_WEB, A_DB)
    assert not allowed([pol], B_CLI, A_DB)  # not web, but not in a
    # A GlobalNetworkPolicy's notSelector alone excludes only: any other address passes.
    glob = gnp("not-web", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"notSelector": "app == 'web'"}}]})
    assert allowed([glob], B_CLI, A_DB)


def test_one_tier_with_global_policies_by_order_then_name() -> None:
    deny = gnp("m-deny", {"order": 10, "ingress": [{"action": "Deny"}]})
    allow = cnp("z-allow", "a", {"order": 5, "ingress": [{"action": "Allow"}]})
    assert allowed([deny, allow], B_CLI, A_DB)        # the namespaced one comes first (order 5)
    assert not allowed([deny, allow], B_CLI, B_WEB)   # b: only the global deny applies
    later = dataclasses.replace(allow, spec={**allow.spec, "order": 20})
    assert not allowed([deny, later], B_CLI, A_DB)
    # Equal order: by name, the namespaced one's being "a/z-allow", which sorts before "m-deny".
    tie = dataclasses.replace(allow, spec={**allow.spec, "order": 10})
    assert allowed([deny, tie], B_CLI, A_DB)
    # Pass ends the Calico tier: with no Kubernetes policy, the profile allows.
    passes = cnp("pass", "a", {"order": 1, "ingress": [{"action": "Pass"}]})
    assert allowed([deny, passes], B_CLI, A_DB)


def test_service_account_selector_restricts_the_policy() -> None:
    pol = cnp("front-only", "a", {"serviceAccountSelector": "tier == 'front'", "ingress": [{"action": "Deny"}]})
    assert not allowed([pol], B_CLI, A_WEB)  # api account, tier front
    assert allowed([pol], B_CLI, A_DB)       # default account, no labels
    by_name = gnp("api-only", {"serviceAccountSelector": "projectcalico.org/name == 'api'",
                               "ingress": [{"action": "Deny"}]})
    assert not allowed([by_name], B_CLI, A_WEB) and not allowed([by_name], B_CLI, B_WEB)
    assert allowed([by_name], B_CLI, A_FAKE)  # its own pcsa.projectcalico.org/name label does not count


def test_service_accounts_rule_selects_pods_by_account() -> None:
    names = cnp("from-api", "a", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"serviceAccounts": {"names": ["api"]}}}]})
    assert allowed([names], A_WEB, A_DB)
    assert not allowed([names], A_FAKE, A_DB)  # the label claims api; the account is default
    assert not allowed([names], B_WEB, A_DB)   # api, but in b: a namespaced policy's side stays in a
    labels = gnp("from-back", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"serviceAccounts": {"selector": "tier == 'back'"}}}]})
    assert allowed([labels], B_CLI, A_DB) and not allowed([labels], A_WEB, A_DB)
    accounts = {"names": ["api", "robot"], "selector": "tier == 'front'"}
    both = gnp("both", {"selector": "app == 'db'", "ingress": [
        {"action": "Allow", "source": {"serviceAccounts": accounts}}]})
    assert allowed([both], B_WEB, A_DB) and not allowed([both], B_CLI, A_DB)


def test_a_translated_pod_carries_its_account_to_the_selectors() -> None:
    """The kube-controller's translation of a pod and its ServiceAccount is what the selectors read."""
    from l3net.kube.translate import endpoint_fields
    from policy.model import endpoint_labels, service_account_labels

    pod = {"metadata": {"name": "web", "namespace": "a", "labels": {"app": "web", "pcsa.role": "spoofed"}},
           "spec": {"serviceAccountName": "api", "containers": []}}
    account = {"metadata": {"name": "api", "labels": {"role": "frontend", "projectcalico.org/name": "other"}}}
    labels, _, name = endpoint_fields(pod, account)
    w = dataclasses.replace(A_WEB, labels=labels, spec={**A_WEB.spec, "serviceAccountName": name})
    assert service_account_labels(w) == {"role": "frontend", "projectcalico.org/name": "api"}
    seen = endpoint_labels(w, {})
    assert seen["pcsa.role"] == "frontend" and seen["pcsa.projectcalico.org/name"] == "api"
    assert seen["projectcalico.org/serviceaccount"] == "api"
    pol = cnp("api", "a", {"serviceAccountSelector": "role == 'frontend' && projectcalico.org/name == 'api'",
                           "ingress": [{"action": "Deny"}]})
    pkt = Packet("10.0.2.3", "10.0.1.2", "TCP", 80)
    world = [w if x is A_WEB else x for x in WLS]
    assert not is_allowed([pol], NSS, world, pkt)
    programs = {n: compile_policy([x for x in world if x.spec["node"] == n], world, [pol], NSS) for n in NODES}
    assert Cluster(programs, world).send(pkt) is False

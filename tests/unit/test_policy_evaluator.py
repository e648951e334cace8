"""The reference evaluator states Kubernetes NetworkPolicy semantics; these pin the tricky corners."""

from __future__ import annotations

import pytest

from policy.evaluator import Packet, is_allowed, reply_allowed
from tests.builders import netpol, ns, wep

pytestmark = pytest.mark.unit

NSS = [ns("prod", {"env": "prod"}), ns("dev", {"env": "dev"})]
WEB = wep("web", "prod", "n1", "10.0.1.2", {"app": "web"}, [{"name": "http", "protocol": "TCP", "port": 8080}])
DB = wep("db", "prod", "n1", "10.0.1.3", {"app": "db"})
DEVWEB = wep("devweb", "dev", "n2", "10.0.2.2", {"app": "web"})
WLS = [WEB, DB, DEVWEB]


def allowed(pols, src, dst, proto="TCP", port=80) -> bool:
    return is_allowed(pols, NSS, WLS, Packet(src, dst, proto, port))


def test_no_policy_allows_everything() -> None:
    assert allowed([], "10.0.1.3", "10.0.1.2") and allowed([], "1.2.3.4", "10.0.2.2")


def test_policy_types_default_and_empty_rule_lists() -> None:
    deny_in = netpol("deny", "prod", {"podSelector": {}})
    assert not allowed([deny_in], "10.0.2.2", "10.0.1.2")
    assert allowed([deny_in], "10.0.1.2", "10.0.2.2")  # egress not isolated by default
    empty_egress = netpol("e", "prod", {"podSelector": {}, "egress": []})
    assert allowed([empty_egress], "10.0.1.2", "10.0.2.2")  # egress: [] does not add Egress
    deny_out = netpol("o", "prod", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert not allowed([deny_out], "10.0.1.2", "10.0.2.2") and allowed([deny_out], "10.0.2.2", "10.0.1.2")


def test_missing_and_empty_from_mean_all_sources() -> None:
    for rule in ({}, {"from": []}, {"ports": []}):
        assert allowed([netpol("p", "prod", {"podSelector": {}, "ingress": [rule]})], "9.9.9.9", "10.0.1.2")


def test_pod_and_namespace_selector_and_vs_or() -> None:
    and_peer = {"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {"matchLabels": {"env": "dev"}}}
    p_and = netpol("p", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [and_peer]}]})
    assert allowed([p_and], "10.0.2.2", "10.0.1.3") and not allowed([p_and], "10.0.1.2", "10.0.1.3")
    or_peers = [{"podSelector": {"matchLabels": {"app": "web"}}},
                {"namespaceSelector": {"matchLabels": {"env": "dev"}}}]
    p_or = netpol("p", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": or_peers}]})
    assert allowed([p_or], "10.0.2.2", "10.0.1.3") and allowed([p_or], "10.0.1.2", "10.0.1.3")
    # podSelector alone means the policy's own namespace only
    only_pod = netpol("p", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert not allowed([only_pod], "10.0.2.2", "10.0.1.3")
    by_name = netpol("p", "prod", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]}]})
    assert allowed([by_name], "10.0.2.2", "10.0.1.2") and not allowed([by_name], "10.0.1.3", "10.0.1.2")


def test_ip_block_with_except_matches_pods_and_externals() -> None:
    p = netpol("p", "prod", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}]}]})
    assert allowed([p], "10.0.9.9", "10.0.1.2") and allowed([p], "10.0.1.3", "10.0.1.2")
    assert not allowed([p], "10.0.2.2", "10.0.1.2") and not allowed([p], "192.168.0.1", "10.0.1.2")


def test_ports_named_range_protocol() -> None:
    named = netpol("p", "prod", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    assert allowed([named], "9.9.9.9", "10.0.1.2", port=8080)
    assert not allowed([named], "9.9.9.9", "10.0.1.2", port=80)
    assert not allowed([named], "9.9.9.9", "10.0.1.3", port=8080)  # db has no port named http
    assert not allowed([named], "9.9.9.9", "10.0.1.2", "UDP", 8080)
    rng = netpol("p", "prod", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 5000,
                                                                           "endPort": 5002}]}]})
    assert allowed([rng], "9.9.9.9", "10.0.1.2", "UDP", 5002) and not allowed([rng], "9.9.9.9", "10.0.1.2", "UDP", 5003)
    assert not allowed([rng], "9.9.9.9", "10.0.1.2", "TCP", 5001)
    proto_only = netpol("p", "prod", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP"}]}]})
    assert allowed([proto_only], "9.9.9.9", "10.0.1.2", "SCTP", 1) and not allowed([proto_only], "9.9.9.9",
                                                                                    "10.0.1.2", "ICMP", None)


def test_union_of_policies_and_other_namespaces_do_not_apply() -> None:
    deny = netpol("deny", "prod", {"podSelector": {}})
    allow_web = netpol("web", "prod", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    dev_deny = netpol("deny", "dev", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert allowed([deny, allow_web, dev_deny], "10.0.1.3", "10.0.1.2")
    assert not allowed([deny, allow_web], "10.0.1.2", "10.0.1.3")
    assert not allowed([dev_deny], "10.0.2.2", "10.0.1.2")  # egress of the dev pod
    assert allowed([dev_deny], "10.0.1.3", "10.0.1.2")  # the dev policy does not touch prod pods


def test_both_sides_and_replies() -> None:
    egress_deny = netpol("o", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"]})
    pkt = Packet("10.0.1.3", "10.0.1.2", "TCP", 80)
    assert not is_allowed([egress_deny], NSS, WLS, pkt)
    ingress_deny_web = netpol("i", "prod", {"podSelector": {"matchLabels": {"app": "web"}}})
    out = Packet("10.0.1.2", "10.0.1.3", "TCP", 80)
    assert is_allowed([ingress_deny_web], NSS, WLS, out) and reply_allowed([ingress_deny_web], NSS, WLS, out)


def gnp(name, spec):
    from l3net.model import Resource

    return Resource("GlobalNetworkPolicy", name, spec)


def test_gnp_order_first_match_decides_and_deny_beats_np_allow() -> None:
    allow_np = netpol("all", "prod", {"podSelector": {}, "ingress": [{}]})
    deny = gnp("deny-dev", {"order": 10, "selector": "app == 'web'", "ingress": [
        {"action": "Deny", "source": {"namespaceSelector": "env == 'dev'"}}, {"action": "Pass"}]})
    assert not allowed([allow_np, deny], "10.0.2.2", "10.0.1.2")       # GNP Deny overrides the NP allow
    assert allowed([allow_np, deny], "10.0.1.3", "10.0.1.2")           # Pass: the NP decides (allow)
    earlier = gnp("allow-first", {"order": 1, "ingress": [{"action": "Allow", "source": {"nets": ["10.0.2.0/24"]}}]})
    assert allowed([allow_np, deny, earlier], "10.0.2.2", "10.0.1.2")  # lower order decides first


def test_gnp_end_of_tier_log_and_pass_without_np() -> None:
    logs_only = gnp("log", {"selector": "all()", "ingress": [{"action": "Log"}]})
    assert not allowed([logs_only], "10.0.2.2", "10.0.1.2")  # applied, nothing allowed: end-of-tier drop
    passes = gnp("pass", {"selector": "all()", "ingress": [{"action": "Log"}, {"action": "Pass"}]})
    assert allowed([passes], "10.0.2.2", "10.0.1.2")  # passed, no NP isolates: the profile allows (Calico)
    deny_np = netpol("deny", "prod", {"podSelector": {}})
    assert not allowed([passes, deny_np], "10.0.2.2", "10.0.1.2")  # passed to an isolating NP


def test_gnp_entity_fields() -> None:
    rule = {"action": "Allow", "protocol": "TCP",
            "source": {"selector": "app == 'web'", "notNets": ["10.0.1.0/24"]},
            "destination": {"ports": ["http", "90:95"], "notPorts": [93]}}
    pol = gnp("g", {"selector": "projectcalico.org/namespace == 'prod'", "ingress": [rule]})
    assert allowed([pol], "10.0.2.2", "10.0.1.2", port=8080)        # named port on the destination pod
    assert allowed([pol], "10.0.2.2", "10.0.1.2", port=94)
    assert not allowed([pol], "10.0.2.2", "10.0.1.2", port=93)      # notPorts
    assert not allowed([pol], "10.0.1.3", "10.0.1.2", port=8080)    # db is not app=web
    assert not allowed([pol], "10.0.2.2", "10.0.1.2", "UDP", 8080)  # protocol
    assert allowed([pol], "10.0.1.2", "10.0.2.2")                   # dev is not selected by the GNP

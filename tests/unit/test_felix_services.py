"""felix.services and its place in felix.calc: which Service prefixes a node announces (Calico's behaviour)."""

from __future__ import annotations

from typing import Any

import pytest

from felix.calc import Model, compute
from felix.desired import Advertisement, RouteSpec
from felix.links import Link
from felix.services import ServiceCIDRs, is_service_prefix, service_cidrs, service_prefixes
from l3net.keys import KeyLayout
from l3net.model.bgp_specs import BGPConfigurationSpec, bgp_configuration_spec
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document, workload_endpoint_name
from tests.builders import Upd

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/u/")
CONFIG = {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/108"}],
          "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
          "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]}


def typed(spec: dict[str, Any]) -> BGPConfigurationSpec:
    """The typed spec the model hands out for a ``default`` BGPConfiguration with ``spec``."""
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": spec}
    return bgp_configuration_spec(resource_from_document(doc))


CIDRS = service_cidrs(typed(CONFIG))
ALL_CIDRS = {"10.96.0.0/12", "fd00:96::/108", "192.0.2.0/24", "198.51.100.0/24"}


def svc(name: str, ns: str = "shop", policy: str = "Local", selector: dict[str, str] | None = None,
        **spec: Any) -> Resource:
    body: dict[str, Any] = {"externalTrafficPolicy": policy, **spec}
    if selector is not None:
        body["selector"] = selector
    return Resource("Service", name, body, namespace=ns)


def ep(pod: str, ns: str = "shop", labels: dict[str, str] | None = None) -> Resource:
    return Resource("WorkloadEndpoint", f"n1-k8s-{pod}-eth0", {"node": "n1"}, namespace=ns,
                    labels=dict(labels or {}))


WEB = svc("web", selector={"app": "web"}, clusterIP="10.96.0.10", externalIPs=["192.0.2.7", "203.0.113.1"],
          loadBalancerIPs=["198.51.100.5", "192.0.2.99"])


def test_no_configuration_announces_nothing() -> None:
    assert service_prefixes(service_cidrs(None), [WEB], [ep("a", labels={"app": "web"})]) == frozenset()
    assert service_cidrs(typed({})) == ServiceCIDRs()


def test_every_node_announces_the_cidrs_and_a_cluster_service_adds_nothing() -> None:
    cluster = svc("web", policy="Cluster", selector={"app": "web"}, clusterIP="10.96.0.10",
                  loadBalancerIPs=["198.51.100.5"])
    assert service_prefixes(CIDRS, [cluster], [ep("a", labels={"app": "web"})]) == ALL_CIDRS


def test_local_service_with_a_local_endpoint_gets_host_routes_inside_its_own_lists_only() -> None:
    got = service_prefixes(CIDRS, [WEB], [ep("a", labels={"app": "web", "tier": "1"})])
    # 203.0.113.1 is in no CIDR; 192.0.2.99 is a LoadBalancer IP inside the *external* CIDR only: neither is sent.
    assert got == ALL_CIDRS | {"10.96.0.10/32", "192.0.2.7/32", "198.51.100.5/32"}


def test_local_service_without_a_matching_local_endpoint_gets_only_the_cidrs() -> None:
    others = [ep("a", labels={"app": "db"}),                 # other labels
              ep("b", ns="other", labels={"app": "web"}),    # same labels, other namespace
              ep("c")]                                        # no labels
    assert service_prefixes(CIDRS, [WEB], others) == ALL_CIDRS
    assert service_prefixes(CIDRS, [WEB], []) == ALL_CIDRS


def test_a_service_without_selector_selects_no_endpoint() -> None:
    for selector in (None, {}):
        s = svc("manual", selector=selector, loadBalancerIPs=["198.51.100.6"])
        assert service_prefixes(CIDRS, [s], [ep("a", labels={"app": "web"})]) == ALL_CIDRS


def test_ipv6_and_headless_and_dual_stack_cluster_ips() -> None:
    dual = svc("dual", selector={"app": "web"}, clusterIP="10.96.0.11", clusterIPs=["10.96.0.11", "fd00:96::11"])
    headless = svc("hl", selector={"app": "web"}, clusterIP="None")
    got = service_prefixes(CIDRS, [dual, headless], [ep("a", labels={"app": "web"})])
    assert got == ALL_CIDRS | {"10.96.0.11/32", "fd00:96::11/128"}


def test_only_the_configured_lists_count() -> None:
    only_lb = service_cidrs(typed({"serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]}))
    assert service_prefixes(only_lb, [WEB], [ep("a", labels={"app": "web"})]) == {"198.51.100.0/24",
                                                                                  "198.51.100.5/32"}


def test_service_prefix_test_for_learned_routes() -> None:
    net = __import__("ipaddress").ip_network
    assert is_service_prefix(net("10.96.0.0/12"), CIDRS)
    assert is_service_prefix(net("198.51.100.5/32"), CIDRS)
    assert not is_service_prefix(net("10.0.0.0/8"), CIDRS)      # wider than the CIDR
    assert not is_service_prefix(net("10.65.0.0/26"), CIDRS)


# --- through the agent's calculation (Model + compute) -------------------------------------------------------




def _put(res: Resource) -> Upd:
    res = resource_from_document(res.to_document())   # validated as l3netctl would
    return Upd(KEYS.resource(res.info.plural, res.name, res.namespace), res.to_json())


def _gone(res: Resource) -> Upd:
    return Upd(KEYS.resource(res.info.plural, res.name, res.namespace), None)


POOL = Resource("IPPool", "p1", {"cidr": "10.65.0.0/16"})
BGPCONF = Resource("BGPConfiguration", "default", CONFIG)


def _wep(pod: str, node: str, ip: str, iface: str, labels: dict[str, str]) -> Resource:
    return Resource("WorkloadEndpoint", workload_endpoint_name(node, pod, "eth0"),
                    {"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                     "ipNetworks": [f"{ip}/32"], "interfaceName": iface}, namespace="shop", labels=labels)


POD = _wep("web-1", "n1", "10.65.0.2", "cali1", {"app": "web"})
LINKS = {"cali1": Link("cali1", 11, True), "cali2": Link("cali2", 12, False)}
LEARNED = {"10.96.0.0/12": ["10.0.0.2"], "198.51.100.5/32": ["10.0.0.3"], "10.65.7.0/26": ["10.0.0.2"]}


def _service_adverts(m: Model, node: str = "n1") -> set[str]:
    d = compute(m, node, LINKS, LEARNED, node_ips=["10.0.0.1"])
    return {a.prefix for a in d.advertisements if a.reason == "service"}


def test_calculation_announces_withdraws_and_installs_no_route_for_services() -> None:
    m = Model(KEYS)
    m.apply([_put(POOL), _put(BGPCONF), _put(WEB), _put(POD)])
    d = compute(m, "n1", LINKS, LEARNED, node_ips=["10.0.0.1"])
    want = ALL_CIDRS | {"10.96.0.10/32", "192.0.2.7/32", "198.51.100.5/32"}
    assert {a.prefix for a in d.advertisements if a.reason == "service"} == want
    assert Advertisement("10.65.0.2/32", "borrowed") in d.advertisements   # the pod's own route still there
    # No kernel route inside a service CIDR: no blackhole, and the same prefixes learned from peers are left out.
    assert d.routes == {RouteSpec("10.65.0.2/32", "workload", ifname="cali1", ifindex=11),
                        RouteSpec("10.65.7.0/26", "learned", next_hops=("10.0.0.2",))}
    # Another node, with no endpoint of the Service: the CIDRs only.
    assert _service_adverts(m, "n2") == ALL_CIDRS
    # The endpoint goes: the /32s are withdrawn, the CIDRs stay.
    m.apply([_gone(POD)])
    assert _service_adverts(m) == ALL_CIDRS
    # It comes back on an interface that is down: not an endpoint this node delivers to yet.
    m.apply([_put(_wep("web-1", "n1", "10.65.0.2", "cali2", {"app": "web"}))])
    assert _service_adverts(m) == ALL_CIDRS
    m.apply([_put(POD)])
    assert _service_adverts(m) == want
    # The Service goes: its /32s go.
    m.apply([_gone(WEB)])
    assert _service_adverts(m) == ALL_CIDRS
    # The configuration goes: nothing, and learned service prefixes are routes again.
    m.apply([_put(WEB), _gone(BGPCONF)])
    d = compute(m, "n1", LINKS, LEARNED, node_ips=["10.0.0.1"])
    assert {a.prefix for a in d.advertisements if a.reason == "service"} == set()
    assert RouteSpec("10.96.0.0/12", "learned", next_hops=("10.0.0.2",)) in d.routes


def test_a_per_node_bgp_configuration_is_not_read_for_services() -> None:
    m = Model(KEYS)
    node_conf = Resource("BGPConfiguration", "node.n1", {"listenPort": 1790})
    m.apply([_put(POOL), _put(node_conf), _put(WEB), _put(POD)])
    assert _service_adverts(m) == set()


def test_calculation_is_the_same_whatever_the_order_of_updates() -> None:
    updates = [_put(POOL), _put(BGPCONF), _put(WEB), _put(POD),
               _put(svc("other", selector={"app": "web"}, loadBalancerIPs=["198.51.100.8"]))]
    results = set()
    for order in (updates, list(reversed(updates)), updates[2:] + updates[:2]):
        m = Model(KEYS)
        m.apply(order)
        results.add(frozenset(_service_adverts(m)))
    assert results == {frozenset(ALL_CIDRS | {"10.96.0.10/32", "192.0.2.7/32", "198.51.100.5/32",
                                              "198.51.100.8/32"})}


# --- the peers' side: l3net's BGP import defaults take service prefixes from cluster nodes and reflectors ---


def test_import_defaults_accept_service_prefixes_outside_pools_and_hold_one_inside() -> None:
    from bgp.policy import PeerFacts, build_import_context, import_reason

    index = build_import_context(pools=["10.65.0.0/16"], block_owner=[("10.65.0.0/26", "n1")], address_owner=[],
                                 node_addresses=[("10.0.0.1", "n1")], node_as=[("n1", 64512)],
                                 local_workloads=[]).index()
    mesh = PeerFacts(address="10.0.0.1", node="n1")
    for prefix in sorted(ALL_CIDRS | {"10.96.0.10/32", "198.51.100.5/32"}):
        assert import_reason(index, mesh, prefix, "10.0.0.1", (), None) is None, prefix
    # Reflected (ORIGINATOR_ID) and from an external router (AS_PATH) alike.
    assert import_reason(index, PeerFacts(address="10.0.0.9", node=None), "198.51.100.5/32", "10.0.0.1", (),
                         "10.0.0.1") is None
    assert import_reason(index, PeerFacts(address="10.0.0.9", node=None), "10.96.0.0/12", "10.0.0.9", (64600,),
                         None) is None
    # A "service" prefix inside an IP pool is held like any unowned pool prefix: keep service CIDRs out of pools.
    assert import_reason(index, mesh, "10.65.200.0/24", "10.0.0.1", (), None) is not None

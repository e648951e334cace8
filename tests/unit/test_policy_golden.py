"""policy.compiler + policy.nat: the exact iptables-restore and ipset restore text of one node (golden files).

Each scenario is compiled for node ``n1`` with a fresh ``PolicyCompiler`` and written by the agent's own
drivers (``IptablesDriver``, ``IpsetDriver``) into an empty fake kernel (``tests.fakes.iptables``), so the
text compared is the text the agent hands ``ipset restore`` and ``iptables-restore --noflush`` on a fresh
node: ``golden/policy/<scenario>.ipset.txt`` and ``golden/policy/<scenario>.iptables.txt`` (one restore
script per table that has anything to write, in the driver's order), compared byte for byte.

A deliberate change to the rendering: rerun with ``L3NET_UPDATE_GOLDEN=1`` to rewrite the files, then review
the diff. ``tests/netns/test_policy_golden_restore.py`` loads every golden file into the real tools.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver
from policy.compiler import PolicyCompiler, PolicyProgram
from policy.nat import render_nat_outgoing, with_nat
from tests.builders import cnp, gnp, netpol, netset, ns, wep
from tests.fakes.iptables import FakeIptables

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden" / "policy"
NODE = "n1"
NAMESPACES = [ns("a", {"team": "blue"}), ns("b", {"team": "red"})]
WEB = wep("web", "a", NODE, "10.65.1.2", {"app": "web"})
DB = wep("db", "b", NODE, "10.65.1.3", {"app": "db"})
CLIENT = wep("client", "a", "n2", "10.65.2.2", {"app": "client"})  # remote: only in selector ipsets
ALL = [WEB, DB, CLIENT]


def _compile(policies: list, extra: list | None = None, **opts: object) -> PolicyProgram:
    local = [w for w in ALL if w.spec["node"] == NODE]
    return PolicyCompiler().compile(local, [*ALL, *(extra or [])], policies, NAMESPACES, **opts)  # type: ignore[arg-type]


def _k8s_ingress_port() -> PolicyProgram:
    return _compile([netpol("web-from-client", "a", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                     "ports": [{"protocol": "TCP", "port": 8080}]}]})])


def _k8s_tier_sets() -> PolicyProgram:
    """Two policies on web: what set lookups say (pods x numeric ports and a narrow range, ipBlocks, any peer,
    any port) and what stays in the policy chains (a named port, an ipBlock with except, a bare protocol,
    a wide endPort range)."""
    return _compile([
        netpol("web-in", "a", {
            "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                                  {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
                         "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": "http"},
                                   {"protocol": "UDP", "port": 5000, "endPort": 5002}]},
                        {"ports": [{"protocol": "TCP", "port": 9000, "endPort": 9999}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "UDP", "port": 53}]},
                       {"to": [{"namespaceSelector": {"matchLabels": {"team": "red"}}}]}]}),
        netpol("web-admin", "a", {
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.70.0.0/16"}}]},
                        {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"protocol": "SCTP"}]}]})],
        [wep("client2", "a", "n2", "10.65.2.3", {"app": "client"}, ports=[{"name": "http", "port": 80}])])


def _gnp_order_actions() -> PolicyProgram:
    return _compile([
        gnp("deny-bad-nets", {"order": 10, "selector": "all()", "types": ["Ingress"], "ingress": [
            {"action": "Deny", "source": {"nets": ["192.0.2.0/24"], "notNets": ["192.0.2.128/25"]}},
            {"action": "Pass", "source": {"selector": "app == 'client'"}}]}),
        gnp("allow-db", {"order": 100, "selector": "app == 'db'", "types": ["Ingress", "Egress"],
                         "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [5432]}}],
                         "egress": [{"action": "Allow", "destination": {"nets": ["10.65.0.0/16"]}}]})])


def _calico_np() -> PolicyProgram:
    return _compile([cnp("db-from-blue", "b", {
        "selector": "app == 'db'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"namespaceSelector": "team == 'blue'"},
                     "destination": {"ports": [5432, "6000:6010"]}},
                    {"action": "Deny"}]})])


def _network_set() -> PolicyProgram:
    sets = [netset("external", ["198.51.100.0/24", "203.0.113.7/32"], {"role": "external"}),
            netset("partners", ["192.0.2.0/25"], {"role": "partner"}, namespace="a")]
    return _compile([gnp("web-egress", {"selector": "app == 'web'", "types": ["Egress"], "egress": [
        {"action": "Allow", "destination": {"selector": "role == 'external'"}},
        {"action": "Deny"}]}),
        cnp("web-partners", "a", {"selector": "app == 'web'", "types": ["Ingress"], "ingress": [
            {"action": "Allow", "source": {"selector": "role == 'partner'"}}]})], sets)


def _nat_outgoing() -> PolicyProgram:
    return with_nat(_compile([]), render_nat_outgoing(("10.65.0.0/16",), ("10.65.0.0/16", "10.70.0.0/16")))


def _failsafe() -> PolicyProgram:
    return _compile([], failsafe_ports=[("tcp", 22), ("udp", 68), ("tcp", 179)])


def _empty_node() -> PolicyProgram:
    return PolicyCompiler().compile([], [], [], [])


SCENARIOS: dict[str, Callable[[], PolicyProgram]] = {
    "k8s_ingress_pod_port": _k8s_ingress_port, "k8s_tier_sets": _k8s_tier_sets,
    "gnp_order_deny_pass_nets": _gnp_order_actions,
    "calico_namespaced_np": _calico_np, "network_set_selected": _network_set,
    "nat_outgoing_pools": _nat_outgoing, "failsafe_ports": _failsafe, "empty_node": _empty_node,
}


def render(program: PolicyProgram) -> tuple[str, str]:
    """(ipset restore text, iptables-restore text) the agent's drivers write for ``program`` on a fresh node."""
    kernel = FakeIptables()
    IpsetDriver(kernel).apply_adds(program.ipsets)
    ipset_text = "".join(kernel.writes)
    del kernel.writes[:]
    IptablesDriver(kernel, backend="nft").apply_program(program)
    return ipset_text, "".join(kernel.writes)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rendered_restore_text_matches_golden(name: str) -> None:
    ipset_text, iptables_text = render(SCENARIOS[name]())
    for suffix, text in (("ipset", ipset_text), ("iptables", iptables_text)):
        path = GOLDEN / f"{name}.{suffix}.txt"
        if os.environ.get("L3NET_UPDATE_GOLDEN"):
            path.write_text(text)
        assert text == path.read_text(), f"{suffix} rendering of {name} changed; L3NET_UPDATE_GOLDEN=1 to accept"


def test_scenarios_cover_what_they_claim() -> None:
    # Guards the goldens against a scenario that silently compiles to nothing (a typo in a selector).
    texts = {name: render(make()) for name, make in SCENARIOS.items()}
    assert "10.65.2.2,tcp:8080" in texts["k8s_ingress_pod_port"][0]
    assert "src,dst -j RETURN" in texts["k8s_ingress_pod_port"][1]
    tier_sets, tier_rules = texts["k8s_tier_sets"]
    assert "10.65.2.3,udp:5002" in tier_sets and "128.0.0.0/1,udp:53" in tier_sets and "10.70.0.0/16\n" in tier_sets
    assert "--dport 9000:9999" in tier_rules and "192.0.2.128/25" in tier_sets and "-p sctp" in tier_rules
    assert "192.0.2.128/25" in texts["gnp_order_deny_pass_nets"][0]
    assert "6000:6010" in texts["calico_namespaced_np"][1]
    assert "203.0.113.7" in texts["network_set_selected"][0] and "192.0.2.0/25" in texts["network_set_selected"][0]
    assert "*nat" in texts["nat_outgoing_pools"][1] and "MASQUERADE" in texts["nat_outgoing_pools"][1]
    assert "-p tcp -m multiport --dports 22,179 -j ACCEPT" in texts["failsafe_ports"][1]
    assert texts["empty_node"][0] == "" and "*filter" in texts["empty_node"][1]

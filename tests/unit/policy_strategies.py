"""Hypothesis strategies for the policy tests: Kubernetes NetworkPolicies, clusters of workloads in two
namespaces on ``NODES`` with the policies that apply to them, and Calico rules.

Labels come from a small alphabet (``KEYS``, ``VALUES``) and addresses from a few overlapping CIDRs, so
that drawn selectors, peers and nets do select the drawn workloads.
"""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from l3net.model import Resource
from tests.builders import netpol, ns, wep

NODES = ("n1", "n2")
KEYS = ("app", "role")
VALUES = ("web", "db")


def label_dicts() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)


def label_selectors() -> st.SearchStrategy[dict]:
    expr = st.one_of(
        st.builds(lambda k, vs, op: {"key": k, "operator": op, "values": vs}, st.sampled_from(KEYS),
                  st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True),
                  st.sampled_from(["In", "NotIn"])),
        st.builds(lambda k, op: {"key": k, "operator": op}, st.sampled_from(KEYS),
                  st.sampled_from(["Exists", "DoesNotExist"])))
    return st.builds(lambda ml, me: {**({"matchLabels": ml} if ml else {}), **({"matchExpressions": me} if me else {})},
                     label_dicts(), st.lists(expr, max_size=2))


def ns_selectors() -> st.SearchStrategy[dict]:
    return st.one_of(st.just({}), st.builds(lambda v: {"matchLabels": {"team": v}}, st.sampled_from(["x", "y"])),
                     st.builds(lambda n: {"matchLabels": {"kubernetes.io/metadata.name": n}},
                               st.sampled_from(["a", "b"])))


# An ipBlock's ``except`` entries lie strictly inside its cidr, as the model requires (it refuses the policy
# otherwise, and the compiler reads only what the model accepts).
_EXCEPTS = {"10.0.0.0/16": ["10.0.1.2/32", "10.0.2.0/25", "10.0.9.0/24"], "10.0.1.0/24": ["10.0.1.2/32"],
            "0.0.0.0/0": ["10.0.1.2/32", "10.0.2.0/25", "10.0.9.0/24"], "10.0.2.3/32": []}


def peers() -> st.SearchStrategy[dict]:
    block = st.sampled_from(sorted(_EXCEPTS)).flatmap(lambda cidr: st.builds(
        lambda ex: {"ipBlock": {"cidr": cidr, **({"except": ex} if ex else {})}},
        st.lists(st.sampled_from(_EXCEPTS[cidr]), max_size=2, unique=True) if _EXCEPTS[cidr] else st.just([])))
    return st.one_of(
        st.builds(lambda p: {"podSelector": p}, label_selectors()),
        st.builds(lambda n: {"namespaceSelector": n}, ns_selectors()),
        st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, label_selectors(), ns_selectors()),
        block)


def ports() -> st.SearchStrategy[dict]:
    def build(proto, port, end):
        out: dict = {}
        if proto:
            out["protocol"] = proto
        if port is not None:
            out["port"] = port
            if end and isinstance(port, int):
                out["endPort"] = port + end
        return out
    return st.builds(build, st.sampled_from([None, "TCP", "UDP"]),
                     st.sampled_from([None, 53, 80, 8080, "http", "dns"]), st.sampled_from([0, 0, 1, 100]))


def rules(peer_key: str) -> st.SearchStrategy[dict]:
    def build(ps, qs):
        out: dict = {}
        if ps is not None:
            out[peer_key] = ps
        if qs is not None:
            out["ports"] = qs
        return out
    return st.builds(build, st.one_of(st.none(), st.lists(peers(), max_size=2)),
                     st.one_of(st.none(), st.lists(ports(), max_size=2)))


@st.composite
def policies(draw) -> Resource:
    spec: dict = {"podSelector": draw(label_selectors())}
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types:
        spec["policyTypes"] = types
    for key, peer_key in (("ingress", "from"), ("egress", "to")):
        value = draw(st.one_of(st.none(), st.lists(rules(peer_key), max_size=2)))
        if value is not None:
            spec[key] = value
    return netpol(f"p{draw(st.integers(0, 99))}", draw(st.sampled_from(["a", "b"])), spec)


PORTS = [{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "dns", "protocol": "UDP", "port": 53},
         {"name": "http", "protocol": "TCP", "port": 80}]


@st.composite
def clusters(draw):
    n = draw(st.integers(2, 5))
    workloads = []
    for i in range(n):
        node = draw(st.sampled_from(NODES))
        ip = f"10.0.{NODES.index(node) + 1}.{i + 2}"
        wports = draw(st.lists(st.sampled_from(PORTS), max_size=2, unique_by=lambda p: p["port"]))
        w = wep(f"w{i}", draw(st.sampled_from(["a", "b"])), node, ip, draw(label_dicts()), wports)
        account = draw(st.sampled_from([None, "api", "web"]))
        if account is not None:  # a pod's ServiceAccount: its name, and its labels as pcsa.<key> (kube-controller)
            tier = draw(st.sampled_from([{}, {"pcsa.tier": "front"}, {"pcsa.tier": "back"}]))
            w = dataclasses.replace(w, spec={**w.spec, "serviceAccountName": account}, labels={**w.labels, **tier})
        workloads.append(w)
    namespaces = [ns("a", draw(st.sampled_from([{}, {"team": "x"}]))),
                  ns("b", draw(st.sampled_from([{}, {"team": "y"}])))]
    pols = draw(st.lists(policies(), max_size=3, unique_by=lambda p: (p.namespace, p.name)))
    return workloads, namespaces, pols



# -- Calico rules -------------------------------------------------------------------------------------
# Selectors that parse: the model refuses a policy with one that does not, so none reaches the compiler
# (tests/unit/test_policy_compiler.py: such a policy is left out whole).
CALICO_SELECTORS = [None, "all()", "app == 'web'", "has(role)", "role != 'db'", "app in {'web', 'db'}",
                    "projectcalico.org/namespace == 'a'", "!has(app) || role == 'web'"]
CALICO_NS_SELECTORS = [None, "all()", "team == 'x'", "kubernetes.io/metadata.name == 'b'"]
NETS = ["10.0.0.0/16", "10.0.1.0/24", "10.0.2.3/32", "0.0.0.0/0", "10.0.9.0/24", "fd00::/64"]
CALICO_PORTS = [53, 80, "80:90", "8000:8100", "http", "dns"]
SERVICE_ACCOUNTS = [{"names": ["api"]}, {"names": ["api", "web"]}, {"names": ["nobody"]},
                    {"selector": "tier == 'back'"}, {"names": ["web"], "selector": "has(tier)"},
                    {"selector": "projectcalico.org/name == 'web'"}]


@st.composite
def entities(draw, with_ports: bool) -> dict:
    out: dict = {}
    for key, strat in (("nets", st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True)),
                       ("notNets", st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True)),
                       ("selector", st.sampled_from(CALICO_SELECTORS[1:])),
                       ("notSelector", st.sampled_from(CALICO_SELECTORS[1:])),
                       ("namespaceSelector", st.sampled_from(CALICO_NS_SELECTORS[1:])),
                       ("serviceAccounts", st.sampled_from(SERVICE_ACCOUNTS))):
        if draw(st.integers(0, 3)) == 0:
            out[key] = draw(strat)
    if with_ports:
        for key in ("ports", "notPorts"):
            if draw(st.integers(0, 2)) == 0:
                out[key] = draw(st.lists(st.sampled_from(CALICO_PORTS), min_size=1, max_size=3, unique=True))
    return out


@st.composite
def calico_rules(draw) -> dict:
    rule: dict = {"action": draw(st.sampled_from(["Allow", "Deny", "Log", "Pass"]))}
    proto = draw(st.sampled_from([None, "TCP", "UDP", "ICMP", 6, 17, "ICMPv6"]))
    if proto is not None:
        rule["protocol"] = proto
    if draw(st.integers(0, 4)) == 0:
        rule["notProtocol"] = draw(st.sampled_from(["UDP", "TCP", 1]))
    if proto == "ICMP" and draw(st.booleans()):
        rule["icmp"] = draw(st.sampled_from([{"type": 8}, {"type": 8, "code": 0}, {"type": 0}]))
    ports_ok = proto in ("TCP", "UDP")
    for side in ("source", "destination"):
        if draw(st.booleans()):
            rule[side] = draw(entities(ports_ok))
    return rule

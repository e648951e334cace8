"""Property: a hostile string in any WorkloadEndpoint or policy field that reaches iptables-restore or ipset
either fails validation, or renders to input that the real tools load as exactly the intended objects.

Each example puts one hostile value (newlines, quotes, ``-j ACCEPT``, wildcards, scope IDs, random text)
into one field of a valid set of resources, validates every document as ``l3netctl`` and the agent do,
compiles the survivors and programs them with the agent's real drivers into a scratch namespace. Then
``iptables-save`` must show exactly our chains, each holding exactly our hashed rules (an injected rule
or chain shows up as an extra line, a rule without our hash or a missing hash), one hook per kernel
chain, and ``ipset save`` exactly our sets with exactly their members. The finding's payloads are
regression examples.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver, netns_runner
from l3net import netns
from l3net.errors import ValidationError
from l3net.model.validation import host_veth_name, resource_from_document
from policy.compiler import PolicyCompiler
from tests.netns_fixtures import NetnsFactory

pytestmark = [pytest.mark.netns]

V1 = "l3net.io/v1"
NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
WEB = {"apiVersion": V1, "kind": "WorkloadEndpoint",
       "metadata": {"name": "n1-k8s-web-eth0", "namespace": "default",
                    "labels": {"app": "web", "pcsa.role": "front", "pcsa.tier": "a"}},
       "spec": {"node": "n1", "orchestrator": "k8s", "pod": "web", "endpoint": "eth0", "serviceAccountName": "api",
                "interfaceName": host_veth_name("default", "web"), "ipNetworks": ["10.65.0.2/32"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}}
DB = {"apiVersion": V1, "kind": "WorkloadEndpoint",
      "metadata": {"name": "n2-k8s-db-eth0", "namespace": "default", "labels": {"app": "db"}},
      "spec": {"node": "n2", "orchestrator": "k8s", "pod": "db", "endpoint": "eth0",
               "interfaceName": host_veth_name("default", "db"), "ipNetworks": ["10.65.1.3/32"]}}
NP = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "np1", "namespace": "default"},
      "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
          {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"protocol": "TCP", "port": 80}]},
          {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]}]}}
GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "gnp1"},
       "spec": {"order": 10, "selector": "app == 'web'", "types": ["Ingress", "Egress"], "ingress": [
           {"action": "Allow", "protocol": "TCP",
            "source": {"selector": "app == 'db'", "nets": ["198.51.100.0/24"]},
            "destination": {"ports": [80, "8000:8080", "http"]}},
           {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}],
           "egress": [{"action": "Log"},
                      {"action": "Deny", "protocol": "UDP",
                       "destination": {"notNets": ["203.0.113.0/24"], "ports": [53]}},
                      {"action": "Allow"}]}}
CNP = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
       "metadata": {"name": "cnp1", "namespace": "default"},
       "spec": {"order": 20, "selector": "app == 'web'", "serviceAccountSelector": "role == 'front'", "ingress": [
           {"action": "Allow", "protocol": "TCP",
            "source": {"serviceAccounts": {"names": ["api"], "selector": "tier == 'a'"}, "notSelector": "app == 'x'"},
            "destination": {"ports": [8080]}}]}}
BASE = {"ns": NS, "web": WEB, "db": DB, "np": NP, "gnp": GNP, "cnp": CNP}
POLICIES = ("np", "gnp", "cnp")

# Every field whose value reaches an iptables rule, a chain or set name, or an ipset member.
FIELDS: list[tuple[str, tuple[Any, ...]]] = [
    ("web", ("metadata", "name")), ("web", ("metadata", "namespace")), ("web", ("metadata", "labels", "app")),
    ("web", ("spec", "interfaceName")), ("web", ("spec", "ipNetworks", 0)), ("web", ("spec", "ports", 0, "name")),
    ("web", ("spec", "ports", 0, "protocol")), ("web", ("spec", "ports", 0, "port")), ("db", ("spec", "node")),
    ("db", ("spec", "ipNetworks", 0)), ("ns", ("metadata", "name")),
    ("np", ("metadata", "name")), ("np", ("metadata", "namespace")),
    ("np", ("spec", "podSelector", "matchLabels", "app")),
    ("np", ("spec", "ingress", 0, "from", 0, "podSelector", "matchLabels", "app")),
    ("np", ("spec", "ingress", 0, "ports", 0, "port")), ("np", ("spec", "ingress", 0, "ports", 0, "protocol")),
    ("np", ("spec", "ingress", 1, "from", 0, "ipBlock", "cidr")),
    ("np", ("spec", "ingress", 1, "from", 0, "ipBlock", "except", 0)),
    ("gnp", ("metadata", "name")), ("gnp", ("spec", "selector")),
    ("gnp", ("spec", "ingress", 0, "source", "selector")), ("gnp", ("spec", "ingress", 0, "source", "nets", 0)),
    ("gnp", ("spec", "ingress", 0, "destination", "ports", 0)),
    ("gnp", ("spec", "ingress", 0, "destination", "ports", 1)),
    ("gnp", ("spec", "ingress", 0, "destination", "ports", 2)), ("gnp", ("spec", "ingress", 0, "protocol")),
    ("gnp", ("spec", "ingress", 0, "action")), ("gnp", ("spec", "ingress", 1, "icmp", "type")),
    ("gnp", ("spec", "ingress", 1, "icmp", "code")),
    ("gnp", ("spec", "egress", 1, "destination", "notNets", 0)),
    ("gnp", ("spec", "egress", 1, "destination", "ports", 0)),
    ("cnp", ("metadata", "name")), ("cnp", ("metadata", "namespace")), ("cnp", ("spec", "serviceAccountSelector")),
    ("cnp", ("spec", "ingress", 0, "source", "serviceAccounts", "names", 0)),
    ("cnp", ("spec", "ingress", 0, "source", "serviceAccounts", "selector")),
    ("cnp", ("spec", "ingress", 0, "source", "notSelector")),
]
FIELD_IDS = [f"{doc}:{'.'.join(map(str, path))}" for doc, path in FIELDS]

PAYLOADS = [
    "eth0", "cali+", "cali1 -j ACCEPT", "cali1\n-A INPUT -j ACCEPT", "0.0.0.0/1", "0.0.0.0/0", "10.65.0.2/32\n",
    "fd00::2%x/128", "10.65.0.9/32 -j ACCEPT", 'x" -j ACCEPT #', "x' -j ACCEPT", "web\nCOMMIT\n*nat",
    "80 -j ACCEPT", "80,81", "1:65535 -j ACCEPT", "http\nadd l3ns:x 1.2.3.4", "TCP -j ACCEPT", "tcp\n",
    "Allow -j ACCEPT", "a" * 300, "\x00", "-j", "--", "%d", "a b", "all()", "app == 'web' || all()",
    "has(app) && !has(x)", "8 -j ACCEPT", "255", "-1", "65536",
]
_V4 = st.integers(0, 2**32 - 1).map(lambda a: str(ipaddress.IPv4Address(a)))
# Values that often pass validation, so that the kernel side of the property is exercised too.
PLAUSIBLE = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,14}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"cali[a-z0-9]{1,11}", fullmatch=True),
    st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)), _V4, st.integers(0, 32)),
    _V4.map(lambda a: f"{a}/32"),
    st.sampled_from(["TCP", "UDP", "SCTP", "ICMP", "UDPLite", "ICMPv6", "tcp", 6, 17, 132, 1, 58]),
    st.integers(0, 65536),
    st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: f"{min(t)}:{max(t)}"),
    st.sampled_from(["all()", "app == 'db'", "app in {'a', 'b'}", "!has(app)", "app != 'x' && has(role)",
                     "global()", "Allow", "Deny", "Pass", "Log", "n1", "n2", "default"]),
)
HOSTILE = st.one_of(st.sampled_from(PAYLOADS), st.text(max_size=40),
                    st.text(alphabet=st.sampled_from(list("abc01:/.-+%\"' \n\t=!|&()*,")), max_size=30),
                    st.integers(-3, 70000), PLAUSIBLE, PLAUSIBLE)
COMMENT = re.compile(r'--comment "?l3n:([A-Za-z0-9_-]{16})')


RENDERED: list[str] = []  # fields whose hostile value validated and went to the kernel (non-vacuity check)


def _set_path(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _our_rules(save: str) -> tuple[dict[str, list[str]], dict[str, int], set[str]]:
    """From iptables-save: our chains' rule hashes (None for a rule without one), kernel-chain lines that
    mention our chains, and every ``l3n-`` chain declared."""
    chains: dict[str, list[str]] = {}
    hooks: dict[str, int] = {}
    declared: set[str] = set()
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":l3n-"):
            declared.add(f"{table}/{line[1:].split()[0]}")
        elif line.startswith("-A "):
            chain = line.split()[1]
            if chain.startswith("l3n-"):
                m = COMMENT.search(line)
                chains.setdefault(f"{table}/{chain}", []).append(m.group(1) if m else "<no hash>")
            elif "l3n-" in line:
                hooks[f"{table}/{chain}"] = hooks.get(f"{table}/{chain}", 0) + 1
    return chains, hooks, declared


def _our_sets(save: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in save.splitlines():
        words = line.split(" ", 2)
        if words[0] == "create" and words[1].startswith("l3n"):
            out.setdefault(words[1], set())
        elif words[0] == "add" and words[1].startswith("l3n"):
            out.setdefault(words[1], set()).add(words[2])
    return out


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    f = NetnsFactory()
    try:
        yield f("rp")
    finally:
        f.cleanup()


def _check_field(scratch: str, doc_name: str, path: tuple[Any, ...], value: Any) -> None:
    docs = copy.deepcopy(BASE)
    _set_path(docs[doc_name], path, value)
    try:
        res = {k: resource_from_document(d, f"property {k}") for k, d in docs.items()}
    except ValidationError:
        return  # refused at the edge, with a field error: nothing is rendered
    RENDERED.append(f"{doc_name}:{path}")
    weps = [res["web"], res["db"]]
    prog = PolicyCompiler().compile([w for w in weps if w.spec.get("node") == "n1"], weps,
                                    [res[p] for p in POLICIES], [res["ns"]])
    if any("0.0.0.0/0" in members for _, members in prog.ipsets.values()):
        # ipset's hash:net refuses a /0; splitting it into two /1s is the dp-contain branch's change to the
        # compiler. Until that is merged such examples are set aside (rejected), not counted as passing.
        reject()
    ipsets, ipt = IpsetDriver(netns_runner(scratch)), IptablesDriver(netns_runner(scratch), backend="auto")
    try:
        ipsets.apply_adds(prog.ipsets)
        ipt.apply(prog.chains, prog.hooks)
        ipsets.apply_deletes(prog.ipsets)
        save = "".join(netns.run(scratch, [f"iptables-{ipt.backend}-save", "-t", t]).stdout for t in prog.chains)
        chains, hooks, declared = _our_rules(save)
        want = {f"{t}/{c}": [COMMENT.search(r).group(1) for r in rules]  # type: ignore[union-attr]
                for t, tbl in prog.chains.items() for c, rules in tbl.items()}
        # An empty chain is declared but has no -A line.
        assert {k: v for k, v in want.items() if v} == chains, (value, save)
        assert declared == set(want), (value, declared)
        assert hooks == {f"{t}/{k}": len(v) for t, tbl in prog.hooks.items() for k, v in tbl.items()}, (value, save)
        sets = _our_sets(netns.run(scratch, ["ipset", "save"]).stdout)
        assert sets == {name: set(members) for name, (_, members) in prog.ipsets.items()}, (value, sets)
    finally:
        ipt.remove_all()
        ipt.close()
        ipsets.apply_deletes({})
        ipsets.close()


@pytest.mark.parametrize(("doc_name", "path"), FIELDS, ids=FIELD_IDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(value=HOSTILE)
@example(value="cali+")
@example(value="x\";}process p{run sh -c id>p;encoder text;}template{neighbor t{#")
@example(value="fd00::2%x\nshutdown")
def test_hostile_field_is_refused_or_renders_exactly_the_intended_objects(
        scratch: str, doc_name: str, path: tuple[Any, ...], value: Any) -> None:
    _check_field(scratch, doc_name, path, value)


def test_zz_the_property_reached_the_kernel_for_most_fields() -> None:
    """Runs after the property (file order): enough generated values validated for the kernel side to count."""
    if not RENDERED:
        pytest.skip("run together with the property test")
    assert len(set(RENDERED)) >= len(FIELDS) // 2, sorted(set(RENDERED))


def test_the_base_resources_render_and_load(scratch: str) -> None:
    """The property is not vacuous: the untouched resources validate and program real rules and sets."""
    _check_field(scratch, "web", ("metadata", "labels", "app"), "web")
    res = {k: resource_from_document(copy.deepcopy(d)) for k, d in BASE.items()}
    prog = PolicyCompiler().compile([res["web"]], [res["web"], res["db"]], [res[p] for p in POLICIES], [res["ns"]])
    assert len(prog.ipsets) >= 4 and prog.rule_count > 20

"""The containerlab topology parser: inheritance, variable expansion, refusals with path and reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from l3net.lab.topology import TopologyError, expand_env, load_topology, parse_topology

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# Shared data, not vendored (../shared/schemas/README.md: read it from there, do not copy it, skip the check
# when it is absent). CI always has ../shared beside the clone: with CI=true its absence fails `make test`
# (tests/conftest.py ALLOWED_SKIPS names the skip only outside CI).
SCHEMA = REPO.parent / "shared" / "schemas" / "clab.schema.json"
SHIPPED = sorted((REPO / "topologies").glob("*.clab.yml"))


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "bad.clab.yml", env or {})
    assert all(p.file == "bad.clab.yml" for p in info.value.problems)
    return [(p.path, p.reason) for p in info.value.problems]


def test_expand_env_forms() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert expand_env("${SET} ${UNSET} ${UNSET:=d} ${EMPTY:=d} ${EMPTY=d} ${SET:-x}", env) == "v  d d  v"
    assert expand_env("$$HOME $${SET} $HOME", env) == "$HOME ${SET} $HOME"


def test_inheritance_defaults_kind_group_node() -> None:
    text = """
name: inh
topology:
  defaults:
    kind: linux
    env: {A: defaults, B: defaults, C: defaults, D: defaults}
    labels: {tier: d}
    exec: ["echo defaults"]
    cmd: sleep 1
  kinds:
    linux:
      env: {B: kind, C: kind, D: kind}
      exec: ["echo kind"]
      image: kind-image
      sysctls: {net.ipv4.ip_forward: 1}
  groups:
    g:
      env: {C: group, D: group}
      image: group-image
      sysctls: {net.ipv4.ip_forward: 0}
  nodes:
    a:
      group: g
      env: {D: node}
      exec: ["echo node", "echo kind"]
    b: {}
"""
    topo = parse_topology(text, "inh.clab.yml", {})
    a, b = topo.nodes["a"], topo.nodes["b"]
    assert a.env == {"A": "defaults", "B": "kind", "C": "group", "D": "node"}
    assert a.image == "group-image" and b.image == "kind-image"
    assert a.exec == ("echo defaults", "echo kind", "echo node")
    assert a.sysctls == {"net.ipv4.ip_forward": "0"} and b.sysctls == {"net.ipv4.ip_forward": "1"}
    assert a.cmd == "sleep 1" and a.labels == {"tier": "d"}
    assert b.env["C"] == "kind"


def test_kind_from_group_and_group_from_kind() -> None:
    text = """
name: k
topology:
  kinds:
    linux: {group: workers, env: {X: "1"}}
  groups:
    workers: {labels: {l3net.io/role: node}}
    switches: {kind: bridge}
  nodes:
    sw: {group: switches}
    n1: {kind: linux}
"""
    topo = parse_topology(text, "k.clab.yml", {})
    assert topo.nodes["sw"].kind == "bridge"
    assert topo.nodes["n1"].group == "workers" and topo.nodes["n1"].role == "node"


def test_binds_merge_by_target_relative_to_file(tmp_path: Path) -> None:
    f = tmp_path / "b.clab.yml"
    f.write_text("""
name: b
topology:
  defaults:
    kind: linux
    binds: [/a:/etc/x, /b:/etc/y]
  nodes:
    n:
      binds: ["conf/bird.conf:/etc/x:ro"]
""")
    node = load_topology(f).nodes["n"]
    by_target = {b.target: b for b in node.binds}
    assert by_target["/etc/x"].source == str(tmp_path / "conf" / "bird.conf") and by_target["/etc/x"].read_only
    assert by_target["/etc/y"].source == "/b" and not by_target["/etc/y"].read_only


def test_env_expansion_in_file_and_role_from_env() -> None:
    text = """
name: ${LAB:=envlab}
topology:
  nodes:
    n1:
      kind: linux
      env: {L3NET_ROLE: "${ROLE:=node}", PRICE: "$$5"}
"""
    topo = parse_topology(text, "e.clab.yml", {"ROLE": "route-reflector"})
    assert topo.name == "envlab"
    assert topo.nodes["n1"].role == "route-reflector" and topo.nodes["n1"].env["PRICE"] == "$5"


def test_links_short_and_extended_forms_and_addresses() -> None:
    text = """
name: l
topology:
  defaults: {kind: linux}
  nodes: {a: {}, b: {}, br: {kind: bridge}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: ["10.0.0.0/31", "10.0.0.1/31"]
      mtu: 9000
    - type: veth
      endpoints:
        - {node: a, interface: eth2, ipv4: 10.1.0.1/24, mac: "02:00:00:00:00:01"}
        - {node: br, interface: a}
    - endpoints: ["b:eth2", "host:lab-b"]
"""
    topo = parse_topology(text, "l.clab.yml", {})
    l0, l1, l2 = topo.links
    assert (str(l0.a), str(l0.b), l0.a.ipv4, l0.b.ipv4, l0.mtu) == ("a:eth1", "b:eth1", "10.0.0.0/31",
                                                                      "10.0.0.1/31", 9000)
    assert l1.a.ipv4 == "10.1.0.1/24" and l1.a.mac == "02:00:00:00:00:01" and l1.b.node == "br"
    assert topo.node_netns("a") == "clab-l-a"
    assert topo.node_netns("host") == "clab-l--host" and l2.b.node == "host"
    assert topo.mgmt_netns == "clab-l--mgmt"


def test_names_follow_prefix_rules() -> None:
    base = "topology:\n  nodes: {n: {kind: linux}}\n"
    assert parse_topology("name: x\nprefix: p\n" + base, "f", {}).node_netns("n") == "p-x-n"
    assert parse_topology("name: x\nprefix: __lab-name\n" + base, "f", {}).node_netns("n") == "x-n"
    assert parse_topology("name: x\nprefix: ''\n" + base, "f", {}).node_netns("n") == "n"


def test_mgmt_addresses_fixed_first_then_in_order() -> None:
    text = """
name: m
mgmt: {network: net, ipv4-subnet: 172.30.0.0/24}
topology:
  defaults: {kind: linux}
  nodes:
    a: {}
    b: {mgmt-ipv4: 172.30.0.2}
    c: {}
    sw: {kind: bridge}
    iso: {network-mode: none}
"""
    topo = parse_topology(text, "m.clab.yml", {})
    assert topo.mgmt.ipv4_gw == "172.30.0.1"
    assert topo.mgmt_addresses() == {"a": "172.30.0.3/24", "b": "172.30.0.2/24", "c": "172.30.0.4/24"}


@pytest.mark.parametrize(("text", "path", "reason"), [
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - endpoints: [a:eth1, b:eth1]\n",
     "topology.links[0].endpoints[1]", "unknown node 'b'"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n  links:\n"
     "    - endpoints: [a:eth1, b:eth1]\n    - endpoints: [a:eth1, b:eth2]\n",
     "topology.links[1].endpoints[0]", "already used by topology.links[0].endpoints[0]"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n  links:\n"
     "    - endpoints: [a:eth1, b:averyveryverylongname]\n",
     "topology.links[0].endpoints[1]", "at most 15"),
    ("name: x\ntopology:\n  nodes: {a: {kind: nokia_srlinux}}\n", "topology.nodes.a.kind", "unsupported kind"),
    ("name: x\ntopology:\n  nodes: {a: {}}\n", "topology.nodes.a.kind", "no kind"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux, colour: red}}\n", "topology.nodes.a.colour",
     "unknown node field"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n    - endpoints: [a:eth1]\n",
     "topology.links[0].endpoints", "exactly two"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n  links:\n"
     "    - type: macvlan\n      endpoints: [a:eth1, b:eth1]\n", "topology.links[0].type", "not supported"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {l3net.io/role: felix}}}\n",
     "topology.nodes.a.labels", "not one of"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux, sysctls: {kernel.pid_max: 5}}}\n",
     "topology.nodes.a.sysctls['kernel.pid_max']", "would change the host"),
    ("name: x\nmgmt: {ipv4-subnet: 10.9.0.0/24}\ntopology:\n  nodes: {a: {kind: linux, mgmt-ipv4: 10.8.0.5}}\n",
     "topology.nodes.a.mgmt-ipv4", "not a host address"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n  links:\n"
     "    - endpoints: [a:eth0, b:eth1]\n", "topology.links[0].endpoints[0]", "management interface"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux, binds: [/only-one-part]}}\n",
     "topology.nodes.a.binds[0]", "source:target"),
    ("topology:\n  nodes: {a: {kind: linux}}\n", "name", "required"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links: [{endpoints: [a:eth1, b:eth1]}\n",
     "line 5, column 1", "not valid YAML"),
])
def test_bad_files_name_path_and_reason(text: str, path: str, reason: str) -> None:
    found = problems(text)
    assert any(p == path and reason in r for p, r in found), found


def test_every_problem_reported_at_once() -> None:
    found = problems("name: x\ntopology:\n  nodes: {a: {kind: linux}, c: {kind: vr-sros}}\n  links:\n"
                     "    - endpoints: [a:eth1, b:eth1]\n    - endpoints: [a:eth1, z:eth1]\n")
    paths = {p for p, _ in found}
    assert {"topology.nodes.c.kind", "topology.links[0].endpoints[1]", "topology.links[1].endpoints[0]",
            "topology.links[1].endpoints[1]"} <= paths


def test_error_message_names_file_path_reason() -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n"
                       "    - endpoints: [a:eth1, ghost:eth1]\n", "my.clab.yml", {})
    assert "my.clab.yml: topology.links[0].endpoints[1]: unknown node 'ghost'" in str(info.value)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_topologies_parse(path: Path) -> None:
    topo = load_topology(path)
    assert topo.nodes and topo.links
    assert any(n.role == "node" for n in topo.nodes.values())
    for node in topo.nodes.values():
        for b in node.binds:
            assert Path(b.source).exists(), b


# -- containerlab's own JSON schema ---------------------------------------------

def _schema_validator():  # type: ignore[no-untyped-def]
    if not SCHEMA.exists():
        pytest.skip(f"containerlab's schema is absent: {SCHEMA} (../shared/schemas/ beside the clone)")
    schema = json.loads(SCHEMA.read_text())

    # The schema's patterns use \\p{N}/\\p{L} (ECMA-262 with the u flag); Python's re spells them differently.
    def pattern(validator, patrn, instance, schema):  # type: ignore[no-untyped-def]
        if not validator.is_type(instance, "string"):
            return
        translated = patrn.replace(r"\p{N}", r"\d").replace(r"\p{L}", r"[^\W\d_]")
        if not re.search(translated, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    base = jsonschema.validators.validator_for(schema)
    cls = jsonschema.validators.extend(base, {"pattern": pattern})
    return cls(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_topologies_valid_containerlab(path: Path) -> None:
    validator = _schema_validator()
    doc = yaml.safe_load(expand_env(path.read_text(), {}))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors


def test_schema_catches_what_containerlab_refuses() -> None:
    validator = _schema_validator()
    bad = {"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "colour": "red"}}}}
    assert list(validator.iter_errors(bad))

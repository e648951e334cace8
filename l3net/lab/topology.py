"""l3net.lab.topology: containerlab topology files (``*.clab.yml``) parsed into a plain model. Pure.

The same file deploys with a real containerlab and with l3net's namespace runtime
(:mod:`l3net.lab.runtime`), so this module follows containerlab's rules:

- ``${VAR}``, ``${VAR:=default}`` (also ``:-``, ``=``, ``-``) are expanded from the
  environment over the raw text before YAML parsing; ``$$`` is an escaped ``$``.
  A bare ``$VAR`` is left alone so that shell lines in ``exec``/``cmd`` keep theirs.
- Node settings inherit ``defaults < kinds[kind] < groups[group] < node``: scalars
  take the most specific value that is set, ``env``/``labels``/``sysctls`` maps merge
  key by key, ``exec`` lists concatenate (duplicates dropped), ``binds`` merge by
  destination path (the most specific wins).
- The kind comes from the node, else its group, else the defaults' group, else the
  defaults; the group from the node, else its kind, else the defaults.

Every problem is reported with the file, the field path (``links[2].endpoints[1]``)
and the reason, all at once, before the runtime creates anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KINDS = ("linux", "bridge", "host")
ROLE_LABEL = "l3net.io/role"
ROLE_ENV = "L3NET_ROLE"
ROLES = ("node", "route-reflector")
HOST_NODE = "host"  # containerlab's implicit endpoint node for the host namespace
MAX_IFNAME = 15  # IFNAMSIZ - 1
DEFAULT_MGMT_NETWORK = "clab"
DEFAULT_MGMT_SUBNET = "172.20.20.0/24"  # containerlab's default management subnet
MGMT_IFNAME = "eth0"

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._]*$")
_NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._|]*$")
_IFNAME_BAD = re.compile(r"[\s/:]")
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[=-])([^}]*))?\}")

TOP_KEYS = frozenset({"name", "prefix", "mgmt", "topology", "settings", "debug"})
TOPOLOGY_KEYS = frozenset({"defaults", "kinds", "groups", "nodes", "links"})
MGMT_KEYS = frozenset({"network", "bridge", "ipv4-subnet", "ipv4-gw", "ipv4-range", "ipv6-subnet", "ipv6-gw",
                       "ipv6-range", "mtu", "external-access", "skip-when-unused", "driver-opts"})
# Every node field containerlab's schema knows. The ones this runtime uses are parsed
# below; the others are accepted (a real containerlab uses them) and ignored here.
NODE_KEYS = frozenset({
    "aliases", "auto-remove", "binds", "cap-add", "certificate", "cgroup-parent", "cgroupns-mode", "cmd",
    "components", "config", "cpu", "cpu-set", "credentials", "devices", "dns", "enforce-startup-config",
    "entrypoint", "env", "env-files", "exec", "extras", "group", "healthcheck", "hostname", "image",
    "image-pull-policy", "kind", "labels", "license", "link-apply-mode", "memory", "mgmt-ipv4", "mgmt-ipv6",
    "network-mode", "pid-mode", "ports", "privileged", "restart-policy", "runtime", "security-opts", "shm-size",
    "stages", "startup-config", "startup-delay", "suppress-startup-config", "sysctls", "tmpfs", "type", "user",
    "volumes",
})
SHORT_LINK_KEYS = frozenset({"endpoints", "mtu", "ipv4", "ipv6", "labels", "vars"})
VETH_LINK_KEYS = frozenset({"type", "endpoints", "mtu", "ipv4", "ipv6", "labels", "vars"})
ENDPOINT_KEYS = frozenset({"node", "interface", "mac", "ipv4", "ipv6", "vars"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a topology file: where and why."""

    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path or '<top>'}: {self.reason}"


class TopologyError(ValueError):
    """A topology that cannot be deployed. ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid topology:\n  " + "\n  ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Bind:
    """``source:target[:ro|rw]``; ``source`` made absolute against the topology's folder."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str
    ipv4: str | None = None  # "10.0.0.1/31": set on the interface before any process starts
    ipv6: str | None = None
    mac: str | None = None

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass(frozen=True)
class Link:
    """A veth pair between two endpoints."""

    index: int
    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(frozen=True)
class Node:
    """One node with inheritance already applied."""

    name: str
    kind: str
    image: str = ""
    group: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cmd: str = ""
    exec: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    mgmt_ipv4: str | None = None  # address only, prefix length from the mgmt subnet
    network_mode: str = ""

    @property
    def role(self) -> str | None:
        """``node``, ``route-reflector`` or None (a plain node): what stands in for its entrypoint."""
        return self.labels.get(ROLE_LABEL) or self.env.get(ROLE_ENV) or None

    @property
    def has_mgmt(self) -> bool:
        return self.kind == "linux" and self.network_mode != "none"


@dataclass(frozen=True)
class Mgmt:
    network: str
    ipv4_subnet: str
    ipv4_gw: str
    mtu: int | None = None


@dataclass(frozen=True)
class Topology:
    """A whole lab: name, file, management network, nodes and links."""

    name: str
    path: str
    prefix: str | None
    mgmt: Mgmt
    nodes: dict[str, Node]
    links: tuple[Link, ...]

    @property
    def directory(self) -> Path:
        return Path(self.path).parent

    @property
    def manifests_dir(self) -> Path:
        """``topologies/<name>/`` next to ``topologies/<name>.clab.yml``: l3net manifests to apply."""
        stem = Path(self.path).name.removesuffix(".yml").removesuffix(".yaml").removesuffix(".clab")
        return self.directory / stem

    def node_netns(self, node: str) -> str:
        """The namespace standing in for ``node``'s container, named as containerlab names containers."""
        spec = self.nodes.get(node)
        if node == HOST_NODE or (spec is not None and spec.kind == "host"):
            return f"{self.base}--host"
        if self.prefix == "":
            return node
        return f"{self.base}-{node}"

    @property
    def base(self) -> str:
        """The lab's own name stem: ``clab-<lab>`` by default (containerlab's ``prefix`` rules)."""
        if self.prefix is None:
            return f"clab-{self.name}"
        if self.prefix in ("", "__lab-name"):
            return self.name
        return f"{self.prefix}-{self.name}"

    @property
    def mgmt_netns(self) -> str:
        # "--" cannot start a node name, so this never collides with a node's namespace.
        return f"{self.base}--mgmt"

    def mgmt_addresses(self) -> dict[str, str]:
        """``node -> "a.b.c.d/len"`` on eth0: fixed ``mgmt-ipv4`` first, then the next free ones in order."""
        net = ipaddress.ip_network(self.mgmt.ipv4_subnet, strict=False)
        taken = {self.mgmt.ipv4_gw} | {n.mgmt_ipv4 for n in self.nodes.values() if n.mgmt_ipv4}
        hosts = (str(h) for h in net.hosts())
        out: dict[str, str] = {}
        for node in self.nodes.values():
            if not node.has_mgmt:
                continue
            addr = node.mgmt_ipv4
            if addr is None:
                addr = next(h for h in hosts if h not in taken)
                taken.add(addr)
            out[node.name] = f"{addr}/{net.prefixlen}"
        return out


# -- environment expansion ----------------------------------------------------

def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """containerlab's variable expansion: ``${VAR}``, ``${VAR:=default}``, ``$$`` -> ``$``."""
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op is None:
            return value or ""
        if op.startswith(":"):  # ":=" / ":-": default when unset or empty
            return value if value else default
        return value if value is not None else default  # "=" / "-": default only when unset

    return _ENV_RE.sub(sub, text)


# -- parsing --------------------------------------------------------------------

class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path: str, reason: str) -> None:
        self.problems.append(Problem(self.file, path, reason))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def _scalar_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _str_map(c: _Collector, path: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.add(path, f"must be a mapping, not {type(raw).__name__}")
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        if v is None or isinstance(v, dict | list):
            c.add(_join(path, str(k)), "must be a string, number or boolean")
            continue
        out[str(k)] = _scalar_str(v)
    return out


def _str_list(c: _Collector, path: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.add(path, f"must be a list of strings, not {type(raw).__name__}")
        return []
    out = []
    for i, v in enumerate(raw):
        if not isinstance(v, str):
            c.add(_join(path, i), "must be a string")
            continue
        out.append(v)
    return out


def _check_def(c: _Collector, path: str, raw: Any) -> dict[str, Any]:
    """A node-shaped definition (defaults, kind, group or node): a mapping of known fields."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.add(path, f"must be a mapping, not {type(raw).__name__}")
        return {}
    for k in raw:
        if k not in NODE_KEYS:
            c.add(_join(path, str(k)), "unknown node field (not in containerlab's schema)")
    for k in ("kind", "group", "cmd", "image", "network-mode", "mgmt-ipv4"):
        if k in raw and raw[k] is not None and not isinstance(raw[k], str):
            c.add(_join(path, k), "must be a string")
    return raw


def _parse_bind(c: _Collector, path: str, text: str, base: Path) -> Bind | None:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        c.add(path, f"bind {text!r} must be 'source:target' or 'source:target:ro'")
        return None
    opts = parts[2].split(",") if len(parts) == 3 else []
    bad = [o for o in opts if o not in ("ro", "rw", "")]
    if bad:
        c.add(path, f"unsupported bind option(s) {bad} (this runtime knows ro, rw)")
        return None
    if not parts[1].startswith("/"):
        c.add(path, f"bind target {parts[1]!r} must be an absolute path")
        return None
    source = Path(parts[0]).expanduser()
    if not source.is_absolute():
        source = base / source  # containerlab: relative to the topology file's folder
    return Bind(str(source.resolve()), parts[1], "ro" in opts)


def _ifname_problem(name: str) -> str | None:
    if not name:
        return "empty interface name"
    if len(name) > MAX_IFNAME:
        return f"interface name {name!r} is {len(name)} characters; Linux allows at most {MAX_IFNAME}"
    if _IFNAME_BAD.search(name) or name in (".", ".."):
        return f"interface name {name!r} contains a character Linux does not allow"
    return None


class _Resolver:
    """containerlab's inheritance: defaults < kind < group < node."""

    def __init__(self, defaults: dict[str, Any], kinds: dict[str, dict[str, Any]],
                 groups: dict[str, dict[str, Any]]) -> None:
        self.defaults, self.kinds, self.groups = defaults, kinds, groups

    def kind_of(self, node: dict[str, Any]) -> str:
        if node.get("kind"):
            return node["kind"]
        group = self.groups.get(node.get("group") or "")
        if group and group.get("kind"):
            return group["kind"]
        dgroup = self.groups.get(self.defaults.get("group") or "")
        if dgroup and dgroup.get("kind"):
            return dgroup["kind"]
        return self.defaults.get("kind") or ""

    def group_of(self, node: dict[str, Any]) -> str:
        if node.get("group"):
            return node["group"]
        kind = self.kinds.get(self.kind_of(node), {})
        return kind.get("group") or self.defaults.get("group") or ""

    def levels(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """From least to most specific."""
        return [self.defaults, self.kinds.get(self.kind_of(node), {}),
                self.groups.get(self.group_of(node), {}), node]


def load_topology(path: str | Path, env: Mapping[str, str] | None = None) -> Topology:
    """Read, expand, parse and check a topology file; raises :class:`TopologyError`."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TopologyError([Problem(str(p), "", f"cannot read: {exc.strerror or exc}")]) from exc
    return parse_topology(text, str(p), env)


def parse_topology(text: str, file: str = "<topology>", env: Mapping[str, str] | None = None) -> Topology:
    """Parse topology text; ``file`` names it in errors and anchors relative bind sources."""
    c = _Collector(file)
    try:
        raw = yaml.safe_load(expand_env(text, env))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TopologyError([Problem(file, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from exc
    if not isinstance(raw, dict):
        raise TopologyError([Problem(file, "", "a topology file must be a YAML mapping")])
    topo = _parse(c, raw, Path(file).resolve())
    if c.problems or topo is None:
        raise TopologyError(c.problems)
    return topo


def _parse(c: _Collector, raw: dict[str, Any], file: Path) -> Topology | None:
    base = file.parent
    for k in raw:
        if k not in TOP_KEYS:
            c.add(str(k), "unknown top-level field (containerlab knows " + ", ".join(sorted(TOP_KEYS)) + ")")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        c.add("name", "required: letters, digits, '-', '_' or '.', starting with a letter or digit")
        name = ""
    prefix = raw.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or (prefix and prefix != "__lab-name"
                                                               and not _NAME_RE.match(prefix))):
        c.add("prefix", "must be '', '__lab-name' or a name")
        prefix = None
    mgmt = _parse_mgmt(c, raw.get("mgmt"))

    t = raw.get("topology")
    if not isinstance(t, dict):
        c.add("topology", "required mapping with 'nodes' (and usually 'links')")
        return None
    for k in t:
        if k not in TOPOLOGY_KEYS:
            c.add(_join("topology", str(k)), "unknown field (expected defaults, kinds, groups, nodes, links)")
    defaults = _check_def(c, "topology.defaults", t.get("defaults"))
    kinds = {}
    for kname, kdef in _mapping(c, "topology.kinds", t.get("kinds")).items():
        kinds[str(kname)] = _check_def(c, _join("topology.kinds", str(kname)), kdef)
    groups = {}
    for gname, gdef in _mapping(c, "topology.groups", t.get("groups")).items():
        groups[str(gname)] = _check_def(c, _join("topology.groups", str(gname)), gdef)
    resolver = _Resolver(defaults, kinds, groups)

    raw_nodes = _mapping(c, "topology.nodes", t.get("nodes"))
    if not raw_nodes:
        c.add("topology.nodes", "at least one node is required")
    nodes: dict[str, Node] = {}
    for nname, ndef in raw_nodes.items():
        npath = _join("topology.nodes", str(nname))
        if not isinstance(nname, str) or not _NODE_NAME_RE.match(nname):
            c.add(npath, "node names use letters, digits, '-', '_', '.', '|', starting with a letter or digit")
            continue
        node = _parse_node(c, npath, nname, _check_def(c, npath, ndef), resolver, base, mgmt)
        if node is not None:
            nodes[nname] = node
    _check_mgmt_addresses(c, nodes, mgmt)
    links = _parse_links(c, t.get("links"), nodes)
    return Topology(name=name, path=str(file), prefix=prefix, mgmt=mgmt, nodes=nodes, links=tuple(links))


def _mapping(c: _Collector, path: str, raw: Any) -> dict[Any, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.add(path, f"must be a mapping, not {type(raw).__name__}")
        return {}
    return raw


def _parse_mgmt(c: _Collector, raw: Any) -> Mgmt:
    m = _mapping(c, "mgmt", raw)
    for k in m:
        if k not in MGMT_KEYS:
            c.add(_join("mgmt", str(k)), "unknown management network field")
    network = m.get("network") or DEFAULT_MGMT_NETWORK
    subnet = m.get("ipv4-subnet") or DEFAULT_MGMT_SUBNET
    if subnet == "auto":
        subnet = DEFAULT_MGMT_SUBNET
    try:
        net = ipaddress.IPv4Network(str(subnet), strict=False)
    except ValueError as exc:
        c.add("mgmt.ipv4-subnet", f"not an IPv4 subnet: {exc}")
        net = ipaddress.IPv4Network(DEFAULT_MGMT_SUBNET)
    if net.prefixlen > 29:
        c.add("mgmt.ipv4-subnet", "too small for a management network (at most /29)")
    gw = m.get("ipv4-gw")
    if gw is None:
        gw = str(next(net.hosts()))  # containerlab: the first host address is the bridge's
    else:
        try:
            if ipaddress.IPv4Address(str(gw)) not in net:
                c.add("mgmt.ipv4-gw", f"{gw} is outside {net}")
        except ValueError:
            c.add("mgmt.ipv4-gw", f"not an IPv4 address: {gw!r}")
    mtu = m.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        c.add("mgmt.mtu", "must be an integer between 68 and 65535")
        mtu = None
    return Mgmt(str(network), str(net), str(gw), mtu)


def _parse_node(c: _Collector, path: str, name: str, ndef: dict[str, Any], r: _Resolver, base: Path,
                mgmt: Mgmt) -> Node | None:
    kind = r.kind_of(ndef)
    if not kind:
        c.add(_join(path, "kind"), "no kind (set it on the node, its group, or topology.defaults)")
        return None
    if kind not in SUPPORTED_KINDS:
        c.add(_join(path, "kind"), f"unsupported kind {kind!r}: this runtime runs {', '.join(SUPPORTED_KINDS)}")
        return None
    levels = r.levels(ndef)

    def scalar(key: str) -> str:
        for level in reversed(levels):
            v = level.get(key)
            if v:
                return str(v)
        return ""

    f = _merge_levels(c, path, ndef, levels, base)
    node = Node(name=name, kind=kind, image=scalar("image"), group=r.group_of(ndef), env=f.env, cmd=scalar("cmd"),
                exec=tuple(f.execs), binds=tuple(f.binds.values()), labels=f.labels, sysctls=f.sysctls,
                mgmt_ipv4=scalar("mgmt-ipv4") or None, network_mode=scalar("network-mode"))
    _check_node_kind(c, path, node)
    _check_sysctls(c, path, node.sysctls)
    if node.mgmt_ipv4:
        _check_mgmt_ipv4(c, path, node.mgmt_ipv4, mgmt)
    return node


@dataclass
class _NodeFields:
    """The mapping and list fields of a node, merged over its levels (defaults, group, node)."""

    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    execs: list[str] = field(default_factory=list)
    binds: dict[str, Bind] = field(default_factory=dict)


def _merge_levels(c: _Collector, path: str, ndef: dict[str, Any], levels: list[dict[str, Any]],
                  base: Path) -> _NodeFields:
    # Later levels override earlier keys; exec lines accumulate once each; a bind is keyed by its target.
    f = _NodeFields()
    for level in levels:
        lpath = path if level is ndef else "(inherited)"
        f.env.update(_str_map(c, _join(lpath, "env"), level.get("env")))
        f.labels.update(_str_map(c, _join(lpath, "labels"), level.get("labels")))
        f.sysctls.update(_str_map(c, _join(lpath, "sysctls"), level.get("sysctls")))
        for line in _str_list(c, _join(lpath, "exec"), level.get("exec")):
            if line not in f.execs:
                f.execs.append(line)
        for i, text in enumerate(_str_list(c, _join(lpath, "binds"), level.get("binds"))):
            b = _parse_bind(c, _join(_join(lpath, "binds"), i), text, base)
            if b is not None:
                f.binds[b.target] = b
    return f


def _check_node_kind(c: _Collector, path: str, node: Node) -> None:
    """The role, network mode and process fields must fit the node's kind."""
    if node.role is not None and node.role not in ROLES:
        where = _join(path, "labels") if ROLE_LABEL in node.labels else _join(path, "env")
        c.add(where, f"role {node.role!r} is not one of {', '.join(ROLES)}")
    if node.network_mode not in ("", "bridge", "none"):
        c.add(_join(path, "network-mode"), f"network-mode {node.network_mode!r} is not supported here (use none)")
    if node.kind == "bridge" and (err := _ifname_problem(node.name)):
        c.add(path, f"a bridge node's name is its bridge's name: {err}")
    if node.kind != "linux" and (node.cmd or node.role or node.binds):
        c.add(path, f"kind {node.kind} runs no processes of its own: cmd, binds and roles need kind linux")


def _check_sysctls(c: _Collector, path: str, sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", key) or ".." in key:
            c.add(_join(_join(path, "sysctls"), key), "not a sysctl name")
        elif not (key.startswith("net.") or key.startswith("net/")):
            # Only net.* sysctls belong to a network namespace; others would change the host.
            c.add(_join(_join(path, "sysctls"), key), "only net.* sysctls are per namespace; "
                  f"setting {key}={value} would change the host")


def _check_mgmt_ipv4(c: _Collector, path: str, mgmt_ipv4: str, mgmt: Mgmt) -> None:
    try:
        addr = ipaddress.IPv4Address(mgmt_ipv4)
        net = ipaddress.IPv4Network(mgmt.ipv4_subnet)
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            c.add(_join(path, "mgmt-ipv4"), f"{addr} is not a host address of mgmt subnet {net}")
        elif str(addr) == mgmt.ipv4_gw:
            c.add(_join(path, "mgmt-ipv4"), f"{addr} is the management gateway")
    except ValueError:
        c.add(_join(path, "mgmt-ipv4"), f"not an IPv4 address: {mgmt_ipv4!r}")


def _check_mgmt_addresses(c: _Collector, nodes: dict[str, Node], mgmt: Mgmt) -> None:
    seen: dict[str, str] = {}
    for node in nodes.values():
        if node.mgmt_ipv4 and node.has_mgmt:
            if node.mgmt_ipv4 in seen:
                c.add(f"topology.nodes.{node.name}.mgmt-ipv4",
                      f"{node.mgmt_ipv4} is already node {seen[node.mgmt_ipv4]}'s")
            seen[node.mgmt_ipv4] = node.name
    free = ipaddress.IPv4Network(mgmt.ipv4_subnet).num_addresses - 3
    if sum(1 for n in nodes.values() if n.has_mgmt) > free:
        c.add("mgmt.ipv4-subnet", f"{mgmt.ipv4_subnet} has room for {free} nodes only")


def _parse_links(c: _Collector, raw: Any, nodes: dict[str, Node]) -> list[Link]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        c.add("topology.links", "must be a list")
        return []
    links: list[Link] = []
    used: dict[tuple[str, str], str] = {}  # (node or "host", interface) -> the endpoint path that took it
    for i, item in enumerate(raw):
        link = _parse_link(c, i, item, nodes, used)
        if link is not None:
            links.append(link)
    return links


def _parse_link(c: _Collector, i: int, item: Any, nodes: dict[str, Node],
                used: dict[tuple[str, str], str]) -> Link | None:
    lpath = f"topology.links[{i}]"
    if not isinstance(item, dict):
        c.add(lpath, "must be a mapping with 'endpoints'")
        return None
    ltype = item.get("type")
    if ltype is not None and ltype != "veth":
        c.add(_join(lpath, "type"), f"link type {ltype!r} is not supported here (veth, or the short form)")
        return None
    allowed = VETH_LINK_KEYS if ltype == "veth" else SHORT_LINK_KEYS
    for k in item:
        if k not in allowed:
            c.add(_join(lpath, str(k)), "unknown link field")
    eps = item.get("endpoints")
    if not isinstance(eps, list) or len(eps) != 2:
        c.add(_join(lpath, "endpoints"), "must list exactly two endpoints")
        return None
    addrs = item.get("ipv4") or []
    addrs6 = item.get("ipv6") or []
    parsed: list[Endpoint] = []
    for j, ep in enumerate(eps):
        epath = f"{lpath}.endpoints[{j}]"
        endpoint = _parse_endpoint(c, epath, ep, ltype == "veth", _nth(addrs, j), _nth(addrs6, j))
        if endpoint is not None and _claim_endpoint(c, epath, endpoint, nodes, used):
            parsed.append(endpoint)
    mtu = item.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        c.add(_join(lpath, "mtu"), "must be an integer between 68 and 65535")
        mtu = None
    return Link(i, parsed[0], parsed[1], mtu) if len(parsed) == 2 else None


def _nth(values: list[Any], j: int) -> Any:
    """The ``j``-th per-endpoint address of a link, None when absent or empty."""
    return values[j] if j < len(values) and values[j] else None


def _claim_endpoint(c: _Collector, epath: str, endpoint: Endpoint, nodes: dict[str, Node],
                    used: dict[tuple[str, str], str]) -> bool:
    """Whether ``endpoint`` names a known node's free, non-management interface; marks it used if so."""
    if endpoint.node != HOST_NODE and endpoint.node not in nodes:
        c.add(epath, f"unknown node {endpoint.node!r} (the nodes are: {', '.join(sorted(nodes)) or 'none'})")
        return False
    node = nodes.get(endpoint.node)
    if node is not None and node.has_mgmt and endpoint.iface == MGMT_IFNAME:
        c.add(epath, f"{MGMT_IFNAME} is the management interface; use eth1 and up")
        return False
    # Every host-kind node and the host itself share the host's interfaces.
    key = (node.kind if node and node.kind == "host" else endpoint.node, endpoint.iface)
    if key == (HOST_NODE, endpoint.iface):
        key = ("host", endpoint.iface)
    if key in used:
        c.add(epath, f"endpoint {endpoint} is already used by {used[key]}")
        return False
    used[key] = epath
    return True


def _parse_endpoint(c: _Collector, path: str, ep: Any, extended: bool, ipv4: Any, ipv6: Any) -> Endpoint | None:
    mac = None
    if extended:
        if not isinstance(ep, dict):
            c.add(path, "must be a mapping {node, interface} in a 'type: veth' link")
            return None
        for k in ep:
            if k not in ENDPOINT_KEYS:
                c.add(_join(path, str(k)), "unknown endpoint field")
        node, iface = ep.get("node"), ep.get("interface")
        ipv4, ipv6, mac = ep.get("ipv4", ipv4), ep.get("ipv6", ipv6), ep.get("mac")
        if not isinstance(node, str) or not isinstance(iface, str):
            c.add(path, "needs 'node' and 'interface' strings")
            return None
    else:
        if not isinstance(ep, str) or ep.count(":") != 1:
            c.add(path, f"must be 'node:interface', got {ep!r}")
            return None
        node, iface = ep.split(":")
    if err := _ifname_problem(iface):
        c.add(path, err)
        return None
    for value, cls, label in ((ipv4, ipaddress.IPv4Interface, "ipv4"), (ipv6, ipaddress.IPv6Interface, "ipv6")):
        if value is None:
            continue
        try:
            iface_addr = cls(str(value))
            if "/" not in str(value):
                raise ValueError("needs a prefix length")
            del iface_addr
        except ValueError as exc:
            c.add(f"{path}.{label}" if extended else f"{path} ({label})", f"not an {label} address/len: {exc}")
            return None
    return Endpoint(node, iface, str(ipv4) if ipv4 else None, str(ipv6) if ipv6 else None, mac)

"""l3net.cni.config: the CNI environment and network configuration, decoded and validated.

Pure: reads only the mapping and bytes it is given. Every refusal is a
:class:`CNIError` with the spec's code (4 environment, 6 decode, 7 config,
1 version) and a message naming the variable or field path.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from l3net.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV, CNIError
from l3net.constants import DEFAULT_ETCD_PREFIX

PLUGIN_TYPE = "l3net-cni"
IPAM_TYPE = "l3net-ipam"
SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
DEFAULT_VERSION = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
DEFAULT_NAMESPACE = "default"
# Below the shim's reply timeout (l3net.cni.shim.REPLY_TIMEOUT), so a waiting ADD is never cut off.
MAX_POLICY_SETUP_TIMEOUT = 60

# The CNI spec's grammar for CNI_CONTAINERID; fullmatch, so a trailing newline is refused too.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
MAX_CONTAINER_ID = 255  # the WorkloadEndpoint's spec.containerID limit
# Linux's dev_valid_name (at most 15 bytes, not '.' or '..', no '/', ':' or whitespace), narrowed to
# printable ASCII and without '%' (a name with '%' is a template to the kernel's name allocator).
_IFNAME = re.compile(r"[!-~]{1,15}")
_IFNAME_BAD = re.compile(r"[/:%]")
_CNI_ARGS_KEY = re.compile(r"^[A-Za-z0-9_\-.]+$")


@dataclass(frozen=True)
class CNIEnv:
    """The ``CNI_*`` variables of one invocation."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE") or DEFAULT_NAMESPACE

    @property
    def pod(self) -> str:
        return self.args.get("K8S_POD_NAME") or self.container_id


@dataclass(frozen=True)
class NetConf:
    """The validated network configuration (stdin)."""

    cni_version: str
    name: str
    etcd_endpoints: str | None = None
    etcd_prefix: str = DEFAULT_ETCD_PREFIX
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    nodename: str | None = None
    mtu: int = 0
    ipv4_pools: tuple[str, ...] = ()
    assign_ipv4: bool = True
    static_ips: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    sticky_key: str | None = None
    log_level: str = "warning"
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None
    agent_socket: str | None = None  # read by l3net.cni.shim; validated here so a bad value is named
    policy_setup_timeout: float = 0.0  # s an agent-served ADD waits for the agent to program the pod; 0: no wait
    kubeconfig: str | None = None  # "kubernetes": {"kubeconfig": path}: ADD reads the pod (l3net.cni.kubepod)


def parse_env(env: Mapping[str, str]) -> CNIEnv:
    """The ``CNI_*`` variables; CNIError(4) naming the first bad one."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENV, "CNI_COMMAND is not set", "expected one of " + ", ".join(COMMANDS))
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"CNI_COMMAND {command!r} is not supported", "expected one of "
                       + ", ".join(COMMANDS))
    if command in ("VERSION", "STATUS", "GC"):
        return CNIEnv(command=command, path=env.get("CNI_PATH", ""))
    cid = env.get("CNI_CONTAINERID", "")
    if not cid:
        raise CNIError(INVALID_ENV, "CNI_CONTAINERID is not set")
    if not container_id_ok(cid):
        raise CNIError(INVALID_ENV, f"CNI_CONTAINERID {cid[:80]!r} is invalid",
                       f"1..{MAX_CONTAINER_ID} letters, digits, '_', '.' and '-', starting with a letter or digit")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not netns:
        raise CNIError(INVALID_ENV, "CNI_NETNS is not set", f"{command} needs the container's network namespace")
    if netns and not netns.startswith("/"):
        raise CNIError(INVALID_ENV, f"CNI_NETNS {netns!r} is not an absolute path")
    ifname = env.get("CNI_IFNAME", "")
    if not ifname:
        raise CNIError(INVALID_ENV, "CNI_IFNAME is not set")
    if not ifname_ok(ifname):
        raise CNIError(INVALID_ENV, f"CNI_IFNAME {ifname[:40]!r} is not a valid interface name",
                       "1..15 printable ASCII characters, not '.' or '..', no '/', ':', '%' or whitespace")
    path = env.get("CNI_PATH", "")
    if not path and command in ("ADD", "CHECK"):
        raise CNIError(INVALID_ENV, "CNI_PATH is not set")
    return CNIEnv(command=command, container_id=cid, netns=netns, ifname=ifname, path=path,
                  args=parse_cni_args(env.get("CNI_ARGS", "")))


def ifname_ok(name: str) -> bool:
    """A Linux interface name l3net accepts for the pod side (``CNI_IFNAME``, a GC attachment's ``ifname``)."""
    return bool(_IFNAME.fullmatch(name)) and name not in (".", "..") and not _IFNAME_BAD.search(name)


def container_id_ok(cid: str) -> bool:
    """``cid`` follows the CNI spec's container ID grammar (and l3net's length limit)."""
    return len(cid) <= MAX_CONTAINER_ID and bool(_CONTAINER_ID.fullmatch(cid))


def parse_cni_args(text: str) -> dict[str, str]:
    """``K1=V1;K2=V2``; CNIError(4) on a malformed pair."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not _CNI_ARGS_KEY.match(key):
            raise CNIError(INVALID_ENV, f"CNI_ARGS: {part!r} is not KEY=VALUE", "expected K1=V1;K2=V2")
        out[key] = value
    return out


def decode_stdin(raw: bytes) -> dict[str, Any]:
    """The JSON object on stdin; CNIError(6) when it is not one."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CNIError(DECODE_FAILURE, "failed to decode the network configuration", str(exc)) from None
    if not isinstance(doc, dict):
        raise CNIError(DECODE_FAILURE, "the network configuration must be a JSON object",
                       f"got {type(doc).__name__}")
    return doc


def version_of(doc: Mapping[str, Any]) -> str:
    """The requested cniVersion; CNIError(1) when we do not speak it, (7) when missing or not a string."""
    v = doc.get("cniVersion")
    if v is None:
        raise CNIError(INVALID_CONFIG, "cniVersion: required field is missing")
    if not isinstance(v, str):
        raise CNIError(INVALID_CONFIG, f"cniVersion: must be a string, not {type(v).__name__}")
    if v not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"cniVersion {v!r} is not supported",
                       "supported: " + ", ".join(SUPPORTED_VERSIONS))
    return v


def short_repr(value: Any) -> str:
    """``repr`` cut to 60 characters, for error messages about untrusted values."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: str, reason: str) -> CNIError:
    return CNIError(INVALID_CONFIG, f"{path}: {reason}")


def _opt_str(doc: Mapping[str, Any], key: str, path: str) -> str | None:
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad(path, f"must be a string, not {type(v).__name__}")
    return v


def _ips(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(path, "must be a list of IP addresses")
    out = []
    for i, item in enumerate(value):
        try:
            # CNI convention allows "10.0.0.5" or "10.0.0.5/24" (the prefix is ignored: we give /32s).
            addr = ipaddress.ip_interface(item).ip if isinstance(item, str) else None
        except ValueError:
            addr = None
        if addr is None:
            raise _bad(f"{path}[{i}]", f"{item!r} is not an IP address")
        if addr.version != 4:
            raise _bad(f"{path}[{i}]", f"{addr} is IPv6; l3net-cni assigns IPv4 only")
        out.append(str(addr))
    return tuple(out)


def parse_netconf(doc: Mapping[str, Any], command: str) -> NetConf:
    """Validate the network configuration for ``command``; CNIError(7/1) naming the field."""
    # The checks run in the order of the fields below, so the first bad field is the one reported.
    version = version_of(doc)
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("name", "required non-empty string")
    typ = doc.get("type")
    if typ != PLUGIN_TYPE:
        raise _bad("type", f"must be {PLUGIN_TYPE!r}, not {typ!r}")
    endpoints, prefix = _etcd_location(doc)
    mtu = _mtu(doc)
    log_level = _opt_str(doc, "log_level", "log_level") or "warning"
    policy_wait = _policy_wait(doc)
    pools, assign_v4 = _ipam(doc)
    cni_args = _cni_args(doc)
    static = _static_ips(doc, cni_args)
    labels = _labels(cni_args)
    sticky = _opt_str(cni_args, "sticky_key", "args.cni.sticky_key")
    kubeconfig = _kubeconfig(doc)
    prev = _prev_result(doc, command, version)
    attachments = _valid_attachments(doc)
    if not assign_v4 and not static:
        raise _bad("ipam.assign_ipv4", "is false and no static address was given: the pod would get no address")
    return NetConf(
        cni_version=version, name=name, etcd_endpoints=endpoints, etcd_prefix=prefix,
        etcd_ca_cert_file=_opt_str(doc, "etcd_ca_cert_file", "etcd_ca_cert_file"),
        etcd_cert_file=_opt_str(doc, "etcd_cert_file", "etcd_cert_file"),
        etcd_key_file=_opt_str(doc, "etcd_key_file", "etcd_key_file"),
        nodename=_opt_str(doc, "nodename", "nodename"), mtu=mtu, ipv4_pools=pools, assign_ipv4=assign_v4,
        static_ips=static, labels=labels, sticky_key=sticky, log_level=log_level, prev_result=prev,
        valid_attachments=attachments, agent_socket=_opt_str(doc, "agentSocket", "agentSocket"),
        policy_setup_timeout=float(policy_wait), kubeconfig=kubeconfig or None)


def _etcd_location(doc: Mapping[str, Any]) -> tuple[str | None, str]:
    """``etcd_endpoints`` (None: the plugin's default) and ``etcd_prefix``."""
    endpoints = _opt_str(doc, "etcd_endpoints", "etcd_endpoints")
    prefix = _opt_str(doc, "etcd_prefix", "etcd_prefix") or DEFAULT_ETCD_PREFIX
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise _bad("etcd_prefix", f"{prefix!r} must start and end with '/'")
    if endpoints is not None:
        for ep in endpoints.split(","):
            if not ep.strip().startswith(("http://", "https://", "unix://")):
                raise _bad("etcd_endpoints", f"{ep!r}: scheme must be http://, https:// or unix://")
    return endpoints, prefix


def _mtu(doc: Mapping[str, Any]) -> int:
    mtu = doc.get("mtu", 0)
    # bool is an int to Python, never an MTU.
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not (mtu == 0 or 68 <= mtu <= 65535):
        raise _bad("mtu", f"{mtu!r} must be 0 (auto) or an integer 68..65535")
    return mtu


def _policy_wait(doc: Mapping[str, Any]) -> int | float:
    policy_wait = doc.get("policy_setup_timeout_seconds", 0)
    if isinstance(policy_wait, bool) or not isinstance(policy_wait, int | float) or \
            not 0 <= policy_wait <= MAX_POLICY_SETUP_TIMEOUT:
        raise _bad("policy_setup_timeout_seconds",
                   f"{policy_wait!r} must be a number of seconds 0..{MAX_POLICY_SETUP_TIMEOUT} (0: do not wait)")
    return policy_wait


def _ipam(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """The ``ipam`` section: (ipv4_pools, assign_ipv4)."""
    ipam = doc.get("ipam", {})
    if not isinstance(ipam, dict):
        raise _bad("ipam", "must be an object")
    ipam_type = ipam.get("type", IPAM_TYPE)
    if ipam_type != IPAM_TYPE:
        raise _bad("ipam.type", f"must be {IPAM_TYPE!r}, not {ipam_type!r}")
    pools = ipam.get("ipv4_pools", [])
    if not isinstance(pools, list) or not all(isinstance(p, str) and p for p in pools):
        raise _bad("ipam.ipv4_pools", "must be a list of pool names or CIDRs")
    assign = ipam.get("assign_ipv4", "true")
    if isinstance(assign, str) and assign.lower() in ("true", "false"):
        return tuple(pools), assign.lower() == "true"
    if isinstance(assign, bool):
        return tuple(pools), assign
    raise _bad("ipam.assign_ipv4", f"{assign!r} must be \"true\" or \"false\"")


def _cni_args(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``args.cni`` ({} when absent)."""
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise _bad("args", "must be an object")
    cni_args = args.get("cni", {})
    if not isinstance(cni_args, dict):
        raise _bad("args.cni", "must be an object")
    return cni_args


def _static_ips(doc: Mapping[str, Any], cni_args: dict[str, Any]) -> tuple[str, ...]:
    """Static addresses: ``runtimeConfig.ips`` when given, else ``args.cni.ips``, else none."""
    static: tuple[str, ...] = ()
    if "ips" in cni_args:
        static = _ips(cni_args["ips"], "args.cni.ips")
    runtime = doc.get("runtimeConfig", {})
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", "must be an object")
    if "ips" in runtime:
        static = _ips(runtime["ips"], "runtimeConfig.ips")
    return static


def _labels(cni_args: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    raw_labels = cni_args.get("labels", [])
    if not isinstance(raw_labels, list):
        raise _bad("args.cni.labels", "must be a list of {key, value}")
    for i, item in enumerate(raw_labels):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or \
                not isinstance(item.get("value"), str):
            raise _bad(f"args.cni.labels[{i}]", "must be {\"key\": string, \"value\": string}")
        labels[item["key"]] = item["value"]
    return labels


def _kubeconfig(doc: Mapping[str, Any]) -> str | None:
    kube = doc.get("kubernetes", {})
    if not isinstance(kube, dict):
        raise _bad("kubernetes", "must be an object like {\"kubeconfig\": \"/etc/cni/net.d/l3net-kubeconfig\"}")
    return _opt_str(kube, "kubeconfig", "kubernetes.kubeconfig")


def _prev_result(doc: Mapping[str, Any], command: str, version: str) -> dict[str, Any] | None:
    prev = doc.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("prevResult", "must be an object")
    if command == "CHECK" and prev is None and version != "0.4.0":
        raise _bad("prevResult", "CHECK needs the result of the ADD")
    return prev


def _valid_attachments(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """GC's ``cni.dev/valid-attachments`` as (containerID, ifname) pairs; None when absent."""
    if "cni.dev/valid-attachments" not in doc:
        return None
    raw = doc["cni.dev/valid-attachments"]
    if not isinstance(raw, list):
        raise _bad("cni.dev/valid-attachments", "must be a list of {containerID, ifname}")
    # An attachment GC cannot identify makes the whole GC refused: treating it as absent would
    # release (tear down) the very pod it stands for.
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            raise _bad(f"cni.dev/valid-attachments[{i}]",
                       "must be an object {containerID, ifname}; GC refused, nothing released")
        cid, ifn = a.get("containerID"), a.get("ifname")
        if not isinstance(cid, str) or not container_id_ok(cid):
            raise _bad(f"cni.dev/valid-attachments[{i}].containerID",
                       f"{short_repr(cid)} is not a container ID; GC refused, nothing released")
        if not isinstance(ifn, str) or not ifname_ok(ifn):
            raise _bad(f"cni.dev/valid-attachments[{i}].ifname",
                       f"{short_repr(ifn)} is not an interface name; GC refused, nothing released")
    return tuple((a["containerID"], a["ifname"]) for a in raw)

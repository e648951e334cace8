"""l3net.model.validate.workload: the WorkloadEndpoint spec and its name.

Owns Calico's WorkloadEndpoint naming (``<node>-k8s-<pod>-<endpoint>``, '-' doubled inside each
part; the name must match the spec), Linux interface names, MAC addresses and the endpoint's ports.

Two fields reach the node's kernel and are held to a strict form (issue 13, finding 3):
``interfaceName`` is the workload prefix (``cali``) plus 1..11 lowercase letters or digits (the
CNI plugin makes ``cali`` + 11 hex of a hash), so it can never name ``eth0`` or become an
iptables wildcard (``cali+``); ``ipNetworks`` are host networks (``/32``, ``/128``). Whether
each address lies in an enabled IPPool depends on other resources: the agent's calculation
checks that (``felix.calc``), as does ``l3netctl apply``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from l3net.constants import WORKLOAD_IFACE_HASH_LEN, WORKLOAD_IFACE_PREFIX
from l3net.model.validate.addresses import parse_cidr
from l3net.model.validate.checker import Checker, enum, integer, listof, obj, short, string, typename, unsupported
from l3net.model.validate.names import dns_name
from l3net.model.validate.ports import K8S_PROTOCOLS, iana_port_name

_log = logging.getLogger(__name__)

__all__ = ["WORKLOAD_ENDPOINT_SPEC", "host_network_reason", "host_veth_name", "workload_endpoint_name",
           "workload_endpoint_name_check", "workload_ifname_reason"]

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[^\s/:]{1,15}")
# The host side of a pod's veth: the prefix plus what fits in 15 bytes, lowercase alphanumerics only.
_WORKLOAD_IFNAME = re.compile(
    rf"{re.escape(WORKLOAD_IFACE_PREFIX)}[a-z0-9]{{1,{15 - len(WORKLOAD_IFACE_PREFIX)}}}")


def workload_ifname_reason(value: object) -> str | None:
    """Why ``value`` is not a workload interface name (``cali`` + 1..11 of ``[a-z0-9]``), or None."""
    if isinstance(value, str) and _WORKLOAD_IFNAME.fullmatch(value):
        return None
    return (f"{short(value)} is not a workload interface name: {WORKLOAD_IFACE_PREFIX!r} followed by 1.."
            f"{15 - len(WORKLOAD_IFACE_PREFIX)} lowercase letters or digits")


def host_veth_name(namespace: str, pod: str) -> str:
    """Calico's host-side name of a pod's veth: ``cali`` + the first 11 hex of sha1("<namespace>.<pod>").

    The CNI plugin creates it, the WorkloadEndpoint names it, bench and the tests look for it: one rule.
    """
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return WORKLOAD_IFACE_PREFIX + digest[:WORKLOAD_IFACE_HASH_LEN]


def host_network_reason(value: object) -> str | None:
    """Why ``value`` is not a host network (``a.b.c.d/32`` or ``x::y/128``, no host bits), or None."""
    if not isinstance(value, str):
        return f"must be a CIDR string, not {typename(value)}"
    if "%" in value:
        return f"{value!r} carries an IPv6 scope ID ('%...'); a workload address has none"
    net, reason = parse_cidr(value)
    if net is None:
        return reason
    if net.prefixlen != net.max_prefixlen:
        return (f"{value!r} is not a single address: a workload's networks are /{net.max_prefixlen} "
                f"(IPv{net.version})")
    addr = net.network_address
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_link_local or addr.is_reserved:
        return (f"{value!r} is not a unicast address a workload can own (unspecified, loopback, multicast, "
                "link-local and reserved addresses are refused)")
    return None


def workload_endpoint_name(node: str, pod: str, endpoint: str, orchestrator: str = "k8s") -> str:
    """Calico's WorkloadEndpoint name: ``<node>-k8s-<pod>-<endpoint>``, '-' doubled inside each part."""
    def esc(s: str) -> str:
        return s.replace("-", "--")
    return f"{esc(node)}-{esc(orchestrator)}-{esc(pod)}-{esc(endpoint)}"


def _ifname(c: Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        return c.error(path, f"{short(value)} is not a Linux interface name (1..15 characters, no '/', ':' "
                             "or whitespace)")
    return value


def _workload_ifname(c: Checker, value: Any, path: str) -> Any:
    reason = workload_ifname_reason(value)
    return c.error(path, reason) if reason else value


def _host_network(c: Checker, value: Any, path: str) -> Any:
    reason = host_network_reason(value)
    return c.error(path, reason) if reason else value


def _mac(c: Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        return c.error(path, f"{short(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return value.lower()


WORKLOAD_ENDPOINT_SPEC = obj({
    "node": dns_name(),
    "orchestrator": dns_name(label=True),
    "workload": unsupported(string(max_len=253), lambda v: v == "", "only Kubernetes pods are workloads"),
    "pod": dns_name(),
    "endpoint": _ifname,
    "containerID": string(max_len=255),
    "ipNetworks": listof(_host_network),
    "interfaceName": _workload_ifname,
    "mac": _mac,
    "ports": listof(obj({"name": iana_port_name, "protocol": enum(*K8S_PROTOCOLS), "port": integer(1, 65535)},
                        required=("name", "port"))),
    # Calico's profiles carry namespace and service-account policy; l3net reads Namespace labels instead.
    "profiles": unsupported(listof(string(max_len=253, non_empty=True)), lambda v: not v,
                            "namespace labels come from Namespace resources"),
    "serviceAccountName": dns_name(),
}, required=("node",))


def workload_endpoint_name_check(c: Checker, name: str, spec: dict[str, Any]) -> None:
    """When node, pod and endpoint are all given, the name must be the one they make."""
    parts = [spec.get(k) for k in ("node", "pod", "endpoint")]
    orch = spec.get("orchestrator", "k8s")
    if all(isinstance(p, str) for p in parts):
        expected = workload_endpoint_name(parts[0], parts[1], parts[2], orch)  # type: ignore[arg-type]
        if name != expected:
            c.error("metadata.name", f"must be {expected!r} (<node>-{orch}-<pod>-<endpoint>, '-' doubled "
                                     "inside each part) for this node, pod and endpoint")

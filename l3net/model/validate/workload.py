"""l3net.model.validate.workload: the WorkloadEndpoint spec and its name.

Owns Calico's WorkloadEndpoint naming (``<node>-k8s-<pod>-<endpoint>``, '-' doubled inside each
part; the name must match the spec), Linux interface names, MAC addresses and the endpoint's ports.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.model.validate.addresses import cidr
from l3net.model.validate.checker import Checker, enum, integer, listof, obj, short, string
from l3net.model.validate.names import dns_name
from l3net.model.validate.ports import K8S_PROTOCOLS, iana_port_name

_log = logging.getLogger(__name__)

__all__ = ["WORKLOAD_ENDPOINT_SPEC", "workload_endpoint_name", "workload_endpoint_name_check"]

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[^\s/:]{1,15}")


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


def _mac(c: Checker, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        return c.error(path, f"{short(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return value.lower()


WORKLOAD_ENDPOINT_SPEC = obj({
    "node": dns_name(),
    "orchestrator": dns_name(label=True),
    "workload": string(max_len=253),
    "pod": dns_name(),
    "endpoint": _ifname,
    "containerID": string(max_len=255),
    "ipNetworks": listof(cidr),
    "interfaceName": _ifname,
    "mac": _mac,
    "ports": listof(obj({"name": iana_port_name, "protocol": enum(*K8S_PROTOCOLS), "port": integer(1, 65535)},
                        required=("name", "port"))),
    "profiles": listof(string(max_len=253, non_empty=True)),
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

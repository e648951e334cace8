"""l3net.model.validate.host_endpoint: Calico's HostEndpoint spec (a node's own interface, under policy).

Owns the fields that say which interface of which node a HostEndpoint is, and what its addresses
are. ``interfaceName`` reaches iptables as ``-i``/``-o``, so it is held to a plain Linux
interface name (1..15 of letters, digits, ``.``, ``-``, ``_``): never a wildcard, never a
workload's interface (the ``cali`` prefix). Calico's all-interfaces endpoint (``"*"``) and an
endpoint found by its ``expectedIPs`` alone are refused by name: l3net polices named interfaces
only. ``profiles`` and named ``ports`` are refused unless empty (l3net has no Profile kind, and
its named-port sets are built from workload ports only).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.constants import WORKLOAD_IFACE_PREFIX
from l3net.model.validate.addresses import ip_address
from l3net.model.validate.checker import Checker, integer, listof, obj, short, string, typename, unsupported
from l3net.model.validate.names import dns_name

_log = logging.getLogger(__name__)

__all__ = ["HOST_ENDPOINT_SPEC", "host_ifname_reason"]

_HOST_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")


def host_ifname_reason(value: object) -> str | None:
    """Why ``value`` cannot be a host endpoint's interface name, or None when it can."""
    if not isinstance(value, str):
        return f"must be a string, not {typename(value)}"
    if value == "*":
        return ("l3net does not support this field (the all-interfaces host endpoint '*'): "
                "name one interface per HostEndpoint")
    if not _HOST_IFNAME.fullmatch(value):
        return (f"{short(value)} is not an interface name: 1..15 letters, digits, '.', '-' or '_', "
                "starting with a letter or digit")
    if value.startswith(WORKLOAD_IFACE_PREFIX):
        return f"{short(value)} starts with {WORKLOAD_IFACE_PREFIX!r}: that is a workload's interface, not the host's"
    return None


def _interface_name(c: Checker, value: Any, path: str) -> Any:
    reason = host_ifname_reason(value)
    return c.error(path, reason) if reason else value


HOST_ENDPOINT_SPEC = obj({
    "node": dns_name(),
    "interfaceName": _interface_name,
    "expectedIPs": listof(ip_address(), unique=True),
    "profiles": unsupported(listof(string()), lambda v: not v, "l3net has no Profile kind"),
    "ports": unsupported(listof(obj({"name": string(), "port": integer(1, 65535), "protocol": string()})),
                         lambda v: not v, "named ports are resolved on workloads only"),
}, required=("node", "interfaceName"))

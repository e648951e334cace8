"""l3net.model.validate.ippool: the IPPool spec and its defaults.

Owns the pool rules: a CIDR clear of link-local (where workload gateways live), loopback and
multicast; ``blockSize`` 20..32 (IPv4) or 116..128 (IPv6) and no larger than the pool, defaulting
to Calico's 26/122 (or the pool's own prefix when smaller); ``nodeSelector`` defaulting to ``all()``;
only ``Never`` encapsulation (l3net routes natively); ``natOutgoing`` on IPv4 pools only.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from l3net.constants import DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6
from l3net.model.validate.addresses import cidr
from l3net.model.validate.checker import (
    UNSUPPORTED,
    Check,
    Checker,
    boolean,
    enum,
    format_path,
    integer,
    listof,
    obj,
    unsupported,
)
from l3net.model.validate.selectors import calico_selector_check

_log = logging.getLogger(__name__)

__all__ = ["IPPOOL_SPEC"]

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def _encap(modes: tuple[str, ...]) -> Check:
    return unsupported(enum(*modes), lambda v: v == "Never",
                       "only Never is supported: l3net routes natively, without encapsulation")


def _ippool_post(c: Checker, raw: dict[str, Any], out: dict[str, Any], path: str) -> None:
    if "cidr" not in out:
        return
    net = ipaddress.ip_network(out["cidr"])
    p = format_path(path, "cidr")
    for reserved in _LINK_LOCAL:
        if net.version == reserved.version and net.overlaps(reserved):  # type: ignore[arg-type]
            c.error(p, f"{out['cidr']} overlaps the link-local range {reserved} (workload gateways live there)")
    if net.is_loopback or net.is_multicast:
        c.error(p, f"{out['cidr']} is a loopback or multicast range")
    lo, hi = (20, 32) if net.version == 4 else (116, 128)
    default = DEFAULT_BLOCK_SIZE_V4 if net.version == 4 else DEFAULT_BLOCK_SIZE_V6
    bp = format_path(path, "blockSize")
    block = raw.get("blockSize")
    if block is None:
        out["blockSize"] = block = max(default, net.prefixlen)
    elif "blockSize" not in out:
        return
    if not lo <= block <= hi:
        c.error(bp, f"{block} is outside {lo}..{hi} for an IPv{net.version} pool")
    elif block < net.prefixlen:
        c.error(bp, f"block /{block} is larger than the pool {out['cidr']}")
    out.setdefault("nodeSelector", "all()")
    if net.version == 6 and out.get("natOutgoing") is True:
        # The policy dataplane (the nat table included) is IPv4 only: refused rather than ignored.
        c.error(format_path(path, "natOutgoing"), f"{UNSUPPORTED} on an IPv6 pool (the policy dataplane is IPv4 only)")


IPPOOL_SPEC = obj({
    "cidr": cidr,
    "blockSize": integer(0, 128),
    "disabled": boolean,
    "natOutgoing": boolean,
    "nodeSelector": calico_selector_check,
    # Calico 3.31: only pods of the namespaces it selects draw from the pool (absent: every namespace).
    "namespaceSelector": calico_selector_check,
    "disableBGPExport": boolean,
    # calicoctl exports spell Calico's default out; Tunnel addresses are never allocated (no encapsulation).
    "allowedUses": unsupported(listof(enum("Workload", "Tunnel", "LoadBalancer"), min_items=1, unique=True),
                               lambda v: "Workload" in v and set(v) <= {"Workload", "Tunnel"},
                               "pools serve workloads only: Workload, optionally with Tunnel"),
    # Calico 3.29+: Automatic pools serve any pod; Manual ones only pods that name them. l3net has no Manual.
    "assignmentMode": unsupported(enum("Automatic", "Manual"), lambda v: v == "Automatic",
                                  "every pool is chosen automatically: only Automatic"),
    "ipipMode": _encap(("Never", "Always", "CrossSubnet")),
    "vxlanMode": _encap(("Never", "Always", "CrossSubnet")),
}, required=("cidr",), post=_ippool_post)

"""felix.nodeip: choose this node's IPv4 address the way calico/node does (IP_AUTODETECTION_METHOD).

Methods: ``first-found`` (first global address on an interface that is not
loopback, a workload veth or a known virtual bridge), ``interface=REGEX``,
``skip-interface=REGEX``, ``cidr=CIDR[,CIDR]`` and ``can-reach=IP`` (the source
address the kernel picks towards IP). :func:`choose` is pure; :func:`autodetect`
reads the addresses from netlink.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from l3net.constants import WORKLOAD_IFACE_PREFIX

_log = logging.getLogger(__name__)

# Interfaces first-found never picks (calico/node's default exclusions, plus ours).
_SKIP_DEFAULT = re.compile(r"^(lo|docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|tunl.*|vxlan.*|"
                           + WORKLOAD_IFACE_PREFIX + r".*|kube-ipvs.*|cni.*|podman.*|flannel.*)$")


@dataclass(frozen=True)
class Address:
    ifname: str
    address: str
    prefixlen: int

    @property
    def interface(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Method:
    kind: str
    arg: str = ""


def parse_method(text: str) -> Method:
    """Parse an autodetection method; raises ValueError naming what is wrong."""
    if text == "first-found":
        return Method("first-found")
    kind, sep, arg = text.partition("=")
    if not sep or not arg:
        raise ValueError(f"unknown autodetection method {text!r}: expected first-found, interface=REGEX, "
                         "skip-interface=REGEX, cidr=CIDR or can-reach=IP")
    if kind in ("interface", "skip-interface"):
        for part in arg.split(","):
            try:
                re.compile(part)
            except re.error as exc:
                raise ValueError(f"{kind}: bad regular expression {part!r}: {exc}") from exc
    elif kind == "cidr":
        for part in arg.split(","):
            ipaddress.ip_network(part.strip(), strict=False)
    elif kind == "can-reach":
        ipaddress.ip_address(arg)
    else:
        raise ValueError(f"unknown autodetection method {kind!r}")
    return Method(kind, arg)


def choose(method: Method, addresses: Sequence[Address], reach_source: str | None = None) -> Address | None:
    """Pick the node address from ``addresses`` (in interface order). Pure."""
    v4 = [a for a in addresses if ipaddress.ip_address(a.address).version == 4
          and not ipaddress.ip_address(a.address).is_loopback and not ipaddress.ip_address(a.address).is_link_local]
    if method.kind == "first-found":
        return next((a for a in v4 if not _SKIP_DEFAULT.match(a.ifname)), None)
    if method.kind == "interface":
        pats = [re.compile(p) for p in method.arg.split(",")]
        return next((a for p in pats for a in v4 if p.fullmatch(a.ifname)), None)
    if method.kind == "skip-interface":
        pats = [re.compile(p) for p in method.arg.split(",")]
        return next((a for a in v4 if not _SKIP_DEFAULT.match(a.ifname)
                     and not any(p.fullmatch(a.ifname) for p in pats)), None)
    if method.kind == "cidr":
        nets = [ipaddress.ip_network(p.strip(), strict=False) for p in method.arg.split(",")]
        return next((a for a in v4 if any(ipaddress.ip_address(a.address) in n for n in nets)), None)
    if method.kind == "can-reach":
        return next((a for a in v4 if a.address == reach_source), None)
    return None


def _reach_source(target: str) -> str | None:
    """The source address the kernel would use towards ``target`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return str(s.getsockname()[0])
    except OSError as exc:
        _log.warning("can-reach: no route target=%s error=%s", target, exc)
        return None


def local_addresses() -> list[Address]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [Address(ifname=names.get(a["index"], ""), address=a.get_attr("IFA_ADDRESS"),
                        prefixlen=a["prefixlen"]) for a in ipr.get_addr(family=socket.AF_INET)]


def autodetect(method_text: str) -> Address | None:
    method = parse_method(method_text)
    source = _reach_source(method.arg) if method.kind == "can-reach" else None
    return choose(method, local_addresses(), source)

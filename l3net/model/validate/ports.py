"""l3net.model.validate.ports: ports and protocols, as Kubernetes and Calico write them.

Owns IANA service names (named container ports), the Kubernetes IntOrString port, the Calico port
(number, ``"lo:hi"`` range or name), Calico protocols (names canonicalised, or numbers 1..255) and
the protocol lists each API accepts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.model.validate.checker import Checker, enum, integer, short, typename

_log = logging.getLogger(__name__)

__all__ = ["CALICO_PROTOCOLS", "K8S_PROTOCOLS", "PORT_PROTOCOLS", "calico_port", "calico_protocol",
           "iana_port_name", "k8s_port"]

_IANA_SVC = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_CALICO_PORT_RANGE = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")  # ASCII digits only, as Go's \d

K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")
CALICO_PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
# The protocols a Calico rule may name ports with.
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP", "UDPLite")


def iana_port_name(c: Checker, value: Any, path: str) -> Any:
    """A named port: at most 15 lowercase letters, digits and '-', at least one letter."""
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {typename(value)}")
    if (len(value) > 15 or not _IANA_SVC.fullmatch(value) or "--" in value
            or not any(ch.isalpha() for ch in value)):
        return c.error(path, f"{value!r} is not an IANA service name: at most 15 lowercase letters, digits and "
                             "'-', at least one letter, no leading, trailing or double '-'")
    return value


def k8s_port(c: Checker, value: Any, path: str) -> Any:
    """IntOrString: a number 1..65535 or an IANA service name (a named container port)."""
    if isinstance(value, str):
        return iana_port_name(c, value, path)
    return integer(1, 65535)(c, value, path)


def calico_protocol(c: Checker, value: Any, path: str) -> Any:
    """A Calico rule protocol: a number 1..255 or a name in any case (stored as ``TCP``, ``ICMPv6``...)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return integer(1, 255)(c, value, path)
    return enum(*CALICO_PROTOCOLS, fold_case=True)(c, value, path)


def calico_port(c: Checker, value: Any, path: str) -> Any:
    """Calico port: a number, a ``"lo:hi"`` range or a named port."""
    if isinstance(value, str):
        m = _CALICO_PORT_RANGE.fullmatch(value)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
                return c.error(path, f"port range {value!r} must be lo:hi with 1 <= lo <= hi <= 65535")
            return value
        if value.isascii() and value.isdigit():
            if len(value) > 5:  # also keeps int() away from Python's 4300-digit conversion limit
                return c.error(path, f"port {short(value)} must be 1..65535")
            # a quoted number: accept it as the number Calico's numorstring would parse
            return integer(1, 65535)(c, int(value), path)
        return iana_port_name(c, value, path)
    return integer(1, 65535)(c, value, path)

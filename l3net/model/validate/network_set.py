"""l3net.model.validate.network_set: Calico's NetworkSet (namespaced) and GlobalNetworkSet spec.

Owns ``nets``: CIDRs without host bits, IPv4 or IPv6, as Calico accepts them. The labels that make
a set selectable are ``metadata.labels`` (checked with every kind's metadata). IPv6 nets are
accepted and kept, and the IPv4-only policy dataplane leaves them out of its sets, as it does with
a rule's IPv6 ``nets`` (:mod:`policy.compiler`).
"""

from __future__ import annotations

import logging

from l3net.model.validate.addresses import cidr
from l3net.model.validate.checker import listof, obj

_log = logging.getLogger(__name__)

__all__ = ["NETWORK_SET_SPEC"]

NETWORK_SET_SPEC = obj({"nets": listof(cidr)})

"""l3net.keys: the etcd key layout, in one place.

Everything lives under one prefix (default ``/l3net/v1/``)::

    resources/<plural>/<name>                 cluster-scoped resources
    resources/<plural>/<namespace>/<name>     namespaced resources
    ipam/config                               IPAM settings (strict affinity, max blocks)
    ipam/blocks/<a.b.c.d-len>                 one allocation block
    ipam/affinities/<node>/<a.b.c.d-len>      a node's claim on a block
    ipam/handles/<handle>                     addresses held by one workload
    ipam/sticky/<sticky key>                  an address held for a re-created workload
    status/<node>/agent                       the agent's own status (leased)
    status/<node>/bgp                         the node's BGP peer table (leased)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from l3net.constants import DEFAULT_ETCD_PREFIX


def cidr_token(cidr: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """``10.0.0.0/26`` -> ``10.0.0.0-26`` (``/`` cannot appear inside one key segment)."""
    net = ipaddress.ip_network(str(cidr))
    return f"{net.network_address}-{net.prefixlen}"


def token_cidr(token: str) -> str:
    """Inverse of :func:`cidr_token`."""
    addr, _, length = token.rpartition("-")
    return str(ipaddress.ip_network(f"{addr}/{length}"))


@dataclass(frozen=True)
class KeyLayout:
    """Builds and parses every key l3net stores. Pure; safe on any thread."""

    prefix: str = DEFAULT_ETCD_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"etcd prefix must start and end with '/': {self.prefix!r}")

    # -- resources ---------------------------------------------------------
    @property
    def resources(self) -> str:
        return f"{self.prefix}resources/"

    def resource_dir(self, plural: str) -> str:
        return f"{self.resources}{plural}/"

    def resource(self, plural: str, name: str, namespace: str | None = None) -> str:
        if namespace:
            return f"{self.resources}{plural}/{namespace}/{name}"
        return f"{self.resources}{plural}/{name}"

    def parse_resource(self, key: str) -> tuple[str, str | None, str] | None:
        """``(plural, namespace|None, name)`` for a resource key, else None."""
        if not key.startswith(self.resources):
            return None
        parts = key[len(self.resources):].split("/")
        if len(parts) == 2:
            return parts[0], None, parts[1]
        if len(parts) == 3:
            return parts[0], parts[1], parts[2]
        return None

    # -- IPAM --------------------------------------------------------------
    @property
    def ipam(self) -> str:
        return f"{self.prefix}ipam/"

    @property
    def ipam_config(self) -> str:
        return f"{self.ipam}config"

    @property
    def blocks(self) -> str:
        return f"{self.ipam}blocks/"

    def block(self, cidr: str) -> str:
        return f"{self.blocks}{cidr_token(cidr)}"

    @property
    def affinities(self) -> str:
        return f"{self.ipam}affinities/"

    def node_affinities(self, node: str) -> str:
        return f"{self.affinities}{node}/"

    def affinity(self, node: str, cidr: str) -> str:
        return f"{self.affinities}{node}/{cidr_token(cidr)}"

    def parse_affinity(self, key: str) -> tuple[str, str] | None:
        """``(node, cidr)`` for an affinity key, else None."""
        if not key.startswith(self.affinities):
            return None
        parts = key[len(self.affinities):].split("/")
        if len(parts) != 2:
            return None
        return parts[0], token_cidr(parts[1])

    @property
    def handles(self) -> str:
        return f"{self.ipam}handles/"

    def handle(self, handle_id: str) -> str:
        return f"{self.handles}{handle_id}"

    @property
    def sticky_dir(self) -> str:
        return f"{self.ipam}sticky/"

    def sticky(self, sticky_key: str) -> str:
        return f"{self.sticky_dir}{sticky_key.replace('/', '.')}"

    # -- status ------------------------------------------------------------
    @property
    def status(self) -> str:
        return f"{self.prefix}status/"

    def node_status(self, node: str, what: str) -> str:
        return f"{self.status}{node}/{what}"

    @property
    def agent_view_end(self) -> str:
        """Where an agent's feed of the datastore stops (the end of one key range from :attr:`prefix`).

        Every directory an agent reads (``config/``, ``ipam/``, ``resources/``) sorts before ``status/``, and
        ``status/`` holds only the nodes' leased reports, which no agent reads: each node rewrites its own as
        its route counts move, and a feed that included them sent every such write to every agent (and
        rewrote the agent's view cache for it). A new directory that agents must read sorts before it.
        """
        return self.status

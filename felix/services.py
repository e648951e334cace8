"""felix.services: which Service addresses this node announces over BGP (Calico's service advertisement).

Pure. From the ``default`` BGPConfiguration's ``serviceClusterIPs``, ``serviceExternalIPs`` and
``serviceLoadBalancerIPs``, the Services and this node's workload endpoints:

- every configured CIDR is announced by every node;
- a Service with ``externalTrafficPolicy: Local`` has each of its cluster, external and
  LoadBalancer addresses that lies inside a CIDR of its own list announced as a ``/32``
  (``/128``) by the nodes that host one of its endpoints (a local WorkloadEndpoint of the
  Service's namespace whose labels match the Service's ``selector``), so that the fabric sends
  that traffic only to nodes where kube-proxy delivers it locally;
- an address outside the configured CIDRs is never announced (the CIDRs are the operator's list
  of what may be injected into the network).

No kernel route is derived from any of this: kube-proxy DNATs Service traffic before routing. The
configured CIDRs are also what the node must not route by BGP (:func:`is_service_prefix`): other
nodes announce the same prefixes, and a learned route for them would send Service traffic to
another node instead of kube-proxy (Calico's "reject CIDRs").

Both the configuration and the Services are read as the model's typed specs
(:mod:`l3net.model.bgp_specs`, :mod:`l3net.model.service_spec`), never as raw dicts: a Service
built by hand that the model refuses raises its ValidationError instead of being half-read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from l3net.model.bgp_specs import BGPConfigurationSpec
from l3net.model.resource import Resource
from l3net.model.service_spec import service_spec

_log = logging.getLogger(__name__)

__all__ = ["ServiceCIDRs", "is_service_prefix", "service_cidrs", "service_prefixes"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL = "Local"


@dataclass(frozen=True)
class ServiceCIDRs:
    """The three CIDR lists of the ``default`` BGPConfiguration, parsed (empty: feature off)."""

    cluster: tuple[IPNetwork, ...] = ()
    external: tuple[IPNetwork, ...] = ()
    load_balancer: tuple[IPNetwork, ...] = ()

    def all(self) -> tuple[IPNetwork, ...]:
        return self.cluster + self.external + self.load_balancer


def _cidrs(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item) for item in items)   # re-serialised networks: the model parsed them


def service_cidrs(bgp_configuration: BGPConfigurationSpec | None) -> ServiceCIDRs:
    """The service CIDRs of the ``default`` BGPConfiguration's typed spec (None: no such configuration)."""
    if bgp_configuration is None:
        return ServiceCIDRs()
    return ServiceCIDRs(cluster=_cidrs(bgp_configuration.service_cluster_ips),
                        external=_cidrs(bgp_configuration.service_external_ips),
                        load_balancer=_cidrs(bgp_configuration.service_load_balancer_ips))


def _inside(addr: IPAddress, nets: Iterable[IPNetwork]) -> bool:
    return any(addr.version == n.version and addr in n for n in nets)


def _selects(selector: tuple[tuple[str, str], ...], namespace: str | None, endpoint: Resource) -> bool:
    """Kubernetes Service selection: same namespace, every selector label equal; no selector selects nothing."""
    if not selector or endpoint.namespace != namespace:
        return False
    return all(endpoint.labels.get(k) == v for k, v in selector)


def _host_prefix(addr: IPAddress) -> str:
    return str(ipaddress.ip_network(addr))


def service_prefixes(cidrs: ServiceCIDRs, services: Iterable[Resource],
                     local_endpoints: Iterable[Resource]) -> frozenset[str]:
    """Every prefix this node announces for Services (see the module docstring)."""
    out = {str(n) for n in cidrs.all()}
    if not out:
        return frozenset()
    endpoints = list(local_endpoints)
    for svc in services:
        spec = service_spec(svc)
        if spec.external_traffic_policy != LOCAL:
            continue  # Cluster: the CIDR covers it, from every node
        if not any(_selects(spec.selector, svc.namespace, ep) for ep in endpoints):
            continue
        # cluster_ips: clusterIPs, or clusterIP alone (the model's defaulting, as the API server's)
        for addrs, nets in ((spec.cluster_ips, cidrs.cluster), (spec.external_ips, cidrs.external),
                            (spec.load_balancer_ips, cidrs.load_balancer)):
            out.update(_host_prefix(a) for a in addrs if _inside(a, nets))
    return frozenset(out)


def is_service_prefix(prefix: IPNetwork, cidrs: ServiceCIDRs) -> bool:
    """Whether ``prefix`` lies inside a configured service CIDR (a learned route for it is not installed)."""
    return any(prefix.version == n.version and prefix.subnet_of(n) for n in cidrs.all())  # type: ignore[arg-type]

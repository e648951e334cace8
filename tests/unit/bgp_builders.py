"""BGP resources for the bgp unit tests: Node, BGPConfiguration and BGPPeer builders, and a reflector's world
(three clients, two reflectors of one cluster ID and the peering that makes them its clients)."""

from __future__ import annotations

from l3net.model.resource import Resource


def node(name: str, ip: str | None, *, asn: int | None = None, cluster: str | None = None, v6: str | None = None,
         **labels: str) -> Resource:
    bgp: dict[str, object] = {}
    if ip:
        bgp["ipv4Address"] = f"{ip}/24"
    if v6:
        bgp["ipv6Address"] = f"{v6}/64"
    if asn:
        bgp["asNumber"] = asn
    if cluster:
        bgp["routeReflectorClusterID"] = cluster
    return Resource("Node", name, {"bgp": bgp}, labels=labels)


def cfg(**spec: object) -> Resource:
    return Resource("BGPConfiguration", "default", dict(spec))


def peer(name: str, **spec: object) -> Resource:
    return Resource("BGPPeer", name, dict(spec))


# A reflector's world: clients n1..n3, reflectors rr1 and rr2 (label rr, one cluster ID), every node peering
# with the reflectors.
CLIENTS = [node("n1", "10.0.0.11"), node("n2", "10.0.0.12"), node("n3", "10.0.0.13")]
RRS = [node("rr1", "10.0.0.2", cluster="224.0.0.1", rr="true"), node("rr2", "10.0.0.3", cluster="224.0.0.1", rr="true")]
TO_RR = peer("to-rr", nodeSelector="all()", peerSelector="has(rr)")

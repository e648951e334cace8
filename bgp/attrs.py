"""bgp.attrs: the one path-attributes type of l3net's BGP code.

:class:`PathAttrs` is what a route carries besides its prefix and next hop: what the RIB stores
for a received path (:mod:`bgp.events` parses it from ExaBGP's JSON) and, through
:class:`bgp.commands.Advertisement` (a ``PathAttrs`` plus the next hop to announce), what the
speaker announces. A reflected route is the received ``PathAttrs`` with ORIGINATOR_ID and
CLUSTER_LIST updated (:func:`bgp.reflector.reflected_advertisement`). Pure values, frozen.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PathAttrs:
    """The path attributes l3net uses (best path, reflection, communities)."""

    origin: str = "igp"
    as_path: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()

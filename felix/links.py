"""felix.links: this node's network interfaces as observed.

The interfaces driver reads them and the calculation consumes them.

A module of its own so the two share the type without the driver importing the calculation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A network interface of this node as netlink reports it."""

    name: str
    index: int
    up: bool

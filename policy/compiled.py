"""policy.compiled: what one policy compiles to, as a value the index keeps and the renderer reads.

Owns the shapes shared by :mod:`policy.compiler` (which makes them from a policy document),
:mod:`policy.index` (which keeps them, orders them and selects endpoints for them) and
:mod:`policy.render` (which turns them into chains): a :class:`CompiledPolicy`, the set specs its
rules reference, and the atoms of the Kubernetes tier. Values only: nothing here reads a document
or writes a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l3net.model import Resource
from l3net.model.selectors import Selector

__all__ = ["Atom", "CompiledPolicy", "PolicyKey", "SetSpec", "policy_key"]

SetSpec = tuple[Any, ...]  # ("sel", Selector) | ("net", frozenset[str]) | ("named", proto, name)
# An atom of the Kubernetes tier: (peer kind, peer, protocol, port). Peer kind "s" is a selector set's name,
# "n" a network in ipset's spelling; protocol "" and port 0 stand for every protocol and port.
Atom = tuple[str, str, str, int]
PolicyKey = tuple[str, str, str]  # (kind, namespace or "", name)


def policy_key(pol: Resource) -> PolicyKey:
    """The identity of a policy across compiles: its kind, namespace and name."""
    return (pol.kind, pol.namespace or "", pol.name)


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy that compiled: which endpoints it applies to, its hashed chains, and the sets they reference.

    ``is_global``: a GlobalNetworkPolicy; ``tiered``: in the Calico tier (either Calico kind).
    """

    key: PolicyKey
    resource: Resource
    is_global: bool
    sort_key: tuple[Any, ...]
    types: tuple[str, ...]
    applies: Selector
    chains: dict[str, tuple[str, list[str]]]  # direction -> (chain name, hashed rules)
    sets: dict[str, SetSpec]  # every set it needs kept up to date (its chains' and its atoms' selectors)
    tiered: bool = False
    # A NetworkPolicy's set-lookup part: direction -> atoms (see policy.compiler); its chain holds the rest and
    # is jumped to only for the directions in ``residual`` (where that rest is not empty).
    atoms: dict[str, tuple[Atom, ...]] = field(default_factory=dict)
    residual: frozenset[str] = frozenset()
    chain_sets: frozenset[str] = frozenset()  # the sets its chains' rules name (emitted with the chains)

"""l3net.model.bgpfilter_spec: the typed spec of a BGPFilter, the rules that decide which routes a peer gets.

The model validates a BGPFilter once (:mod:`l3net.model.validate.bgp`): four rule lists (``exportV4``,
``importV4``, ``exportV6``, ``importV6``), each rule an ``action`` (Accept or Reject), an optional ``cidr`` of
the list's family with no host bits, its ``matchOperator`` (Equal, NotEqual, In, NotIn; with ``cidr`` only)
and an optional ``prefixLength`` range (``min`` <= ``max``, within the family's bits). This module turns that
validated spec into a frozen value, every ``cidr`` an ``ip_network`` object; ``bgp.policy`` compiles its
rules from it and parses nothing itself.

Strict, unlike the other BGP kinds' edge (:func:`l3net.model.bgp_specs.checked`, which leaves a refused
field out and keeps the rest): a rule list without its refused rule would let through what that rule
rejected, so a hand-built BGPFilter the model refuses has no typed spec at all (the model's own
:class:`~l3net.errors.ValidationError`), and ``bgp.view`` treats it as a filter that rejects everything.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once

__all__ = ["BGPFilterRule", "BGPFilterSpec", "PrefixLength", "bgpfilter_spec"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PrefixLength:
    """A rule's bounds on the route's prefix length, inclusive (None: no bound on that side)."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class BGPFilterRule:
    """One rule: ``cidr`` with its ``match_operator`` (both None: any prefix), a prefix-length range, an action."""

    action: str                          # Accept | Reject
    cidr: IPNetwork | None = None
    match_operator: str | None = None    # Equal | NotEqual | In | NotIn
    prefix_length: PrefixLength = PrefixLength()


@dataclass(frozen=True, slots=True)
class BGPFilterSpec:
    """A BGPFilter's spec as the model validated it: the rules of each direction and family, in order
    (``()`` when absent)."""

    export_v4: tuple[BGPFilterRule, ...] = ()
    import_v4: tuple[BGPFilterRule, ...] = ()
    export_v6: tuple[BGPFilterRule, ...] = ()
    import_v6: tuple[BGPFilterRule, ...] = ()

    def rules(self, direction: str, version: int) -> tuple[BGPFilterRule, ...]:
        """The rules for ``direction`` (``import``/``export``) and IP ``version`` (4/6)."""
        return {("export", 4): self.export_v4, ("import", 4): self.import_v4,
                ("export", 6): self.export_v6, ("import", 6): self.import_v6}[(direction, version)]


def bgpfilter_spec(res: Resource) -> BGPFilterSpec:
    """The typed spec of a BGPFilter, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "BGPFilter", _convert)


def _rule(rule: Mapping[str, Any]) -> BGPFilterRule:
    cidr = rule.get("cidr")
    plen = rule.get("prefixLength") or {}
    return BGPFilterRule(action=rule["action"], cidr=None if cidr is None else ipaddress.ip_network(cidr),
                         match_operator=rule.get("matchOperator"),
                         prefix_length=PrefixLength(plen.get("min"), plen.get("max")))


def _convert(spec: Mapping[str, Any]) -> BGPFilterSpec:
    def rules(key: str) -> tuple[BGPFilterRule, ...]:
        return tuple(_rule(r) for r in spec.get(key) or ())

    return BGPFilterSpec(export_v4=rules("exportV4"), import_v4=rules("importV4"), export_v6=rules("exportV6"),
                         import_v6=rules("importV6"))

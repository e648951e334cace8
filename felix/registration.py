"""felix.registration: the agent's own records in the datastore.

- :func:`register_node` creates or updates this node's Node resource
  (``spec.bgp.ipv4Address`` and, when configured, ``asNumber``) with
  compare-and-swap, keeping every other field as it is;
- :func:`ensure_default_pool` creates an IPPool only when asked to and none exists.

Its status record is :class:`l3net.nodestatus.StatusPublisher`'s (shared with the route reflector).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from l3net.datastore.base import Datastore
from l3net.errors import Conflict, ValidationError
from l3net.keys import KeyLayout
from l3net.model.client import AlreadyExists, ResourceClient
from l3net.model.decode import Invalid, decode
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

_log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 10


def register_node(ds: Datastore, keys: KeyLayout, node: str, ipv4: str | None, asn: int | None) -> Resource:
    """Create or update ``Node/<node>``; raises Conflict after repeated lost races, DatastoreError if down."""
    key = keys.resource("nodes", node)
    for _ in range(_CAS_ATTEMPTS):
        kv = ds.get(key)
        if kv is None:
            bgp: dict[str, Any] = {}
            if ipv4:
                bgp["ipv4Address"] = ipv4
            if asn:
                bgp["asNumber"] = asn
            res = Resource(kind="Node", name=node, spec={"bgp": bgp} if bgp else {})
            try:
                ds.create(key, res.to_json())
            except Conflict:
                continue
            _log.info("node registered node=%s ipv4=%s asn=%s", node, ipv4, asn)
            return res
        old = decode(keys, key, kv.value, kv.mod_revision)   # total: anything stored there is Invalid at worst
        if isinstance(old, Invalid):
            # Someone stored garbage under our own Node key: replace it (CAS keeps this safe).
            _log.warning("own Node resource is invalid, rewriting it key=%s error=%s", key, old)
            old = Resource(kind="Node", name=node)
        # A round trip of the stored document, not a reading of it: only the two fields this agent owns are
        # set, and every other one goes back as written (an AS-dot asNumber, an operator's ipv6Address or
        # routeReflectorClusterID), which the typed NodeBGP would re-serialise. Nothing here is interpreted;
        # whoever reads the Node reads it through l3net.model.bgp_specs.
        spec = json.loads(json.dumps(old.spec))
        bgp = dict(spec.get("bgp") or {})
        if ipv4:
            bgp["ipv4Address"] = ipv4
        if asn:
            bgp["asNumber"] = asn
        if bgp:
            spec["bgp"] = bgp
        if spec == old.spec:
            _log.info("node registration unchanged node=%s ipv4=%s", node, ipv4)
            return old
        new = Resource(kind="Node", name=node, spec=spec, labels=old.labels, annotations=old.annotations,
                       extra_metadata=old.extra_metadata)
        try:
            ds.update(key, new.to_json(), kv.mod_revision)
        except Conflict:
            continue
        _log.info("node registration updated node=%s ipv4=%s asn=%s", node, ipv4, asn)
        return new
    raise Conflict(f"Node/{node}: lost {_CAS_ATTEMPTS} compare-and-swap races in a row")


def ensure_default_pool(ds: Datastore, keys: KeyLayout, cidr: str, name: str = "default-ipv4-ippool") -> bool:
    """Create IPPool ``name`` with ``cidr`` if no IPPool exists; True if this call created it.

    Goes through the resource client, so the pool is validated and its overlap check is
    guarded in the same transaction as any concurrent ``l3netctl apply`` of a pool.
    """
    client = ResourceClient(ds, keys)
    if client.list("IPPool"):
        return False
    res = resource_from_document({"apiVersion": "l3net.io/v1", "kind": "IPPool", "metadata": {"name": name},
                                  "spec": {"cidr": cidr}}, source="--default-ipv4-pool")
    try:
        client.create([res])
    except (AlreadyExists, ValidationError) as exc:
        # Someone else created a pool meanwhile: theirs stands, ours is not needed.
        _log.info("default IPv4 pool not created cidr=%s reason=%s", cidr, exc)
        return False
    _log.info("default IPv4 pool created cidr=%s", cidr)
    return True

"""felix.registration: the agent's own records in the datastore.

- :func:`register_node` creates or updates this node's Node resource
  (``spec.bgp.ipv4Address`` and, when configured, ``asNumber``) with
  compare-and-swap, keeping every other field as it is;
- :func:`ensure_default_pool` creates an IPPool only when asked to and none exists;
- :class:`StatusPublisher` keeps ``status/<node>/agent`` current under a lease,
  so the key vanishes when the agent dies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from l3net.datastore.base import Datastore
from l3net.errors import Conflict, DatastoreError, ValidationError
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


class StatusPublisher:
    """Keeps ``status/<node>/<component>`` (JSON; ``agent`` or ``reflector``) under a lease of ``ttl`` seconds,
    on its own thread.

    :meth:`update` is safe from any thread. Datastore outages are logged and retried;
    the lease is re-granted when it was lost. Never raises into the caller: any
    other exception is a bug and ends the thread, handed to ``on_fatal`` (given to
    :meth:`start`; the agent dies with it) or, without one, raised in the thread.
    """

    def __init__(self, ds: Datastore, keys: KeyLayout, node: str, ttl: int = 30, component: str = "agent") -> None:
        self.ds = ds
        self.key = keys.node_status(node, component)
        self.ttl = max(5, ttl)
        self._status: dict[str, Any] = {"node": node}
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lease: Any = None
        self._extra: dict[str, bytes] = {}
        self._thread = threading.Thread(target=self._run_guarded, name="l3net-status", daemon=True)
        self._on_fatal: Callable[[BaseException], None] | None = None

    def start(self, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        """Start the thread; ``on_fatal(exc)`` is called (from that thread) if it dies of a bug."""
        self._on_fatal = on_fatal
        self._dirty.set()
        self._thread.start()

    def update(self, **fields: Any) -> None:
        with self._lock:
            if all(self._status.get(k) == v for k, v in fields.items()):
                return
            self._status.update(fields)
        self._dirty.set()

    def put_extra(self, key: str, value: bytes) -> None:
        """Keep another key (e.g. the BGP peer table) under the same lease; safe from any thread."""
        with self._lock:
            if self._extra.get(key) == value:
                return
            self._extra[key] = value
        self._dirty.set()

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug, not an outage: the agent must not run on without its status
            _log.critical("status publisher thread died key=%s", self.key, exc_info=True)
            if self._on_fatal is None:
                raise
            self._on_fatal(exc)

    def _run(self) -> None:
        refresh_every = self.ttl / 3
        last_refresh = 0.0
        while not self._stop.is_set():
            self._dirty.wait(timeout=refresh_every)
            if self._stop.is_set():
                break
            try:
                if self._lease is None:
                    self._lease = self.ds.grant_lease(self.ttl)
                    self._dirty.set()
                    last_refresh = time.monotonic()
                elif time.monotonic() - last_refresh >= refresh_every:
                    self._lease.refresh()
                    last_refresh = time.monotonic()
                if self._dirty.is_set():
                    self._dirty.clear()
                    with self._lock:
                        body = dict(self._status, updated=time.time())
                        extra = dict(self._extra)
                    self.ds.put(self.key, json.dumps(body, sort_keys=True).encode(), lease=self._lease.id)
                    for key, value in extra.items():
                        self.ds.put(key, value, lease=self._lease.id)
            except (DatastoreError, OSError, ValueError) as exc:
                _log.info("agent status not published (will retry) error=%s", exc)
                self._lease = None
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._lease is not None:
            try:
                self._lease.revoke()
            except (DatastoreError, OSError) as exc:
                _log.debug("lease revoke failed error=%s", exc)

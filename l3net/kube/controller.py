"""The kube-controller: keeps the l3net datastore equal to the Kubernetes API.

Inputs are one :class:`~l3net.kube.reflector.Reflector` per kind (Namespaces,
ServiceAccounts, Pods, NetworkPolicies, Nodes, Services) feeding an in-memory copy of the
cluster. Changes mark keys dirty; one worker thread reconciles dirty keys, and
after every full list (start, relist on 410) and every ``resync_interval`` it
reconciles everything and removes what it owns that the cluster no longer has.
It writes only where the stored value differs (a resync of equal state makes
zero writes, counted in ``writes``) and only objects carrying its mark
(:data:`l3net.kube.translate.MARK`); WorkloadEndpoints are the CNI plugin's: the
controller updates their labels, ports and service account, never creates them.

A deleted Node releases that node's IPAM (its handles' addresses, its block
affinities) and removes its WorkloadEndpoints, as Calico's kube-controllers do.
Nodes the controller has seen are recorded under ``<prefix>kubecontroller/nodes/``
so a Node deleted while no controller ran is released at the next start.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import replace as dc_replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from l3net.datastore.base import Datastore
from l3net.errors import Conflict, DatastoreError, ValidationError
from l3net.ipam import IPAM
from l3net.ipam.allocator import IPAMError
from l3net.keys import KeyLayout
from l3net.kube import translate
from l3net.kube.api import KubeAPI
from l3net.kube.reflector import Reflector
from l3net.model.client import NotFound, ResourceClient
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document
from l3net.model.workload_spec import workload_spec

_log = logging.getLogger(__name__)

__all__ = ["KINDS", "REGISTRY", "KubeController"]

# The controller's own registry (served by `l3net kube-controller --metrics-port`), not the agent's.
REGISTRY = CollectorRegistry(auto_describe=True)
WRITES = Counter("l3net_kube_controller_writes", "Datastore writes by the kube-controller, by kind.", ["kind"],
                 registry=REGISTRY)
RELISTS = Counter("l3net_kube_controller_relists", "Full lists after 410 Gone, all kinds.", registry=REGISTRY)
ERRORS = Counter("l3net_kube_controller_errors", "Reconciliations that failed and were retried.",
                 registry=REGISTRY)
SKIPPED = Counter("l3net_kube_controller_skipped", "Objects left alone: refused by validation (invalid) or "
                  "not written by the controller (foreign).", ["reason", "kind"], registry=REGISTRY)

KINDS = ("Namespace", "ServiceAccount", "Pod", "NetworkPolicy", "Node", "Service")
# Kinds mirrored one to one into marked datastore objects (created, updated, deleted with the cluster's).
_MIRRORED = {"Namespace": translate.namespace_doc, "NetworkPolicy": translate.policy_doc,
             "Service": translate.service_doc}

Key = tuple[str, str, str]  # (kind, namespace or "", name)


def _key(kind: str, obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")


class KubeController:
    """Owns the marked datastore objects mirrored from one cluster, plus the endpoint fields it sets.

    Idempotent and level-triggered. Threads: one per reflector (feeding ``replace``/``event``
    under a lock) and one worker that does every datastore write. Datastore outages and CAS
    conflicts requeue the key with backoff; an object that l3net's validation refuses is
    logged, counted in ``invalid`` and left as stored. Never raises out of its threads.
    """

    def __init__(self, api: KubeAPI, ds: Datastore, keys: KeyLayout, *, resync_interval: float = 300.0,
                 page_size: int = 500, watch_timeout: int = 300, retry_interval: float = 1.0):
        self.api = api
        self.ds = ds
        self.keys = keys
        self.client = ResourceClient(ds, keys)
        self.ipam = IPAM(ds, keys)
        self.resync_interval = resync_interval
        self.retry_interval = retry_interval
        self.node_records = f"{keys.prefix}kubecontroller/nodes/"
        self._lock = threading.Condition()
        self._objs: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._dirty: set[Key] = set()
        self._full: set[str] = set()
        self._stop = threading.Event()
        self.writes: collections.Counter[str] = collections.Counter()
        self.invalid: collections.Counter[str] = collections.Counter()
        self.foreign: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.passes = 0
        self.reflectors = {k: Reflector(api, k, self, page_size=page_size, watch_timeout=watch_timeout,
                                        on_gone=RELISTS.inc)
                           for k in KINDS}
        self._worker = threading.Thread(target=self._run, name="kube-controller", daemon=True)
        self._idle = threading.Event()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> KubeController:
        for r in self.reflectors.values():
            r.start()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for r in self.reflectors.values():
            r.stop()
        with self._lock:
            self._lock.notify_all()
        self._worker.join(timeout=10)

    @property
    def in_sync(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors.values())

    def wait_idle(self, timeout: float) -> bool:
        """True once every reflector has listed and no key is waiting (for tests and readiness)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = bool(self._dirty or self._full) or not self.in_sync or not self._idle.is_set()
            if not busy:
                return True
            time.sleep(0.05)
        return False

    # -- Sink (reflector threads) ---------------------------------------------------
    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            old = self._objs[kind]
            new = {(k[1], k[2]): o for o in items for k in [_key(kind, o)]}
            self._objs[kind] = new
            for ns, name in set(old) | set(new):
                if old.get((ns, name)) != new.get((ns, name)):
                    self._mark(kind, ns, name, old.get((ns, name)), new.get((ns, name)))
            self._full.add(kind)
            self._idle.clear()
            self._lock.notify_all()

    def event(self, kind: str, etype: str, obj: dict[str, Any]) -> None:
        _, ns, name = _key(kind, obj)
        with self._lock:
            prev = self._objs[kind].get((ns, name))
            if etype == "DELETED":
                self._objs[kind].pop((ns, name), None)
                cur = None
            else:
                self._objs[kind][(ns, name)] = obj
                cur = obj
            self._mark(kind, ns, name, prev, cur)
            self._idle.clear()
            self._lock.notify_all()

    def _mark(self, kind: str, ns: str, name: str, prev: Any, cur: Any) -> None:
        """Mark what depends on one object (caller holds the lock)."""
        self._dirty.add((kind, ns, name))
        if kind == "ServiceAccount":
            for (pns, pname), pod in self._objs["Pod"].items():
                if pns == ns and translate.pod_service_account(pod) == name:
                    self._dirty.add(("Pod", pns, pname))

    # -- worker ---------------------------------------------------------------------
    def _run(self) -> None:
        next_resync = time.monotonic() + self.resync_interval
        while not self._stop.is_set():
            with self._lock:
                if not self._dirty and not self._full:
                    self._idle.set()
                    self._lock.wait(timeout=max(0.0, min(1.0, next_resync - time.monotonic())))
                if time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + self.resync_interval
                    self._full.update(KINDS)
                    for kind in KINDS:
                        self._dirty.update((kind, ns, name) for ns, name in self._objs[kind])
                if not self.in_sync or self._stop.is_set():
                    continue  # never write (or collect garbage) from a partial view
                dirty, self._dirty = sorted(self._dirty, key=lambda k: KINDS.index(k[0])), set()
                full, self._full = set(self._full), set()
                objs = {k: dict(v) for k, v in self._objs.items()}
            if not dirty and not full:
                continue
            before = sum(self.writes.values())
            failed = self._pass(dirty, full, objs)
            if full:
                # one line per full reconciliation: how a restart or a relist is seen to cause no churn
                _log.info("reconciled kinds=%s keys=%d writes=%d failed=%d", ",".join(sorted(full)), len(dirty),
                          sum(self.writes.values()) - before, len(failed))
            if failed:
                with self._lock:
                    self._dirty.update(k for k in failed if isinstance(k, tuple))
                    self._full.update(k for k in failed if isinstance(k, str))
                self._stop.wait(self.retry_interval)

    def _wrote(self, kind: str) -> None:
        self.writes[kind] += 1
        WRITES.labels(kind).inc()

    def _pass(self, dirty: list[Key], full: set[str], objs: dict[str, dict[tuple[str, str], Any]]) -> list[Any]:
        self.passes += 1
        failed: list[Any] = []
        for key in dirty:
            try:
                self._reconcile(key, objs)
            except (DatastoreError, Conflict, IPAMError) as exc:
                self.errors += 1
                ERRORS.inc()
                _log.warning("reconcile failed, will retry kind=%s key=%s/%s: %s", key[0], key[1], key[2], exc)
                failed.append(key)
        for kind in sorted(full, key=KINDS.index):
            try:
                self._collect(kind, objs)
            except (DatastoreError, Conflict, IPAMError) as exc:
                self.errors += 1
                _log.warning("garbage collection failed, will retry kind=%s: %s", kind, exc)
                failed.append(kind)
        return failed

    def _reconcile(self, key: Key, objs: dict[str, dict[tuple[str, str], Any]]) -> None:
        kind, ns, name = key
        obj = objs[kind].get((ns, name))
        if kind in _MIRRORED:
            self._sync_owned(kind, name, ns or None, _MIRRORED[kind](obj) if obj else None)
        elif kind == "Pod" and obj is not None:
            self._sync_endpoints(obj, objs["ServiceAccount"].get((ns, translate.pod_service_account(obj))))
        elif kind == "Node":
            self._sync_node(name, obj)

    # -- owned resources ------------------------------------------------------------
    def _sync_owned(self, kind: str, name: str, ns: str | None, doc: dict[str, Any] | None) -> None:
        current = self._get(kind, name, ns)
        if current is not None and not translate.is_marked(current.annotations):
            if doc is not None:
                self.foreign[kind] += 1
                SKIPPED.labels("foreign", kind).inc()
                _log.info("not touching %s: it was not written by the kube-controller", current.ref)
            return
        if doc is None:
            if current is not None:
                try:
                    self.client.delete([current])
                except NotFound:
                    return
                self._wrote(kind)
                _log.info("deleted %s (gone from the cluster)", current.ref)
            return
        try:
            desired = resource_from_document(doc, f"kubernetes {kind}")
        except ValidationError as exc:
            self.invalid[kind] += 1
            SKIPPED.labels("invalid", kind).inc()
            _log.warning("skipping %s/%s%s: l3net refuses it (stored version kept): %s", kind,
                         f"{ns}/" if ns else "", name, exc)
            return
        # Raw on purpose: the document translated from the Kubernetes API against the stored one, both as the
        # model validated them, so that the controller writes exactly when what it would store differs.
        if current is not None and (current.labels, current.annotations, current.spec) == \
                (desired.labels, desired.annotations, desired.spec):
            return
        if current is not None:
            desired = dc_replace(desired, resource_version=current.resource_version)
        self.client.apply([desired])
        self._wrote(kind)
        _log.info("wrote %s", desired.ref)

    def _get(self, kind: str, name: str, ns: str | None) -> Resource | None:
        try:
            return self.client.get(kind, name, ns)
        except ValidationError as exc:
            # A stored value that does not decode is not ours to repair.
            self.invalid[kind] += 1
            _log.warning("stored %s %s does not decode; leaving it: %s", kind, name, exc)
            return None

    def _collect(self, kind: str, objs: dict[str, dict[tuple[str, str], Any]]) -> None:
        """Delete what the controller owns that the cluster no longer has (after a full list)."""
        if kind in _MIRRORED:
            for res in self.client.list(kind):
                if translate.is_marked(res.annotations) and (res.namespace or "", res.name) not in objs[kind]:
                    self._sync_owned(kind, res.name, res.namespace, None)
        elif kind == "Node":
            kvs, _ = self.ds.list(self.node_records)
            for kv in kvs:
                name = kv.key[len(self.node_records):]
                if ("", name) not in objs["Node"]:
                    self._sync_node(name, None)

    # -- workload endpoints ---------------------------------------------------------
    def _endpoints_of(self, ns: str, pod: str | None = None, node: str | None = None) -> list[Resource]:
        out = []
        for res in self.client.list("WorkloadEndpoint", ns or None):
            spec = workload_spec(res)
            if spec.orchestrator != "k8s":
                continue
            if (pod is None or spec.pod == pod) and (node is None or spec.node == node):
                out.append(res)
        return out

    def _sync_endpoints(self, pod: dict[str, Any], sa: dict[str, Any] | None) -> None:
        meta = pod.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        labels, ports, sa_name = translate.endpoint_fields(pod, sa)
        for wep in self._endpoints_of(ns, pod=name):
            # Raw on purpose: the stored document is edited and written back, so the fields written are compared
            # as stored (a typed view folds the TCP default: a stored list that differs would never be rewritten).
            spec = dict(wep.spec)
            if wep.labels == labels and (spec.get("ports") or []) == ports and \
                    spec.get("serviceAccountName") == sa_name:
                continue
            spec["ports"] = ports
            spec["serviceAccountName"] = sa_name
            if not ports:
                spec.pop("ports")
            try:
                self.client.apply([dc_replace(wep, labels=labels, spec=spec)])
            except ValidationError as exc:
                self.invalid["Pod"] += 1
                _log.warning("pod %s/%s: its labels or ports are refused for %s: %s", ns, name, wep.ref, exc)
                continue
            self._wrote("WorkloadEndpoint")
            _log.info("updated %s from pod %s/%s", wep.ref, ns, name)

    # -- nodes ----------------------------------------------------------------------
    def _sync_node(self, name: str, node: dict[str, Any] | None) -> None:
        record = f"{self.node_records}{name}"
        if node is not None:
            if self.ds.get(record) is None:
                self.ds.put(record, json.dumps({"node": name}).encode())
                self._wrote("NodeRecord")
            self._sync_owned("Node", name, None, translate.node_doc(node))
            return
        if self.ds.get(record) is None:
            return  # never a Kubernetes node we saw: not ours to release
        released = self._release_node(name)
        self._sync_owned("Node", name, None, None)
        self.ds.delete(record)
        self._wrote("NodeRecord")
        _log.info("node deleted from the cluster; released node=%s addresses=%d", name, released)

    def _release_node(self, node: str) -> int:
        handles = set()
        for block in self.ipam.blocks():
            for _ip, handle, attrs in block.allocated():
                if handle and attrs.get("node") == node:
                    handles.add(handle)
        freed = 0
        for handle in sorted(handles):
            freed += len(self.ipam.release_handle(handle))
            self._wrote("IPAMHandle")
        if self.ipam.release_node(node):
            self._wrote("IPAMAffinity")
        for wep in self._endpoints_of("", node=node):
            try:
                self.client.delete([wep])
            except NotFound:
                continue
            self._wrote("WorkloadEndpoint")
        return freed

    def stats(self) -> dict[str, Any]:
        return {"writes": dict(self.writes), "invalid": dict(self.invalid), "foreign": dict(self.foreign),
                "errors": self.errors, "passes": self.passes,
                "relists_gone": sum(r.relists_gone for r in self.reflectors.values()),
                "lists": sum(r.lists for r in self.reflectors.values())}

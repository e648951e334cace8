"""The object store of the lab's Kubernetes API stand-in: objects, resourceVersions, the event window.

One counter numbers every change (the cluster-wide ``resourceVersion``, like
etcd's revision under a kube-apiserver). Every change is kept as an event with
the object before and after, in a bounded window: a watch can resume from any
version inside the window, and a list continues at the exact snapshot of its
first page (the window is undone back to it). A version older than the window is
``410 Gone``. Thread-safe (one lock and condition); no I/O.
"""

from __future__ import annotations

import base64
import binascii
import collections
import copy
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from l3net.lab.kubeapi.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from l3net.lab.kubeapi.selectors import SelectorError, field_selector, label_selector

_log = logging.getLogger(__name__)

__all__ = ["RESOURCES", "ApiError", "Event", "ResourceType", "Store"]

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",), True),
    ResourceType("", "v1", "Pod", "pods", True, ("po",), True),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), True),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    ResourceType("", "v1", "Service", "services", True, ("svc",), True),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
    # Stored as they are (no controllers run): so that deploy/ applies to the stand-in as to a cluster.
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), True),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",), True),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
)


class ApiError(Exception):
    """An API failure with its HTTP code and Kubernetes ``reason`` (rendered as a ``Status``)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    key: tuple[str, str]  # (namespace or "", name)
    obj: dict[str, Any]
    prev: dict[str, Any] | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_labels(labels: Any, field: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise ApiError(422, "Invalid", f"{field}: must be a map of strings")
    for k, v in labels.items():
        name = k.rsplit("/", 1)[-1]
        if not isinstance(k, str) or not _LABEL_NAME_RE.match(name):
            raise ApiError(422, "Invalid", f"{field}: invalid label key {k!r}")
        if not isinstance(v, str) or not _LABEL_VALUE_RE.match(v):
            raise ApiError(422, "Invalid", f"{field}: invalid label value {v!r} for key {k!r}")


def _watch_event(ev: Event, rt: ResourceType, namespace: str, match: Any) -> dict[str, Any] | None:
    """What a watch of ``rt`` in ``namespace`` through ``match`` sees of ``ev``; None when it sees nothing."""
    if ev.plural != rt.plural or (namespace and ev.key[0] != namespace):
        return None
    now_in = ev.type != "DELETED" and match(ev.obj)
    was_in = ev.prev is not None and match(ev.prev)
    if ev.type == "DELETED":
        return {"type": "DELETED", "object": copy.deepcopy(ev.obj)} if was_in else None
    if now_in:
        return {"type": "MODIFIED" if was_in else "ADDED", "object": copy.deepcopy(ev.obj)}
    if was_in:
        # left the selection: the API server reports it as deleted for this watch
        return {"type": "DELETED", "object": copy.deepcopy(ev.obj)}
    return None


class Store:
    """Owns every object of the stand-in and its change history.

    Idempotence is the caller's: every successful write is one new resourceVersion.
    Runs on the HTTP server's request threads; watchers block on the condition.
    """

    def __init__(self, window: int = 2000):
        self._cond = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r.plural: {} for r in RESOURCES}
        self._events: collections.deque[Event] = collections.deque()
        self._window = window
        self._rv = 1
        self._oldest = 1  # events after this version are all kept; below it is 410 Gone
        self._cut = 0  # bumped by expire(): open watches end with 410
        for ns in ("default", "kube-system"):
            self.create(self.rtype("namespaces"), "", {"metadata": {"name": ns}})

    # -- lookup --------------------------------------------------------------------
    @staticmethod
    def rtype(plural: str) -> ResourceType:
        for r in RESOURCES:
            if r.plural == plural:
                return r
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {plural!r}")

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    # -- writes --------------------------------------------------------------------
    def _record(self, etype: str, rt: ResourceType, key: tuple[str, str], obj: dict[str, Any],
                prev: dict[str, Any] | None) -> None:
        self._events.append(Event(self._rv, etype, rt.plural, key, obj, prev))
        while len(self._events) > self._window:
            self._oldest = self._events.popleft().rv
        self._cond.notify_all()

    def _next(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _key(self, rt: ResourceType, namespace: str, name: str) -> tuple[str, str]:
        if rt.namespaced and not namespace:
            raise ApiError(400, "BadRequest", f"{rt.plural} are namespaced: a namespace is required")
        return (namespace if rt.namespaced else "", name)

    def _check(self, rt: ResourceType, obj: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(obj)
        if obj.get("kind", rt.kind) != rt.kind or obj.get("apiVersion", rt.api_version) != rt.api_version:
            raise ApiError(400, "BadRequest", f"kind/apiVersion {obj.get('apiVersion')}/{obj.get('kind')} sent "
                           f"to the {rt.plural} endpoint (expects {rt.api_version}/{rt.kind})")
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata: must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "BadRequest", f"metadata.namespace {meta.get('namespace')!r} does not match "
                               f"the request's namespace {namespace!r}")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        _check_labels(meta.get("labels"), "metadata.labels")
        if meta.get("annotations") is not None and not isinstance(meta.get("annotations"), dict):
            raise ApiError(422, "Invalid", "metadata.annotations: must be a map of strings")
        return obj

    def create(self, rt: ResourceType, namespace: str, body: Any, dry_run: bool = False) -> dict[str, Any]:
        obj = self._check(rt, body, namespace)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        name = meta.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ApiError(422, "Invalid", f"metadata.name: {name!r} is not a valid DNS subdomain name")
        key = self._key(rt, namespace, name)
        with self._cond:
            if rt.namespaced and ("", namespace) not in self._objects["namespaces"]:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                               {"name": namespace, "kind": "namespaces"})
            if key in self._objects[rt.plural]:
                raise ApiError(409, "AlreadyExists", f'{rt.plural} "{name}" already exists',
                               {"name": name, "kind": rt.plural})
            for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp"):
                meta.pop(k, None)
            self._defaults(rt, obj)
            if dry_run:
                return obj
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=self._next())
            self._objects[rt.plural][key] = obj
            self._record("ADDED", rt, key, obj, None)
            if rt.plural == "namespaces":
                self._create_default_sa(name)
            return copy.deepcopy(obj)

    def _create_default_sa(self, namespace: str) -> None:
        sa = {"kind": "ServiceAccount", "apiVersion": "v1",
              "metadata": {"name": "default", "namespace": namespace, "uid": str(uuid.uuid4()),
                           "creationTimestamp": _now(), "resourceVersion": self._next()}}
        self._objects["serviceaccounts"][(namespace, "default")] = sa
        self._record("ADDED", self.rtype("serviceaccounts"), (namespace, "default"), sa, None)

    @staticmethod
    def _defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
        """The defaults the clients of the stand-in read (a real API server defaults far more)."""
        meta = obj["metadata"]
        if rt.plural == "namespaces":
            # Kubernetes sets this immutable label on every namespace (1.21+); policies select on it.
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj.setdefault("status", {"phase": "Active"})
        elif rt.plural == "pods":
            spec = obj.setdefault("spec", {})
            if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
                raise ApiError(422, "Invalid", "spec.containers: Required value")
            # The deprecated serviceAccount is an alias the API server keeps equal to serviceAccountName
            # (either one given fills the other; neither: default).
            name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
            spec["serviceAccountName"] = spec["serviceAccount"] = name
            obj.setdefault("status", {"phase": "Pending"})

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            obj = self._objects[rt.plural].get(self._key(rt, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', {"name": name, "kind": rt.plural})
            return copy.deepcopy(obj)

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, subresource: str = "",
               dry_run: bool = False) -> dict[str, Any]:
        obj = self._check(rt, body, namespace)
        if obj["metadata"].get("name") not in (None, name):
            raise ApiError(400, "BadRequest", f"metadata.name {obj['metadata'].get('name')!r} does not match {name!r}")
        key = self._key(rt, namespace, name)
        with self._cond:
            cur = self._objects[rt.plural].get(key)
            if cur is None:
                raise ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', {"name": name, "kind": rt.plural})
            want = obj["metadata"].get("resourceVersion")
            if want not in (None, "") and str(want) != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again",
                               {"name": name, "kind": rt.plural})
            return self._replace(rt, key, cur, obj, subresource, dry_run)

    def _replace(self, rt: ResourceType, key: tuple[str, str], cur: dict[str, Any], obj: dict[str, Any],
                 subresource: str, dry_run: bool) -> dict[str, Any]:
        new = copy.deepcopy(cur) if subresource == "status" else obj
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        elif rt.status:
            new["status"] = copy.deepcopy(cur.get("status", {}))  # status moves only through /status
        meta = new["metadata"]
        meta["name"] = cur["metadata"]["name"]
        for k in ("uid", "creationTimestamp"):
            meta[k] = cur["metadata"][k]
        if rt.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = key[1]
        if rt.plural == "pods":
            self._check_pod_update(cur, new)
        meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
        _check_labels(meta.get("labels"), "metadata.labels")
        if new == cur:
            return copy.deepcopy(cur)  # a no-op write makes no new version, like the real API server
        if dry_run:
            return new
        meta["resourceVersion"] = self._next()
        self._objects[rt.plural][key] = new
        self._record("MODIFIED", rt, key, new, cur)
        return copy.deepcopy(new)

    @staticmethod
    def _check_pod_update(cur: dict[str, Any], new: dict[str, Any]) -> None:
        old_node = (cur.get("spec") or {}).get("nodeName")
        new_node = (new.get("spec") or {}).get("nodeName")
        if old_node and new_node != old_node:
            raise ApiError(422, "Invalid", "spec.nodeName: a pod's node cannot change once it is bound")
        if (cur.get("spec") or {}).get("containers") != (new.get("spec") or {}).get("containers"):
            changed = [c.get("name") for c in (new.get("spec") or {}).get("containers", [])]
            old = [c.get("name") for c in (cur.get("spec") or {}).get("containers", [])]
            if changed != old:
                raise ApiError(422, "Invalid", "spec: Forbidden: pod updates may not add or remove containers")

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, body: Any,
              subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        key = self._key(rt, namespace, name)
        with self._cond:
            cur = self._objects[rt.plural].get(key)
            if cur is None:
                raise ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', {"name": name, "kind": rt.plural})
            try:
                if content_type == "application/json-patch+json":
                    patched = json_patch(cur, body)
                elif content_type == "application/merge-patch+json":
                    patched = merge_patch(cur, body)
                elif content_type == "application/strategic-merge-patch+json":
                    patched = strategic_merge_patch(cur, body)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported")
            except PatchError as exc:
                raise ApiError(422, "Invalid", f"the patch cannot be applied: {exc}") from None
            obj = self._check(rt, patched, namespace)
            want = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if want not in (None, "") and str(want) != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": the object '
                               "has been modified", {"name": name, "kind": rt.plural})
            return self._replace(rt, key, cur, obj, subresource, dry_run)

    def delete(self, rt: ResourceType, namespace: str, name: str, dry_run: bool = False,
               precondition_rv: str | None = None) -> dict[str, Any]:
        key = self._key(rt, namespace, name)
        with self._cond:
            cur = self._objects[rt.plural].get(key)
            if cur is None:
                raise ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', {"name": name, "kind": rt.plural})
            if precondition_rv and precondition_rv != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'{rt.plural} "{name}": precondition failed on resourceVersion')
            if dry_run:
                return copy.deepcopy(cur)
            if rt.plural == "namespaces":
                # Kubernetes finalizes a namespace by deleting what is in it; the stand-in does it at once.
                for other in RESOURCES:
                    if other.namespaced:
                        for k in [k for k in self._objects[other.plural] if k[0] == name]:
                            self._remove(other, k)
            return self._remove(rt, key)

    def _remove(self, rt: ResourceType, key: tuple[str, str]) -> dict[str, Any]:
        cur = self._objects[rt.plural].pop(key)
        gone_obj = copy.deepcopy(cur)
        gone_obj["metadata"]["resourceVersion"] = self._next()
        self._record("DELETED", rt, key, gone_obj, cur)
        return copy.deepcopy(gone_obj)

    def expire(self) -> int:
        """Forget the event window (as etcd compaction does) and end open watches with 410 Gone.

        Every resourceVersion handed out so far becomes too old to watch or continue from.
        Returns the new oldest valid version. For tests and the lab's fault verbs.
        """
        with self._cond:
            self._rv += 1
            self._oldest = self._rv
            self._events.clear()
            self._cut += 1
            self._cond.notify_all()
            _log.info("event window expired oldest_rv=%d", self._oldest)
            return self._oldest

    # -- reads ---------------------------------------------------------------------
    @staticmethod
    def _rv_arg(text: str | None, what: str) -> int | None:
        if text in (None, "", "0"):
            return None
        try:
            return int(str(text))
        except ValueError:
            raise ApiError(400, "BadRequest", f"{what}: {text!r} is not a resourceVersion") from None

    @staticmethod
    def _matcher(label_sel: str | None, field_sel: str | None) -> Any:
        try:
            lab, fld = label_selector(label_sel), field_selector(field_sel)
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        return lambda o: lab(o.get("metadata", {}).get("labels") or {}) and fld(o)

    def _snapshot(self, rt: ResourceType, rv: int) -> dict[tuple[str, str], dict[str, Any]]:
        """The objects of one type as they were at ``rv`` (undoing the window); caller holds the lock."""
        if rv < self._oldest:
            raise gone(f"The provided continue parameter is too old (resourceVersion {rv} < {self._oldest}); "
                       "please list again without it")
        objs = dict(self._objects[rt.plural])
        for ev in reversed(self._events):
            if ev.rv <= rv:
                break
            if ev.plural != rt.plural:
                continue
            if ev.prev is None:
                objs.pop(ev.key, None)
            else:
                objs[ev.key] = ev.prev
        return objs

    def list(self, rt: ResourceType, namespace: str, label_sel: str | None = None, field_sel: str | None = None,
             limit: int = 0, cont: str | None = None) -> dict[str, Any]:
        match = self._matcher(label_sel, field_sel)
        start_after: tuple[str, str] | None = None
        with self._cond:
            if cont:
                rv, start_after = self._decode_continue(cont)
                objs = self._snapshot(rt, rv)
            else:
                rv, objs = self._rv, self._objects[rt.plural]
            keys = sorted(k for k in objs if (not namespace or k[0] == namespace) and
                          (start_after is None or k > start_after))
            items, last = [], None
            remaining = 0
            for i, k in enumerate(keys):
                if not match(objs[k]):
                    continue
                if limit and len(items) >= limit:
                    remaining = sum(1 for kk in keys[i:] if match(objs[kk]))
                    break
                items.append(copy.deepcopy(objs[k]))
                last = k
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if remaining and last is not None:
                meta["continue"] = self._encode_continue(rv, last)
                meta["remainingItemCount"] = remaining
            return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    @staticmethod
    def _encode_continue(rv: int, last: tuple[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps({"rv": rv, "ns": last[0], "name": last[1]}).encode()).decode()

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return int(data["rv"]), (str(data["ns"]), str(data["name"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "BadRequest", "continue: the token is not one this server issued") from None

    def watch(self, rt: ResourceType, namespace: str, resource_version: str | None, label_sel: str | None = None,
              field_sel: str | None = None, bookmark_interval: float | None = None, timeout: float = 1800.0,
              stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type", "object"}``) from ``resource_version``; ends after ``timeout``.

        Without a version (or "0") it starts with a synthetic ADDED per current object. A version
        older than the window raises 410 before the first event; a window expired during the watch
        ends it with an ERROR event carrying a 410 Status, as the API server does.
        """
        match = self._matcher(label_sel, field_sel)
        start = self._rv_arg(resource_version, "resourceVersion")
        deadline = time.monotonic() + timeout
        with self._cond:
            cut = self._cut
            if start is None:
                cursor = self._rv
                initial = [copy.deepcopy(o) for k, o in sorted(self._objects[rt.plural].items())
                           if (not namespace or k[0] == namespace) and match(o)]
            else:
                if start < self._oldest:
                    raise gone(f"too old resource version: {start} ({self._oldest})")
                cursor, initial = start, []
        return self._stream(rt, namespace, match, cursor, cut, initial, bookmark_interval, deadline, stop)

    def _stream(self, rt: ResourceType, namespace: str, match: Any, cursor: int, cut: int,
                initial: list[dict[str, Any]], bookmark_interval: float | None, deadline: float,
                stop: threading.Event | None) -> Iterator[dict[str, Any]]:
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        last_bookmark = time.monotonic()
        while True:
            batch: list[dict[str, Any]] = []
            with self._cond:
                if self._cut != cut or cursor < self._oldest:
                    yield {"type": "ERROR", "object": gone(f"too old resource version: {cursor} "
                                                           f"({self._oldest})").status()}
                    return
                pending = self._pending_or_wait(cursor, deadline, bookmark_interval, last_bookmark, stop)
                if pending is None:
                    return
                for ev in pending:
                    cursor = ev.rv
                    out = _watch_event(ev, rt, namespace, match)
                    if out is not None:
                        batch.append(out)
                if not pending:
                    cursor = max(cursor, self._rv)
                rv_now = cursor
            yield from batch
            if stop is not None and stop.is_set():
                return
            now = time.monotonic()
            if bookmark_interval and now - last_bookmark >= bookmark_interval:
                last_bookmark = now
                yield {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                                      "metadata": {"resourceVersion": str(rv_now)}}}
            if now >= deadline:
                return

    def _pending_or_wait(self, cursor: int, deadline: float, bookmark_interval: float | None,
                         last_bookmark: float, stop: threading.Event | None) -> list[Event] | None:
        """The events after ``cursor``, waiting (at most until the deadline or the next bookmark) if there are
        none yet; None when ``stop`` is set. The caller holds ``self._cond``."""
        pending = [e for e in self._events if e.rv > cursor]
        if pending:
            return pending
        wait = deadline - time.monotonic()
        if bookmark_interval:
            wait = min(wait, bookmark_interval - (time.monotonic() - last_bookmark))
        if stop is not None and stop.is_set():
            return None
        if wait > 0:
            # Wake at least every 0.5 s so that a set ``stop`` ends the watch promptly.
            self._cond.wait(min(wait, 0.5))
        return [e for e in self._events if e.rv > cursor]

"""HTTP(S) front of the lab's Kubernetes API stand-in: discovery, REST verbs, chunked watch streams.

Lab stand-in only (see the package docstring). Paths follow the Kubernetes REST
layout: ``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` for
the others, ``namespaces/<ns>/<plural>[/<name>[/status]]`` for namespaced kinds.
One lab-only path, ``POST /lab/expire``, forgets the event window and cuts open
watches with ``410 Gone`` (what an etcd compaction under kube-apiserver does).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from l3net.lab.kubeapi.openapi import gv_document, root_document
from l3net.lab.kubeapi.protobuf import decode_body
from l3net.lab.kubeapi.store import RESOURCES, ApiError, ResourceType, Store

_log = logging.getLogger(__name__)

__all__ = ["KubeAPIServer"]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
GROUPS = sorted({(r.group, r.version) for r in RESOURCES if r.group})
SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-l3net-lab-stand-in", "platform": "linux/amd64"}


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        resources.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                          "kind": r.kind, "verbs": VERBS, "shortNames": list(r.short_names)})
        if r.status:
            resources.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": ["get", "patch", "update"]})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _group_list() -> dict[str, Any]:
    groups = []
    for g, v in GROUPS:
        gv = {"groupVersion": f"{g}/{v}", "version": v}
        groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _openapi_document(parts: list[str]) -> dict[str, Any] | None:
    """The OpenAPI v3 root or one group-version's document for ``/openapi/v3/...``; None for any other path."""
    if parts == ["openapi", "v3"]:
        return root_document()
    if parts[:2] != ["openapi", "v3"]:
        return None
    if parts[2:3] == ["apis"] and len(parts) == 5:
        return gv_document(parts[3], parts[4])
    if parts[2:3] == ["api"] and len(parts) == 4:
        return gv_document("", parts[3])
    return None


def _group_document(group: str) -> dict[str, Any]:
    """``/apis/<group>``: the APIGroup document; 404 for a group this server does not serve."""
    for g, v in GROUPS:
        if g == group:
            gv = {"groupVersion": f"{g}/{v}", "version": v}
            return {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv], "preferredVersion": gv}
    raise ApiError(404, "NotFound", f"the server could not find the requested resource (group {group})")


def _discovery_document(parts: list[str]) -> dict[str, Any] | None:
    """The read-only discovery document at ``parts`` (version, OpenAPI, API and group lists); None elsewhere."""
    if parts == ["version"]:
        return SERVER_VERSION
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if parts == ["apis"]:
        return _group_list()
    if parts[:1] == ["apis"] and len(parts) == 2:
        return _group_document(parts[1])
    return _openapi_document(parts)


def _api_path(parts: list[str]) -> tuple[str, str, list[str]]:
    """``/api/v1/...`` or ``/apis/<group>/<version>/...`` as (group, version, rest); 404 for anything else."""
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if (group, version) != ("", "v1") and (group, version) not in GROUPS:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{version})")
    return group, version, rest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:
        _log.debug("http %s", fmt % args)

    # -- plumbing ------------------------------------------------------------------
    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":
            return decode_body(raw)
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._route(method, [p for p in url.path.split("/") if p], query)
        except ApiError as exc:
            if exc.code >= 500:
                _log.error("request failed method=%s path=%s: %s", method, url.path, exc.message)
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            _log.debug("client went away method=%s path=%s", method, url.path)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routing -------------------------------------------------------------------
    def _route(self, method: str, parts: list[str], q: dict[str, str]) -> None:
        if parts in (["healthz"], ["readyz"], ["livez"]):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if parts == ["lab", "expire"] and method == "POST":
            return self._send(200, {"oldestResourceVersion": str(self.server.store.expire())})
        doc = _discovery_document(parts)
        if doc is not None:
            return self._send(200, doc)
        group, version, rest = _api_path(parts)
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "discovery documents are read-only")
            return self._send(200, _resource_list(group, version))
        self._resource(method, group, version, rest, q)

    def _lookup(self, group: str, version: str, plural: str) -> ResourceType:
        for r in RESOURCES:
            if (r.group, r.version, r.plural) == (group, version, plural):
                return r
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")

    def _resource(self, method: str, group: str, version: str, rest: list[str], q: dict[str, str]) -> None:
        namespace = ""
        plurals = {r.plural for r in RESOURCES if (r.group, r.version) == (group, version) and r.namespaced}
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in plurals:
            namespace, rest = rest[1], rest[2:]
        rt = self._lookup(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and (sub != "status" or not rt.status)):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({'/'.join(rest)})")
        store = self.server.store
        dry_run = q.get("dryRun") == "All"
        if not name:
            if method == "GET" and q.get("watch") in ("true", "1"):
                return self._watch(rt, namespace, q)
            if method == "GET":
                limit = int(q["limit"]) if q.get("limit", "").isdigit() else 0
                return self._send(200, store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"),
                                                  limit, q.get("continue")))
            if method == "POST":
                return self._send(201, store.create(rt, namespace, self._body(), dry_run))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection here")
        if method == "GET":
            return self._send(200, store.get(rt, namespace, name))
        if method == "PUT":
            return self._send(200, store.update(rt, namespace, name, self._body(), sub, dry_run))
        if method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            return self._send(200, store.patch(rt, namespace, name, ctype, self._body(), sub, dry_run))
        if method == "DELETE":
            body = self._body() or {}
            pre = (body.get("preconditions") or {}).get("resourceVersion") if isinstance(body, dict) else None
            dry = dry_run or (isinstance(body, dict) and "All" in (body.get("dryRun") or []))
            return self._send(200, store.delete(rt, namespace, name, dry, pre))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _watch(self, rt: ResourceType, namespace: str, q: dict[str, str]) -> None:
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds", "").isdigit() else 1800.0
        events = self.server.store.watch(rt, namespace, q.get("resourceVersion"), q.get("labelSelector"),
                                         q.get("fieldSelector"),
                                         self.server.bookmark_interval if bookmarks else None, timeout,
                                         self.server.stopping)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        self.server.watches_opened += 1
        try:
            for ev in events:
                self._chunk(ev)
            self.wfile.write(b"0\r\n\r\n")
        finally:
            events.close()

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], store: Store, bookmark_interval: float,
                 sock: socket.socket | None = None):
        super().__init__(addr, _Handler, bind_and_activate=sock is None)
        if sock is not None:
            # a socket made in another network namespace stays there: serve it as it is
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()
            sock.listen(self.request_queue_size)
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.stopping = threading.Event()
        self.watches_opened = 0


class KubeAPIServer:
    """Serves one :class:`Store` over HTTP(S) on its own threads (lab stand-in; production never uses it).

    ``start()`` binds (port 0 picks a free one) and serves from a daemon thread;
    ``stop()`` ends open watches and closes the socket. With ``certfile``/``keyfile``
    it speaks TLS (no client authentication). ``sock``: an already bound socket (one made
    inside a lab node's network namespace, so processes there reach the same store).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, store: Store | None = None,
                 bookmark_interval: float = 5.0, certfile: str | None = None, keyfile: str | None = None,
                 sock: socket.socket | None = None):
        self.store = store or Store()
        self._httpd = _Server((host, port), self.store, bookmark_interval, sock)
        self.tls = bool(certfile)
        self.certfile = certfile
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def watches_opened(self) -> int:
        return self._httpd.watches_opened

    def start(self) -> KubeAPIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="kubeapi", daemon=True)
        self._thread.start()
        _log.info("kube API stand-in serving url=%s", self.url)
        return self

    def stop(self) -> None:
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()  # waits for serve_forever: only when it runs
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def kubeconfig(self, path: str, namespace: str = "default") -> str:
        """Write a kubeconfig naming this server (no credentials: the stand-in does not authenticate)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            # the lab's certificate is self-signed: it is its own authority, so clients verify it
            cluster["certificate-authority"] = self.certfile
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
               "clusters": [{"name": "lab", "cluster": cluster}],
               # kubectl asks for a user name over https without credentials; the stand-in ignores the token.
               "users": [{"name": "lab", "user": {"token": "lab-stand-in-does-not-authenticate"}}],
               "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab", "namespace": namespace}}]}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=1)
        return path

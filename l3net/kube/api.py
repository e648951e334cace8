"""Thin access to the Kubernetes API over the ``kubernetes`` client: raw JSON lists, watches and writes.

Objects travel as plain dicts exactly as the API serves them (no generated model
classes, which drop unknown fields and rename keys). ``ApiError`` carries the
HTTP status; connection failures are ``ApiUnavailable``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import urllib3
import yaml
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

_log = logging.getLogger(__name__)

__all__ = ["PATHS", "ApiError", "ApiUnavailable", "KubeAPI", "KubeConfigError"]

# kind -> (collection path prefix, namespaced). Namespaced paths take "/namespaces/<ns>" before the plural.
PATHS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Service": ("/api/v1", "services", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
}


class ApiError(Exception):
    """The API answered with an error status (``status`` is the HTTP code)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class KubeConfigError(ValueError):
    """The kubeconfig (or the in-cluster service account) cannot be loaded; the message says why."""


class ApiUnavailable(Exception):
    """The API could not be reached or the connection broke."""


def collection_path(kind: str, namespace: str | None = None) -> str:
    base, plural, namespaced = PATHS[kind]
    if namespaced and namespace:
        return f"{base}/namespaces/{namespace}/{plural}"
    return f"{base}/{plural}"


def item_path(kind: str, name: str, namespace: str | None = None) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


class KubeAPI:
    """One API connection (kubeconfig file, or the in-cluster service account when ``kubeconfig`` is None).

    Thread-safe for concurrent calls (urllib3 pools connections). Raises ApiError / ApiUnavailable.
    """

    def __init__(self, kubeconfig: str | None = None, request_timeout: float = 10.0):
        cfg = kclient.Configuration()
        try:
            if kubeconfig:
                kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
            else:
                kconfig.load_incluster_config(client_configuration=cfg)
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
            raise KubeConfigError(f"kubeconfig {kubeconfig or '(in-cluster)'}: {exc}") from None
        cfg.retries = False
        self.host = cfg.host
        self._api = kclient.ApiClient(cfg)
        self.request_timeout = request_timeout

    def close(self) -> None:
        self._api.close()

    def _call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
              timeout: Any = None, stream: bool = False, content_type: str = "application/json") -> Any:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            ser = self._api.param_serialize(method, path, query_params=params, body=body,
                                            header_params={"Accept": "application/json", "Content-Type": content_type},
                                            auth_settings=["BearerToken"])
            resp = self._api.call_api(*ser, _request_timeout=timeout if timeout is not None else self.request_timeout)
        except ApiException as exc:  # raised for connection failures (status 0)
            raise ApiUnavailable(f"{method} {path}: {exc.reason or exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnavailable(f"{method} {path}: {exc}") from None
        raw = resp.response
        if not 200 <= resp.status <= 299:
            try:
                data = raw.data
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            reason = str(resp.reason)
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                reason = json.loads(data).get("message", reason)  # a Status names the cause
            raise ApiError(int(resp.status), reason)
        if stream:
            return raw
        try:
            return json.loads(raw.data)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnavailable(f"{method} {path}: {exc}") from None
        except ValueError:
            raise ApiUnavailable(f"{method} {path}: the answer is not JSON") from None

    # -- reads -----------------------------------------------------------------------
    def list(self, kind: str, limit: int = 500, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` in pages of ``limit`` (``continue``), and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        cont: str | None = None
        rv = ""
        while True:
            page = self._call("GET", collection_path(kind), {"limit": limit, "continue": cont,
                                                             "labelSelector": label_selector,
                                                             "fieldSelector": field_selector})
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not rv:
                rv = str(meta.get("resourceVersion") or "")
            cont = meta.get("continue") or None
            if not cont:
                return items, rv

    def watch(self, kind: str, resource_version: str, timeout_seconds: int = 300,
              field_selector: str | None = None) -> Iterator[dict[str, Any]]:
        """Events from ``resource_version`` (bookmarks asked for) until the server ends the stream."""
        resp = self._call("GET", collection_path(kind),
                          {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                           "timeoutSeconds": timeout_seconds, "fieldSelector": field_selector},
                          timeout=(self.request_timeout, timeout_seconds + 30), stream=True)
        buf = b""
        try:
            for chunk in resp.stream(65536, decode_content=False):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except ValueError:
                            raise ApiUnavailable(f"watch {kind}: a line is not JSON") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnavailable(f"watch {kind}: {exc}") from None
        finally:
            resp.release_conn()

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self._call("GET", item_path(kind, name, namespace))  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # -- writes (leases, pod status) ------------------------------------------------
    def create(self, kind: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return self._call("POST", collection_path(kind, namespace), body=obj)  # type: ignore[no-any-return]

    def patch_status(self, kind: str, name: str, namespace: str | None, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the ``/status`` subresource (what kubelet does with a pod's IP and phase)."""
        return self._call("PATCH", item_path(kind, name, namespace) + "/status",  # type: ignore[no-any-return]
                          body={"status": status}, content_type="application/merge-patch+json")

    def replace(self, kind: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        return self._call("PUT", item_path(kind, name, namespace), body=obj)  # type: ignore[no-any-return]

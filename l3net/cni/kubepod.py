"""What the CNI plugin reads from the Kubernetes API at ADD: the pod's labels, ports and annotations.

With ``"kubernetes": {"kubeconfig": "<path>"}`` in the netconf (Calico's field)
and ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` in ``CNI_ARGS`` (kubelet sends both),
the plugin GETs the pod and its service account, so the WorkloadEndpoint carries
the pod's labels and named ports from its first packet. Annotations honoured:

- ``cni.projectcalico.org/ipv4pools``: JSON list of pool names or CIDRs to assign from;
- ``cni.projectcalico.org/ipAddrs``: JSON list with the pod's fixed address;
- ``l3net.io/sticky-address: "true"``: the pod keeps its address across deletion and
  re-creation on any node (a StatefulSet pod, whose name is stable); the sticky key is
  ``<namespace>/<pod>``.

An unreachable API is "try again later" (kubelet retries the ADD); a missing pod or a
malformed annotation is an error naming it. Nothing is written before these checks.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any

from l3net.cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CNIError

_log = logging.getLogger(__name__)

__all__ = ["ANNOTATION_IPADDRS", "ANNOTATION_POOLS", "ANNOTATION_STICKY", "PodInfo", "pod_info", "read_pod"]

ANNOTATION_POOLS = "cni.projectcalico.org/ipv4pools"
ANNOTATION_IPADDRS = "cni.projectcalico.org/ipAddrs"
ANNOTATION_STICKY = "l3net.io/sticky-address"


@dataclass(frozen=True)
class PodInfo:
    labels: dict[str, str]
    ports: list[dict[str, Any]]
    service_account: str
    pools: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    sticky_key: str | None = None


def _json_list(value: str, name: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(x, str) and x for x in parsed):
        raise CNIError(INVALID_CONFIG, f"pod annotation {name}: must be a JSON list of strings, e.g. "
                       "[\"10.244.1.7\"]", f"got {value[:200]!r}")
    return parsed


def pod_info(pod: dict[str, Any], sa: dict[str, Any] | None) -> PodInfo:
    """The endpoint fields and IPAM choices of one pod (pure; raises CNIError naming a bad annotation)."""
    from l3net.kube.translate import endpoint_fields

    labels, ports, sa_name = endpoint_fields(pod, sa)
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    pools: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    sticky = None
    if ANNOTATION_POOLS in ann:
        pools = tuple(_json_list(str(ann[ANNOTATION_POOLS]), ANNOTATION_POOLS))
    if ANNOTATION_IPADDRS in ann:
        raw = _json_list(str(ann[ANNOTATION_IPADDRS]), ANNOTATION_IPADDRS)
        out = []
        for item in raw:
            try:
                addr = ipaddress.ip_address(item)
            except ValueError:
                raise CNIError(INVALID_CONFIG, f"pod annotation {ANNOTATION_IPADDRS}: {item!r} is not an IP "
                               "address") from None
            if addr.version != 4:
                raise CNIError(INVALID_CONFIG, f"pod annotation {ANNOTATION_IPADDRS}: {item} is IPv6; l3net-cni "
                               "assigns IPv4 only")
            out.append(str(addr))
        if len(out) != 1:
            raise CNIError(INVALID_CONFIG, f"pod annotation {ANNOTATION_IPADDRS}: exactly one IPv4 address, "
                           f"got {len(out)}")
        ips = tuple(out)
    if ANNOTATION_STICKY in ann:
        if str(ann[ANNOTATION_STICKY]) != "true":
            raise CNIError(INVALID_CONFIG, f"pod annotation {ANNOTATION_STICKY}: must be \"true\"",
                           f"got {str(ann[ANNOTATION_STICKY])[:100]!r}")
        sticky = f"{meta.get('namespace')}/{meta.get('name')}"
    if ips and (pools or sticky):
        raise CNIError(INVALID_CONFIG, f"pod annotation {ANNOTATION_IPADDRS} cannot be combined with "
                       f"{ANNOTATION_POOLS} or {ANNOTATION_STICKY}")
    return PodInfo(labels, ports, sa_name, pools, ips, sticky)


def read_pod(kubeconfig: str, namespace: str, name: str) -> PodInfo:
    """GET the pod (and its service account) named by kubelet's CNI_ARGS."""
    from l3net.kube.api import ApiError, ApiUnavailable, KubeAPI, KubeConfigError

    try:
        api = KubeAPI(kubeconfig, request_timeout=5.0)
    except KubeConfigError as exc:
        raise CNIError(INVALID_CONFIG, f"kubernetes.kubeconfig: cannot load {kubeconfig!r}", str(exc)) from None
    try:
        pod = api.get("Pod", name, namespace)
        if pod is None:
            raise CNIError(INVALID_CONFIG, f"pod {namespace}/{name} does not exist in the Kubernetes API")
        sa_name = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        sa = api.get("ServiceAccount", sa_name, namespace)
    except ApiUnavailable as exc:
        raise CNIError(TRY_AGAIN_LATER, "the Kubernetes API is unreachable, try again later", str(exc)) from None
    except ApiError as exc:
        raise CNIError(TRY_AGAIN_LATER if exc.status >= 500 or exc.status == 429 else INVALID_CONFIG,
                       f"reading pod {namespace}/{name} from the Kubernetes API failed", str(exc)) from None
    finally:
        api.close()
    info = pod_info(pod, sa)
    _log.info("read pod from the API pod=%s/%s labels=%d ports=%d pools=%s ips=%s sticky=%s", namespace, name,
              len(info.labels), len(info.ports), ",".join(info.pools) or "-", ",".join(info.ips) or "-",
              info.sticky_key or "-")
    return info

"""l3net.cni.plugin: the ``l3net-cni`` CNI plugin (spec 1.0.0; GC and STATUS from 1.1).

One process per invocation, started by the container runtime in the node's
network namespace with ``CNI_*`` variables and the network configuration on
stdin. ADD allocates, wires and records the workload, and on any failure undoes
all three before printing the error object (nothing is left behind). DEL is
idempotent. Errors go to stdout as ``{cniVersion, code, msg, details}`` with
exit status 1; logs go to stderr.

The same :func:`run` also serves requests inside the node agent
(``felix.cniserver``): the ``l3net-cni`` entry point is the stdlib-only
``l3net.cni.shim``, which hands the request to the agent's socket and falls
back to this module in its own process when the agent is not there. In the
agent, :func:`run` gets the request's environment as a mapping (never
``os.environ``), the agent's warm datastore (:class:`SharedDatastore`) and
leaves the process's log level alone; it is safe to call from several threads.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import IO, Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from l3net.cni import dataplane, kubepod
from l3net.cni.config import (
    DEFAULT_VERSION,
    SUPPORTED_VERSIONS,
    CNIEnv,
    NetConf,
    decode_stdin,
    parse_env,
    parse_netconf,
)
from l3net.cni.errors import (
    CHECK_DRIFT,
    DATAPLANE_FAILURE,
    INTERNAL_ERROR,
    INVALID_CONFIG,
    INVALID_ENV,
    IPAM_REFUSED,
    PLUGIN_NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CNIError,
)
from l3net.cni.hostlock import ENV_LOCK_DIR, node_lock
from l3net.constants import ENV_CNI_STARTED, WORKLOAD_GATEWAY_V4, WORKLOAD_HOST_MAC
from l3net.datastore import EtcdDatastore, TLSFiles
from l3net.datastore.base import Datastore, KeyValue
from l3net.errors import Conflict, DatastoreError, ValidationError
from l3net.ipam import IPAM, IPAMError
from l3net.ipam.cache import IPAMCache
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.decode import Invalid, decode
from l3net.model.labels import SERVICE_ACCOUNT_LABEL_PREFIX, is_reserved_label
from l3net.model.resource import Resource
from l3net.model.validation import host_veth_name, resource_from_document, workload_endpoint_name
from l3net.model.workload_spec import WorkloadSpec, workload_spec

_log = logging.getLogger(__name__)

ENV_NODENAME = "L3NET_NODENAME"
ENV_ENDPOINTS = "L3NET_ETCD_ENDPOINTS"
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
WEP_DELETE_RETRIES = 10

# Seconds an ADD waits for the datastore's first answer (CNI error 11 after that: the runtime retries).
OUTAGE_PROBE_TIMEOUT = 2.0
# (host interface, datastore revision of the pod's endpoint, timeout s) -> programmed in time?
ProgrammedWait = Callable[[str, int, float], bool]



def _is_runtime_forbidden(key: str) -> bool:
    """A label key a container runtime's ``args.cni.labels`` may not set on an endpoint."""
    return is_reserved_label(key) or key.startswith(SERVICE_ACCOUNT_LABEL_PREFIX)


class AddTracer(Protocol):
    """Where an ADD served by the agent records its stages (``felix.addtrace.TraceBook``); never raises."""

    def begin(self, trace_id: str, key: str, shim_started: float | None = None, claims: str = "") -> None: ...

    def mark(self, trace_id: str, stage: str) -> None: ...

    def abandon(self, trace_id: str) -> None: ...


# -- helpers --------------------------------------------------------------------------
def handle_id(network: str, container_id: str, ifname: str) -> str:
    """Calico's handle ``<network>.<containerID>``; a second interface of one pod gets ``.<ifname>``."""
    base = f"{network}.{container_id}"
    return base if ifname == "eth0" else f"{base}.{ifname}"


def node_name(conf: NetConf, environ: Mapping[str, str]) -> str:
    return conf.nodename or environ.get(ENV_NODENAME) or socket.gethostname()


def _to_cni_error(exc: BaseException) -> CNIError:
    if isinstance(exc, CNIError):
        return exc
    if isinstance(exc, DatastoreError):  # unreachable, or a CAS storm: the runtime should retry
        return CNIError(TRY_AGAIN_LATER, "datastore unavailable, try again later", str(exc))
    if isinstance(exc, IPAMError):
        return CNIError(IPAM_REFUSED, "IP address management refused the request", str(exc))
    if isinstance(exc, ValidationError):
        return CNIError(INVALID_CONFIG, "invalid workload data", str(exc))
    if isinstance(exc, TimeoutError):
        return CNIError(TRY_AGAIN_LATER, "another IPAM operation holds the node lock, try again later", str(exc))
    if isinstance(exc, dataplane.DataplaneError | NetlinkError | OSError):
        return CNIError(DATAPLANE_FAILURE, "failed to wire the workload", str(exc))
    _log.error("unexpected error: %s", "".join(traceback.format_exception(exc)))
    return CNIError(INTERNAL_ERROR, "internal error in l3net-cni", f"{type(exc).__name__}: {exc}")


# The namespaces a CNI_NETNS must never be: this process's own (the node's, or the agent's when it
# serves the request) and the machine's initial one. A request naming either would wire or tear down
# the node's own interfaces (DEL with CNI_IFNAME=eth0 deletes the node's uplink).
HOST_NETNS_PATHS = ("/proc/self/ns/net", "/proc/1/ns/net")


def refuse_host_netns(netns: str, host_paths: tuple[str, ...] = HOST_NETNS_PATHS) -> None:
    """CNIError(4) when ``netns`` is one of ``host_paths``' namespaces (compared by device and inode).

    A path that does not exist is left to the command (DEL of a gone namespace is normal);
    one that exists but cannot be examined is refused too (fail closed).
    """
    if not netns:
        return
    try:
        st = os.stat(netns)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CNIError(INVALID_ENV, f"CNI_NETNS {netns!r} cannot be checked against the host's namespace",
                       f"{exc.strerror or exc}; refused rather than risk acting on the host") from None
    for path in host_paths:
        try:
            host = os.stat(path)
        except OSError as exc:  # e.g. /proc/1 hidden from a container: the other path still decides
            _log.debug("cannot stat host namespace path=%s error=%s", path, exc)
            continue
        if (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino):
            raise CNIError(INVALID_ENV, f"CNI_NETNS {netns!r} is the host's own network namespace",
                           f"same namespace as {path}; l3net-cni only wires container namespaces")


def _endpoint_set(endpoints: str) -> frozenset[str]:
    return frozenset(e.strip().rstrip("/") for e in endpoints.split(",") if e.strip())


@dataclass(frozen=True)
class SharedDatastore:
    """A datastore connection the caller keeps open (the agent's), used when the request names no other etcd.

    ``endpoints`` is what it is connected to; a request whose ``etcd_endpoints``
    (or ``L3NET_ETCD_ENDPOINTS``) names a different set gets its own connection.
    ``ipam_cache`` lets every request's IPAM on this connection start warm (one
    write and no read per ADD or DEL in steady state; see :mod:`l3net.ipam.cache`).
    """

    ds: Datastore
    endpoints: str
    ipam_cache: IPAMCache = field(default_factory=IPAMCache)

    def serves(self, requested: str | None) -> bool:
        return requested is None or _endpoint_set(requested) == _endpoint_set(self.endpoints)


class Invocation:
    """One plugin call: the decoded inputs plus the datastore, IPAM and resource client it uses.

    With ``shared`` (the agent's connection) nothing is opened and :meth:`close`
    leaves it open; otherwise it opens its own etcd client and closes it.
    """

    def __init__(self, env: CNIEnv, conf: NetConf, environ: Mapping[str, str],
                 shared: SharedDatastore | None = None, wait_programmed: ProgrammedWait | None = None,
                 tracer: AddTracer | None = None):
        self.env = env
        self.tracer = tracer
        self.started = _started(environ)
        self.wait_programmed = wait_programmed
        self.conf = conf
        self.pod: kubepod.PodInfo | None = None
        self.node = node_name(conf, environ)
        self.lock_dir = environ.get(ENV_LOCK_DIR) or None
        self.host_if = host_veth_name(env.namespace, env.pod)
        self.handle = handle_id(conf.name, env.container_id, env.ifname)
        self.wep_name = workload_endpoint_name(self.node, env.pod, env.ifname)
        requested = conf.etcd_endpoints or environ.get(ENV_ENDPOINTS) or None
        self._own_ds = shared is None or not shared.serves(requested)
        if not self._own_ds:
            assert shared is not None
            self.ds: Datastore = shared.ds
        else:
            tls = TLSFiles(ca=conf.etcd_ca_cert_file or environ.get("L3NET_ETCD_CA_CERT_FILE"),
                           cert=conf.etcd_cert_file or environ.get("L3NET_ETCD_CERT_FILE"),
                           key=conf.etcd_key_file or environ.get("L3NET_ETCD_KEY_FILE"))
            try:
                self.ds = EtcdDatastore(requested or DEFAULT_ENDPOINTS, tls)
            except ValueError as exc:
                raise CNIError(INVALID_CONFIG, f"etcd_endpoints: {exc}") from None
        self.keys = KeyLayout(conf.etcd_prefix)
        self.ipam = IPAM(self.ds, self.keys, cache=None if shared is None or self._own_ds else shared.ipam_cache)
        self.client = ResourceClient(self.ds, self.keys)

    def close(self) -> None:
        if self._own_ds:
            self.ds.close()

    def _lock(self) -> Any:
        return node_lock(self.node, directory=self.lock_dir)

    # -- workload endpoint -----------------------------------------------------------
    def wep_document(self, ips: list[str], mac: str) -> dict[str, Any]:
        # Implicit labels win: a passed label with a reserved key (pcns.*, projectcalico.org/*) is dropped,
        # so args.cni.labels cannot place the pod in another namespace's selectors; nor, with pcsa.*, claim
        # a service account's labels (only the kube-controller, which reads the ServiceAccount, writes those).
        dropped = sorted(k for k in self.conf.labels if _is_runtime_forbidden(k))
        if dropped:
            _log.warning("args.cni.labels: reserved keys ignored container=%s keys=%s", self.env.container_id,
                         ",".join(dropped))
        labels = {**{k: v for k, v in self.conf.labels.items() if not _is_runtime_forbidden(k)},
                  "projectcalico.org/namespace": self.env.namespace, "projectcalico.org/orchestrator": "k8s"}
        spec = {"node": self.node, "orchestrator": "k8s", "pod": self.env.pod, "endpoint": self.env.ifname,
                "containerID": self.env.container_id, "interfaceName": self.host_if,
                "ipNetworks": [f"{ip}/32" for ip in ips], "mac": mac}
        if self.pod is not None:
            # exactly what the kube-controller computes, so its first pass rewrites nothing
            labels = dict(self.pod.labels)
            spec["serviceAccountName"] = self.pod.service_account
            if self.pod.ports:
                spec["ports"] = self.pod.ports
        return {"apiVersion": "l3net.io/v1", "kind": "WorkloadEndpoint",
                "metadata": {"name": self.wep_name, "namespace": self.env.namespace, "labels": labels},
                "spec": spec}

    def validate_wep(self) -> Resource:
        """Validate what we will store before touching anything (bad labels or names are config errors)."""
        try:
            return resource_from_document(self.wep_document(["192.0.2.1"], "02:00:00:00:00:01"), "CNI ADD")
        except ValidationError as exc:
            raise CNIError(INVALID_CONFIG, "the workload endpoint would be invalid", str(exc)) from None

    def stored_wep(self) -> WorkloadSpec | Invalid | None:
        """This pod's stored endpoint (see :func:`decoded_wep`); None when absent."""
        kv = self.ds.get(self.keys.resource("workloadendpoints", self.wep_name, self.env.namespace))
        return None if kv is None else _decoded_wep(self.keys, kv)

    # -- commands --------------------------------------------------------------------
    def read_pod(self) -> None:
        """With ``kubernetes.kubeconfig`` and kubelet's pod name: the pod's labels, ports and IPAM annotations."""
        if not self.conf.kubeconfig or not self.env.args.get("K8S_POD_NAME"):
            return
        self.pod = kubepod.read_pod(self.conf.kubeconfig, self.env.namespace, self.env.pod)
        if self.pod.ips:
            self.conf = dc_replace(self.conf, static_ips=self.pod.ips)
        if self.pod.pools:
            self.conf = dc_replace(self.conf, ipv4_pools=self.pod.pools)
        if self.pod.sticky_key:
            self.conf = dc_replace(self.conf, sticky_key=self.pod.sticky_key)

    def _mark(self, stage: str) -> None:
        if self.tracer is not None:
            self.tracer.mark(self.env.container_id, stage)

    def add(self) -> dict[str, Any]:
        if self.tracer is not None:
            key = self.keys.resource("workloadendpoints", self.wep_name, self.env.namespace)
            # claims: this node's block affinities, so the trace also follows a block this ADD makes IPAM claim
            self.tracer.begin(self.env.container_id, key, self.started, f"{self.keys.affinities}{self.node}/")
        try:
            return self._add()
        except BaseException:
            if self.tracer is not None:
                self.tracer.abandon(self.env.container_id)
            raise

    def _add(self) -> dict[str, Any]:
        self.read_pod()
        self.validate_wep()
        # Before anything is touched: a down or hung datastore is "try again later" within seconds, with
        # nothing to roll back (a hung etcd would otherwise hold each request for its full timeout).
        self.ds.probe(OUTAGE_PROBE_TIMEOUT)
        attrs = {"namespace": self.env.namespace, "pod": self.env.pod, "containerID": self.env.container_id,
                 "interface": self.env.ifname}
        ips: list[str] = []
        try:
            with self._lock():
                if self.conf.static_ips:
                    ips = [self.ipam.assign(ip, self.handle, self.node, attrs) for ip in self.conf.static_ips]
                else:
                    ips = self.ipam.auto_assign(self.handle, self.node, attrs, num_v4=1,
                                                pools=list(self.conf.ipv4_pools) or None,
                                                sticky_key=self.conf.sticky_key)
            self._mark("ipam")
            wired = dataplane.setup(self.host_if, self.env.netns, self.env.ifname, ips, self.conf.mtu)
            self._mark("wire")
            doc = self.wep_document(ips, wired.pod_mac)
            (stored,) = self.client.apply([resource_from_document(doc, "CNI ADD")])
            self._mark("endpoint_write")
        except BaseException as exc:
            self._rollback(ips, exc)
            raise
        _log.info("ADD done container=%s pod=%s/%s ips=%s", self.env.container_id, self.env.namespace,
                  self.env.pod, ",".join(ips))
        self._wait_until_programmed(stored.resource_version)
        return self.result(ips, wired.pod_mac)

    def _wait_until_programmed(self, revision: int) -> None:
        """With ``policy_setup_timeout_seconds``: hold the result until the node agent has programmed the pod.

        Until then the agent drops the pod's packets (fail closed), so a pod that starts
        at once may find its first connections dropped. Not programmed in time is not a
        failure: the pod starts, and its traffic flows once the agent catches up.
        ``revision``: the endpoint write's own revision (the key's mod_revision), so nothing is read back.
        """
        timeout = self.conf.policy_setup_timeout
        if timeout <= 0:
            return
        if self.wait_programmed is None:
            _log.info("not waiting for policy setup: no node agent serves this request (in-process fallback)")
            return
        if revision <= 0:
            return
        if not self.wait_programmed(self.host_if, revision, timeout):
            _log.warning("policy setup not done within %gs container=%s if=%s: the pod starts with its traffic "
                         "dropped until the node agent programs it", timeout, self.env.container_id, self.host_if)

    def _rollback(self, ips: list[str], cause: BaseException) -> None:
        _log.warning("ADD failed, rolling back container=%s cause=%s", self.env.container_id, cause)
        try:
            dataplane.teardown(self.host_if, ips)
        except (OSError, NetlinkError) as exc:
            _log.error("rollback: could not remove %s: %s", self.host_if, exc)
        try:
            with self._lock():
                self.ipam.release_handle(self.handle)
        except (DatastoreError, IPAMError, ValidationError, TimeoutError) as exc:
            _log.error("rollback: could not release handle=%s: %s", self.handle, exc)

    def result(self, ips: list[str], pod_mac: str) -> dict[str, Any]:
        ip_entries = []
        for ip in ips:
            entry: dict[str, Any] = {"address": f"{ip}/32", "gateway": WORKLOAD_GATEWAY_V4, "interface": 1}
            if self.conf.cni_version == "0.4.0":
                entry["version"] = "4"
            ip_entries.append(entry)
        return {
            "cniVersion": self.conf.cni_version,
            "interfaces": [{"name": self.host_if, "mac": WORKLOAD_HOST_MAC},
                           {"name": self.env.ifname, "mac": pod_mac, "sandbox": self.env.netns}],
            "ips": ip_entries,
            "routes": [{"dst": "0.0.0.0/0", "gw": WORKLOAD_GATEWAY_V4}],
            "dns": {},
        }

    def delete(self) -> None:
        wep = self.stored_wep()
        ours = _wep_owner(wep) in (None, self.env.container_id)
        ips = self.ipam.handle_ips(self.handle)
        if self.env.netns:
            # From the container's side: the host veth's name is shared with any newer container of
            # this pod, but what sits in this container's namespace is this container's alone.
            dataplane.teardown_in_container(self.env.netns, self.env.ifname, ips)
        elif ours:
            # No namespace given (the spec allows that on DEL): the host side by name is all we can reach,
            # and only while the endpoint still names this container.
            dataplane.teardown(self.host_if, ips)
        if ours and wep is not None:
            self._delete_wep_if_ours()
        elif not ours:
            _log.info("DEL: endpoint now belongs to another container; leaving it wep=%s", self.wep_name)
        with self._lock():
            self.ipam.release_handle(self.handle)
        _log.info("DEL done container=%s ips=%s", self.env.container_id, ",".join(ips))

    def _delete_wep_if_ours(self) -> bool:
        """Delete the WorkloadEndpoint by CAS, only while it still names this container.

        A newer ADD for the same pod may rewrite the endpoint at any moment; deleting by
        mod_revision and re-checking after a lost race keeps that newer endpoint. False when
        the endpoint now belongs to another container.
        """
        key = self.keys.resource("workloadendpoints", self.wep_name, self.env.namespace)
        for _ in range(WEP_DELETE_RETRIES):
            kv = self.ds.get(key)
            if kv is None:
                return True
            cid = _wep_owner(_decoded_wep(self.keys, kv))  # an invalid one: no container's, ours to clean up
            if cid not in (None, self.env.container_id):
                _log.info("DEL: endpoint now belongs to container=%s; leaving it wep=%s", cid, self.wep_name)
                return False
            try:
                self.ds.delete(key, kv.mod_revision)
                return True
            except Conflict:
                continue  # rewritten meanwhile: re-read and decide again
        raise Conflict(f"{key} kept changing while DEL tried to remove it")

    def check(self) -> None:
        prev = self.conf.prev_result or {}
        want = sorted(str(e.get("address", "")).split("/")[0] for e in prev.get("ips", []) if isinstance(e, dict))
        drift: list[str] = []
        held = sorted(self.ipam.handle_ips(self.handle))
        if held != want:
            drift.append(f"IPAM handle {self.handle} holds {held}, prevResult says {want}")
        drift += dataplane.check(self.host_if, self.env.netns, self.env.ifname, want)
        wep = self.stored_wep()
        if wep is None:
            drift.append(f"WorkloadEndpoint {self.env.namespace}/{self.wep_name} is missing")
        elif isinstance(wep, Invalid):
            drift.append(f"WorkloadEndpoint {self.env.namespace}/{self.wep_name} is invalid, so absent to the "
                         f"node agent: {wep}")
        else:
            if wep.container_id != self.env.container_id:
                drift.append(f"WorkloadEndpoint belongs to container {wep.container_id!r}")
            nets = sorted(str(n) for n in wep.ip_networks)
            if nets != sorted(f"{ip}/32" for ip in want):
                drift.append(f"WorkloadEndpoint ipNetworks {nets} differ from {want}")
        if drift:
            raise CNIError(CHECK_DRIFT, "CHECK found drift", "; ".join(drift))

    def gc(self) -> None:
        """Release this network's allocations on this node that the runtime no longer lists (CNI 1.1 GC)."""
        if self.conf.valid_attachments is None:
            # Without the runtime's list every allocation would look stale: refuse, release nothing.
            raise CNIError(INVALID_CONFIG, "cni.dev/valid-attachments: required for GC; nothing released")
        valid = set(self.conf.valid_attachments)
        prefix = f"{self.conf.name}."
        for a in self.ipam.check().allocations:
            if not a.handle or not a.handle.startswith(prefix) or a.node != self.node:
                continue
            attrs = {k: a.attrs.get(k) for k in ("containerID", "interface", "namespace", "pod")}
            cid, ifname, ns, pod = attrs.values()
            # Act only on an allocation that names its attachment completely and consistently (the
            # handle is the one ADD made from those attributes); anything else is left alone.
            if not all(isinstance(v, str) and v for v in attrs.values()) \
                    or a.handle != handle_id(self.conf.name, str(cid), str(ifname)):
                _log.warning("GC skipped an allocation it cannot identify handle=%s ip=%s attrs=%s", a.handle,
                             a.ip, attrs)
                continue
            if (cid, ifname) in valid:
                continue
            ns, pod = str(ns), str(pod)
            dataplane.teardown(host_veth_name(ns, pod), [a.ip])
            name = workload_endpoint_name(self.node, pod, str(ifname))
            key = self.keys.resource("workloadendpoints", name, ns)
            kv = self.ds.get(key)
            if kv is not None and _wep_owner(_decoded_wep(self.keys, kv)) == cid:
                self.ds.delete(key, kv.mod_revision)
            self.ipam.release_handle(a.handle)
            _log.info("GC released handle=%s ip=%s", a.handle, a.ip)


def _decoded_wep(keys: KeyLayout, kv: KeyValue) -> WorkloadSpec | Invalid:
    """A stored WorkloadEndpoint's typed spec, by the model's one decode; :class:`Invalid` (logged with the
    model's reasons) when the model refuses it: absent to the node agent, so no container's endpoint here."""
    got = decode(keys, kv.key, kv.value, kv.mod_revision)
    if isinstance(got, Invalid):
        _log.warning("stored WorkloadEndpoint is invalid, treating it as no container's key=%s error=%s",
                     kv.key, got)
        return got
    return workload_spec(got)


def _wep_owner(wep: WorkloadSpec | Invalid | None) -> str | None:
    """The container a stored endpoint names; None when absent, invalid or naming none."""
    return wep.container_id if isinstance(wep, WorkloadSpec) else None


# -- entry points ---------------------------------------------------------------------
def _started(environ: Mapping[str, str]) -> float | None:
    """The shim's start stamp (``L3NET_CNI_STARTED``), or None when absent or not a number."""
    try:
        return float(environ.get(ENV_CNI_STARTED) or "")
    except ValueError:
        return None


def _peek_version(raw: bytes) -> str:
    try:
        v = json.loads(raw).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return DEFAULT_VERSION
    return v if isinstance(v, str) and v in SUPPORTED_VERSIONS else DEFAULT_VERSION


def run(environ: Mapping[str, str], stdin: bytes, out: IO[str], *, shared: SharedDatastore | None = None,
        set_log_level: bool = True, wait_programmed: ProgrammedWait | None = None,
        tracer: AddTracer | None = None) -> int:
    """Execute one CNI command; returns the exit status after printing the result or error.

    ``environ`` is read, never changed. ``shared``: a datastore connection to use
    instead of opening one (the agent's). ``set_log_level``: apply the netconf's
    ``log_level`` to the root logger (only in a process of its own; the agent keeps its level).
    ``wait_programmed``: the agent's wait for a pod it has programmed (see ``policy_setup_timeout_seconds``).
    ``tracer``: the agent's ADD trace book (stage timings); None in the plugin's own process.
    """
    version = _peek_version(stdin)
    inv: Invocation | None = None
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            json.dump({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}, out)
            return 0
        doc = decode_stdin(stdin)
        conf = parse_netconf(doc, env.command)
        if set_log_level:
            logging.getLogger().setLevel(getattr(logging, conf.log_level.upper(), logging.WARNING))
        if env.command in ("STATUS", "GC"):
            env = CNIEnv(command=env.command, container_id="status", ifname="eth0")
        else:
            refuse_host_netns(env.netns)
        inv = Invocation(env, conf, environ, shared, wait_programmed, tracer)
        if env.command == "ADD":
            json.dump(inv.add(), out)
        elif env.command == "DEL":
            inv.delete()
        elif env.command == "CHECK":
            inv.check()
        elif env.command == "GC":
            inv.gc()
        elif env.command == "STATUS":
            try:
                inv.ds.revision()
            except DatastoreError as exc:
                raise CNIError(PLUGIN_NOT_AVAILABLE, "datastore unreachable", str(exc)) from None
        return 0
    except BaseException as exc:  # every failure becomes a CNI error object, never a traceback
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        err = _to_cni_error(exc)
        _log.error("%s", err)
        json.dump(err.to_dict(version), out)
        return 1
    finally:
        if inv is not None:
            inv.close()
        out.write("\n")
        out.flush()


def main(stdin: bytes | None = None) -> None:
    """The plugin in this process (the shim's fallback); ``stdin``: the request when it was already read."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="l3net-cni %(levelname)s %(message)s")
    sys.exit(run(os.environ, sys.stdin.buffer.read() if stdin is None else stdin, sys.stdout))

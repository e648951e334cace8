"""l3net.metrics: every Prometheus metric l3net exports, defined in one place.

Names are ``l3net_<subsystem>_<thing>``; ``docs/metrics.md`` maps each one to
its Felix equivalent. The metrics live in :data:`REGISTRY` (not the process
default registry) so that the agent exports exactly these and nothing a
library happened to register. Safe to update from any thread.

Counts that other objects keep themselves (the policy drivers' ``stats()``, the
syncer's counters, the last policy program's ``metrics()``) are not copied into
metric objects: :data:`SOURCED` reads them at scrape time from the sources the
agent registers, and :data:`SOURCED_METRICS` declares each one's type and help.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

# -- dataplane apply loop (felix.loop) -------------------------------------
APPLY_TIME = Histogram(
    "l3net_dataplane_apply_time_seconds", "Wall time of one dataplane apply (all drivers).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY)
APPLY_FAILURES = Counter(
    "l3net_dataplane_failures", "Dataplane applies that failed (each is retried with backoff).",
    registry=REGISTRY)
APPLIES = Counter("l3net_dataplane_applies", "Dataplane applies attempted.", registry=REGISTRY)
MSG_BATCH_SIZE = Histogram(
    "l3net_dataplane_msg_batch_size", "Datastore updates coalesced into one calculation.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000), registry=REGISTRY)
CALC_TIME = Histogram(
    "l3net_calc_time_seconds", "Wall time of one calculation of the desired state.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=REGISTRY)
ADD_STAGE_TIME = Histogram(
    "l3net_add_stage_seconds", "Duration of one stage of a CNI ADD served by the agent, from the shim's start to "
    "the BGP announce (felix.addtrace: cni_start, ipam, wire, endpoint_write, watch_delivery, coalesce, "
    "calculation, apply, bgp_announce); the stages of one ADD add up to its whole. The policy side's branch, from "
    "watch_delivery: policy_coalesce, policy_route_wait, policy_calculation, policy_apply.",
    ["stage"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY)

# -- routes (felix.drivers.routes) -----------------------------------------
ROUTES_PROGRAMMED = Gauge(
    "l3net_routes_programmed", "Routes carrying l3net's protocol number in the kernel, by kind.",
    ["kind"], registry=REGISTRY)
ROUTE_WRITES = Counter(
    "l3net_route_writes", "Route changes written to the kernel, by operation.", ["op"], registry=REGISTRY)
ROUTE_BATCH_SIZE = Histogram(
    "l3net_route_batch_size", "Route changes written in one batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=REGISTRY)
ROUTE_RESYNCS = Counter(
    "l3net_route_table_resyncs", "Full re-reads of the kernel routing table.", registry=REGISTRY)
ROUTE_CONFLICTS = Gauge(
    "l3net_route_conflicts", "Desired routes not written because a foreign route holds the same slot.",
    registry=REGISTRY)
ROUTE_WRITE_FAILURES = Counter(
    "l3net_route_write_failures", "Route writes the kernel refused or that failed, by errno name.", ["errno"],
    registry=REGISTRY)
ROUTES_REFUSED = Gauge(
    "l3net_routes_refused", "Desired routes the kernel refuses now (e.g. next hop unreachable); retried on "
    "link changes and refreshes.", registry=REGISTRY)
ROUTES_INVALID = Gauge(
    "l3net_routes_invalid", "Desired routes skipped because they are malformed (bad prefix or next hop).",
    registry=REGISTRY)
ROUTE_RESYNC_TIME = Histogram(
    "l3net_route_table_resync_seconds", "Time to re-read the kernel routing table.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0), registry=REGISTRY)

# -- interfaces (felix.drivers.interfaces) --------------------------------
SYSCTL_WRITES = Counter("l3net_sysctl_writes", "Sysctl values written.", registry=REGISTRY)

# -- model ----------------------------------------------------------------
LOCAL_ENDPOINTS = Gauge(
    "l3net_active_local_endpoints", "Workload endpoints of this node in the datastore.", registry=REGISTRY)
REJECTED_ENDPOINTS = Gauge(
    "l3net_rejected_local_endpoints", "Workload endpoints of this node skipped because an address lies outside "
    "every IPPool (no route, proxy ARP, advertisement or policy membership).", registry=REGISTRY)
LOCAL_BLOCKS = Gauge(
    "l3net_local_affine_blocks", "Confirmed IPAM blocks affine to this node.", registry=REGISTRY)
CLUSTER_ENDPOINTS = Gauge(
    "l3net_cluster_num_workload_endpoints", "Workload endpoints in the whole cluster.", registry=REGISTRY)
CLUSTER_HOSTS = Gauge("l3net_cluster_num_hosts", "Node resources in the datastore.", registry=REGISTRY)
INVALID_VALUES = Gauge(
    "l3net_datastore_invalid_values", "Datastore values that failed validation (treated as absent).",
    registry=REGISTRY)

# -- datastore (fed by the syncer's status callbacks) ---------------------
DATASTORE_IN_SYNC = Gauge(
    "l3net_datastore_in_sync", "1 when the agent's view of the datastore is complete.", registry=REGISTRY)
RESYNCS_STARTED = Counter(
    "l3net_resyncs_started", "Full datastore resyncs started (start, compaction, reconnection).",
    registry=REGISTRY)
# l3net_resyncs_completed and l3net_datastore_updates come from the syncer (SOURCED below).
DECODE_FAILURES = Counter(
    "l3net_datastore_decode_failures",
    "Datastore keys or values that could not be decoded and were treated as absent, by where it was noticed "
    "(etcd: key or response; model: the agent's model; resource: a resource client, e.g. the reflector's).",
    ["where"], registry=REGISTRY)
DATASTORE_REACHABLE = Gauge(
    "l3net_datastore_reachable", "1 when the last datastore probes were answered in time, 0 when it is down or hung.",
    registry=REGISTRY)
DATASTORE_PROBE_FAILURES = Counter(
    "l3net_datastore_probe_failures", "Datastore probes that failed or timed out.", registry=REGISTRY)
VIEW_CACHE_WRITES = Counter(
    "l3net_view_cache_writes", "Last-good-view cache files written to local disk.", registry=REGISTRY)
VIEW_CACHE_AGE = Gauge(
    "l3net_view_cache_loaded_age_seconds",
    "Age of the cached view this process started from (0 when it did not start from a cache).", registry=REGISTRY)

# -- BGP (fed by bgp.speaker's session events) ---------------------------
BGP_SESSION_UP = Gauge(
    "l3net_bgp_session_up", "1 when the BGP session with the peer is established.", ["peer"], registry=REGISTRY)
BGP_LEARNED_ROUTES = Gauge(
    "l3net_bgp_learned_routes", "Prefixes currently learned over BGP (after best path).", registry=REGISTRY)
URGENT_WITHDRAWS = Counter(
    "l3net_bgp_urgent_withdraws",
    "Learned-route changes that withdrew a prefix or next hop and so skipped the apply coalescing window.",
    registry=REGISTRY)
BGP_ADVERTISEMENTS = Gauge(
    "l3net_bgp_advertisements", "Prefixes this node asks its BGP speaker to announce.", registry=REGISTRY)

# -- policy (fed by the iptables and ipset drivers) -----------------------
IPTABLES_RULES = Gauge("l3net_iptables_rules", "Rules in l3net's iptables chains, by table.", ["table"],
                       registry=REGISTRY)
IPTABLES_CHAINS = Gauge("l3net_iptables_chains", "l3net's iptables chains, by table.", ["table"],
                        registry=REGISTRY)
IPSETS = Gauge("l3net_ipsets", "ipsets owned by l3net.", registry=REGISTRY)
POLICY_APPLY_TIME = Histogram(
    "l3net_policy_apply_time_seconds", "Wall time of one policy-side apply (ipsets, iptables; narrowing included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY)
QUARANTINED_OBJECTS = Gauge(
    "l3net_quarantined_objects", "Objects set aside because the kernel refused what they render to, by kind "
    "(a policy keeps its last good version or is absent; an endpoint's chains drop).", ["kind"], registry=REGISTRY)
QUARANTINE_TRIALS = Counter(
    "l3net_quarantine_trials", "Policy applies made while narrowing a refused program to the objects at fault.",
    registry=REGISTRY)
DRIVER_FAILURES = Counter(
    "l3net_dataplane_side_failures", "Failed applies of one side of the dataplane (routes or policy); each side "
    "retries on its own with backoff and jitter.", ["side"], registry=REGISTRY)


# -- counts kept by their owners, read at scrape time ----------------------
@dataclass(frozen=True)
class SourcedMetric:
    """Type and help of one value a source reports under its metric name."""

    type: Literal["counter", "gauge"]
    help: str


SOURCED_METRICS: dict[str, SourcedMetric] = {
    # policy.compiler.PolicyProgram.metrics() of the last applied program
    "l3net_policy_active": SourcedMetric("gauge", "NetworkPolicies and GlobalNetworkPolicies compiled for this node."),
    "l3net_policy_global_active": SourcedMetric("gauge", "GlobalNetworkPolicies among l3net_policy_active."),
    "l3net_policy_rules": SourcedMetric("gauge", "Rules in this node's compiled policy program (all tables)."),
    "l3net_policy_chains": SourcedMetric("gauge", "Chains in this node's compiled policy program (all tables)."),
    "l3net_policy_ipsets": SourcedMetric("gauge", "ipsets in this node's compiled policy program."),
    "l3net_policy_ipset_members": SourcedMetric("gauge", "Members of all ipsets of the compiled policy program."),
    "l3net_policy_compile_seconds": SourcedMetric("gauge", "Wall time of the last policy compilation."),
    "l3net_policy_recompiled": SourcedMetric("gauge", "Policies recompiled by the last compilation (cache misses)."),
    "l3net_policy_ipv6_unpoliced_workloads": SourcedMetric(
        "gauge", "Local workloads with an IPv6 address: their IPv6 traffic is not policed (policy is IPv4 only)."),
    # felix.drivers.iptables.IptablesDriver.stats()
    "l3net_iptables_restore_calls": SourcedMetric("counter", "iptables-restore transactions run."),
    "l3net_iptables_restore_errors": SourcedMetric("counter", "iptables-restore transactions that failed."),
    "l3net_iptables_save_calls": SourcedMetric("counter", "iptables-save reads of the kernel's tables."),
    "l3net_iptables_save_errors": SourcedMetric("counter", "iptables-save reads that failed (retried, bounded)."),
    "l3net_iptables_lines_written": SourcedMetric("counter", "Lines written to iptables-restore."),
    "l3net_iptables_drift_repairs": SourcedMetric(
        "counter", "Re-reads that found l3net's chains or hooks changed behind its back (then repaired)."),
    "l3net_iptables_apply_seconds": SourcedMetric("gauge", "Wall time of the last iptables apply."),
    "l3net_iptables_restore_processes": SourcedMetric(
        "counter", "iptables-restore processes started for the long-lived restore session (nft backend)."),
    # felix.drivers.ipsets.IpsetDriver.stats()
    "l3net_ipset_restore_calls": SourcedMetric("counter", "ipset restore transactions run."),
    "l3net_ipset_restore_errors": SourcedMetric("counter", "ipset restore transactions that failed."),
    "l3net_ipset_destroys_deferred": SourcedMetric(
        "counter", "Unwanted ipsets left for a later apply because a rule still referenced them."),
    "l3net_ipset_processes": SourcedMetric(
        "counter", "ipset processes started for the long-lived ipset session."),
    "l3net_ipset_save_calls": SourcedMetric("counter", "ipset save reads of the kernel's sets."),
    "l3net_ipset_lines_written": SourcedMetric("counter", "Lines written to ipset restore."),
    "l3net_ipset_apply_seconds": SourcedMetric("gauge", "Wall time of the last ipset apply phase."),
    # l3net.syncer.Syncer counters
    "l3net_resyncs_completed": SourcedMetric(
        "counter", "Full datastore listings completed (the first snapshot included)."),
    "l3net_datastore_updates": SourcedMetric("counter", "Key updates received from the datastore."),
}


class SourcedCollector:
    """Exports, at scrape time, the values its sources report; owns nothing but the list of sources.

    A source is a callable returning ``{metric name: value}`` for names declared in
    :data:`SOURCED_METRICS`; it runs on the scrape thread, so it must only read
    (plain attributes or a finished dict). A name that is not declared is a bug:
    :meth:`collect` raises ValueError and the scrape fails visibly. A metric no
    source reports is not exported.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, Callable[[], Mapping[str, float]]] = {}

    def set_source(self, name: str, source: Callable[[], Mapping[str, float]] | None) -> None:
        """Add or replace (None: remove) the source called ``name``."""
        with self._lock:
            if source is None:
                self._sources.pop(name, None)
            else:
                self._sources[name] = source

    def values(self) -> dict[str, float]:
        with self._lock:
            sources = list(self._sources.values())
        out: dict[str, float] = {}
        for source in sources:
            for metric, value in source().items():
                if metric not in SOURCED_METRICS:
                    raise ValueError(f"{metric}: not declared in l3net.metrics.SOURCED_METRICS")
                out[metric] = float(value)
        return out

    @staticmethod
    def _family(name: str, value: float | None) -> Metric:
        spec = SOURCED_METRICS[name]
        family = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
        return family(name, spec.help, value=value)

    def describe(self) -> Iterator[Metric]:
        """Every declared name, so the registry refuses a second metric of the same name."""
        for name in SOURCED_METRICS:
            yield self._family(name, None)

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.values().items()):
            yield self._family(name, value)


SOURCED = SourcedCollector()
REGISTRY.register(SOURCED)

"""l3net.metrics: every Prometheus metric l3net exports, defined in one place.

Names are ``l3net_<subsystem>_<thing>``; ``docs/metrics.md`` maps each one to
its Felix equivalent. The metrics live in :data:`REGISTRY` (not the process
default registry) so that the agent exports exactly these and nothing a
library happened to register. Safe to update from any thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
ROUTE_RESYNC_TIME = Histogram(
    "l3net_route_table_resync_seconds", "Time to re-read the kernel routing table.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0), registry=REGISTRY)

# -- interfaces (felix.drivers.interfaces) --------------------------------
SYSCTL_WRITES = Counter("l3net_sysctl_writes", "Sysctl values written.", registry=REGISTRY)

# -- model ----------------------------------------------------------------
LOCAL_ENDPOINTS = Gauge(
    "l3net_active_local_endpoints", "Workload endpoints of this node in the datastore.", registry=REGISTRY)
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
DATASTORE_UPDATES = Counter(
    "l3net_datastore_updates", "Key updates received from the datastore.", registry=REGISTRY)

# -- BGP (fed by bgp.speaker's session events) ---------------------------
BGP_SESSION_UP = Gauge(
    "l3net_bgp_session_up", "1 when the BGP session with the peer is established.", ["peer"], registry=REGISTRY)
BGP_LEARNED_ROUTES = Gauge(
    "l3net_bgp_learned_routes", "Prefixes currently learned over BGP (after best path).", registry=REGISTRY)
BGP_ADVERTISEMENTS = Gauge(
    "l3net_bgp_advertisements", "Prefixes this node asks its BGP speaker to announce.", registry=REGISTRY)

# -- policy (fed by the iptables and ipset drivers) -----------------------
IPTABLES_RULES = Gauge("l3net_iptables_rules", "Rules in l3net's iptables chains, by table.", ["table"],
                       registry=REGISTRY)
IPTABLES_CHAINS = Gauge("l3net_iptables_chains", "l3net's iptables chains, by table.", ["table"],
                        registry=REGISTRY)
IPSETS = Gauge("l3net_ipsets", "ipsets owned by l3net.", registry=REGISTRY)

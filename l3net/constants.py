"""l3net.constants: every mark by which l3net recognises the kernel objects it owns.

One module, so that "is this mine?" has one answer everywhere (STYLE habit 2).
"""

from __future__ import annotations

# Kernel routes. Every route l3net writes (workload /32s, blackholes for affine
# blocks, prefixes learned over BGP) carries this protocol number; a route
# without it is never modified or deleted. 76 is unassigned in iproute2's
# rt_protos (Calico's Felix uses 80, BIRD 12, iproute2's "bgp" 186).
ROUTE_PROTO = 76
ROUTE_PROTO_NAME = "l3net"
MAIN_TABLE = 254
WORKLOAD_ROUTE_METRIC = 1024

# Workload interfaces: host side of the pod veth, exactly as Calico names it.
WORKLOAD_IFACE_PREFIX = "cali"
WORKLOAD_IFACE_HASH_LEN = 11
WORKLOAD_HOST_MAC = "ee:ee:ee:ee:ee:ee"
WORKLOAD_GATEWAY_V4 = "169.254.1.1"
WORKLOAD_POD_IFNAME = "eth0"

# iptables: our chains, hooked from the kernel chains by one rule each.
CHAIN_PREFIX = "l3n-"
RULE_HASH_COMMENT_PREFIX = "l3n:"
# ipsets: names are at most 31 characters.
IPSET_PREFIX = "l3n"

# Ports (Felix's numbers, so existing runbooks and probes carry over).
HEALTH_PORT = 9099
METRICS_PORT = 9091
BGP_PORT = 179

# BGP defaults (Calico's).
DEFAULT_AS_NUMBER = 64512
DEFAULT_BLOCK_SIZE_V4 = 26
DEFAULT_BLOCK_SIZE_V6 = 122
DEFAULT_MAX_BLOCKS_PER_HOST = 20

# Datastore.
DEFAULT_ETCD_PREFIX = "/l3net/v1/"

# The CNI shim's time.monotonic() at its start, passed to the plugin (in the agent or in-process): the ADD
# trace's origin. Here, not in the shim, so the plugin reads it without importing the shim (no cycle).
ENV_CNI_STARTED = "L3NET_CNI_STARTED"

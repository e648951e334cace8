"""l3net.ipam.report: ``ipam check`` and ``ipam show`` — a read-only audit of the IPAM records.

Reads blocks, affinities, handles, sticky holds, WorkloadEndpoints and Nodes at
one point in time (several list calls; a check racing with allocations can show
a transient leak, like Calico's, which is why the GC confirms before releasing).
Never writes.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from l3net.datastore.base import Datastore, KeyValue
from l3net.errors import ValidationError
from l3net.ipam.block import Block, host_affinity
from l3net.ipam.handle import STICKY_HANDLE_PREFIX, Handle
from l3net.ipam.pools import Pool
from l3net.keys import KeyLayout
from l3net.model.decode import Invalid, decode
from l3net.model.workload_spec import workload_spec

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Allocation:
    ip: str
    handle: str | None
    block: str
    block_node: str | None
    node: str | None
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class BlockUsage:
    cidr: str
    affinity: str | None
    size: int
    in_use: int


@dataclass(frozen=True)
class PoolUsage:
    name: str
    cidr: str
    disabled: bool
    size: int
    in_use: int
    blocks: int


@dataclass
class IPAMReport:
    """What ``ipam check`` found. ``ok`` is False when anything needs an operator (borrowing is informational)."""

    pools: list[PoolUsage] = field(default_factory=list)
    blocks: list[BlockUsage] = field(default_factory=list)
    allocations: list[Allocation] = field(default_factory=list)
    leaks: list[Allocation] = field(default_factory=list)
    double_allocations: list[str] = field(default_factory=list)
    orphaned_affinities: list[str] = field(default_factory=list)
    missing_allocations: list[str] = field(default_factory=list)
    inconsistencies: list[str] = field(default_factory=list)
    borrowed: list[Allocation] = field(default_factory=list)
    held: list[Allocation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.leaks or self.double_allocations or self.orphaned_affinities or self.missing_allocations
                    or self.inconsistencies)

    def problems(self) -> list[str]:
        out = [f"leaked address {a.ip} (handle {a.handle}, block {a.block}, node {a.node}): no WorkloadEndpoint "
               "uses it" for a in self.leaks]
        out += [f"double allocation: {d}" for d in self.double_allocations]
        out += [f"orphaned affinity: {o}" for o in self.orphaned_affinities]
        out += [f"missing allocation: {m}" for m in self.missing_allocations]
        out += [f"inconsistent: {i}" for i in self.inconsistencies]
        return out

    def to_dict(self) -> dict[str, Any]:
        def alloc(a: Allocation) -> dict[str, Any]:
            return {"ip": a.ip, "handle": a.handle, "block": a.block, "blockNode": a.block_node, "node": a.node}
        return {"ok": self.ok, "allocations": len(self.allocations),
                "leaks": [alloc(a) for a in self.leaks], "doubleAllocations": self.double_allocations,
                "orphanedAffinities": self.orphaned_affinities, "missingAllocations": self.missing_allocations,
                "inconsistencies": self.inconsistencies, "borrowed": [alloc(a) for a in self.borrowed],
                "held": [alloc(a) for a in self.held]}


def _workload_ips(ds: Datastore, keys: KeyLayout) -> dict[str, list[tuple[str, str | None]]]:
    """ip -> [(WorkloadEndpoint key, containerID)], from the model's typed spec of each stored endpoint.

    A stored value the model refuses is absent (logged), as it is to the agent: its addresses are in use by
    no endpoint the cluster acts on.
    """
    kvs, _ = ds.list(keys.resource_dir("workloadendpoints"))
    out: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for kv in kvs:
        res = decode(keys, kv.key, kv.value, kv.mod_revision)
        if isinstance(res, Invalid):
            _log.warning("skipping malformed WorkloadEndpoint key=%s error=%s", kv.key, res)
            continue
        spec = workload_spec(res)
        for net in spec.ip_networks:
            out[str(net.network_address)].append((kv.key, spec.container_id))
    return out


def build_report(ds: Datastore, keys: KeyLayout, pools: list[Pool], now: float) -> IPAMReport:
    """Audit the IPAM records under ``keys`` against the WorkloadEndpoints, the Nodes and ``pools`` at ``now``."""
    report = IPAMReport()
    block_kvs, _ = ds.list(keys.blocks)
    aff_kvs, _ = ds.list(keys.affinities)
    handle_kvs, _ = ds.list(keys.handles)
    node_kvs, _ = ds.list(keys.resource_dir("nodes"))
    nodes = {keys.parse_resource(kv.key)[2] for kv in node_kvs if keys.parse_resource(kv.key)}  # type: ignore[index]
    weps = _workload_ips(ds, keys)

    blocks = _audit_blocks(report, block_kvs)
    by_ip, handle_counts = _audit_allocations(report, blocks, weps, now)
    _audit_ip_users(report, by_ip, weps)
    _audit_handles(report, keys, handle_kvs, handle_counts)
    _audit_affinities(report, keys, aff_kvs, blocks, nodes)
    _audit_pools(report, pools)
    return report


def _audit_blocks(report: IPAMReport, block_kvs: list[KeyValue]) -> dict[str, Block]:
    """Parse the blocks (an unparsable one is an inconsistency) and record their usage; cidr -> Block."""
    blocks: dict[str, Block] = {}
    for kv in block_kvs:
        try:
            b = Block.from_json(kv.value, kv.key)
        except ValidationError as exc:
            report.inconsistencies.append(str(exc))
            continue
        blocks[str(b.cidr)] = b
        report.blocks.append(BlockUsage(str(b.cidr), b.affinity, b.cidr.num_addresses,
                                        b.cidr.num_addresses - len(b.unallocated)))
        allocated = {o for o, a in enumerate(b.allocations) if a is not None}
        free = b.unallocated
        if len(set(free)) != len(free) or allocated & set(free) or \
                len(allocated) + len(set(free)) != b.cidr.num_addresses:
            report.inconsistencies.append(f"block {b.cidr}: allocations and unallocated disagree")
    return blocks


def _audit_allocations(report: IPAMReport, blocks: dict[str, Block],
                       weps: dict[str, list[tuple[str, str | None]]],
                       now: float) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Classify every allocated address (held, leaked, borrowed); returns ip -> [cidr] and handle -> cidr -> count."""
    by_ip: dict[str, list[str]] = defaultdict(list)
    handle_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cidr, b in blocks.items():
        for ip, handle, attrs in b.allocated():
            a = Allocation(ip, handle, cidr, b.node, attrs.get("node"), attrs)
            report.allocations.append(a)
            by_ip[ip].append(cidr)
            if handle:
                handle_counts[handle][cidr] += 1
            _classify_allocation(report, a, b, weps.get(ip, []), now)
    return by_ip, handle_counts


def _classify_allocation(report: IPAMReport, a: Allocation, b: Block, users: list[tuple[str, str | None]],
                         now: float) -> None:
    """File one allocation as held, leaked and/or borrowed."""
    if a.handle and a.handle.startswith(STICKY_HANDLE_PREFIX):
        until = a.attrs.get("heldUntil")
        if isinstance(until, int | float) and now <= until:
            report.held.append(a)
        else:
            report.leaks.append(a)  # an expired hold nobody collected
        return
    cid = a.attrs.get("containerID")
    if not users or (cid and not any(c in (None, cid) for _, c in users)):
        report.leaks.append(a)
    if a.node and b.node != a.node:
        report.borrowed.append(a)


def _audit_ip_users(report: IPAMReport, by_ip: dict[str, list[str]],
                    weps: dict[str, list[tuple[str, str | None]]]) -> None:
    """An address in two blocks or used by two endpoints is a double allocation; one used but absent is missing."""
    for ip, cidrs in by_ip.items():
        if len(cidrs) > 1:
            report.double_allocations.append(f"{ip} is allocated in blocks {', '.join(cidrs)}")
    for ip, users in weps.items():
        if len(users) > 1:
            report.double_allocations.append(f"{ip} is used by {', '.join(k for k, _ in users)}")
        if ip not in by_ip:
            report.missing_allocations.append(f"{ip} is used by {users[0][0]} but not allocated in IPAM")


def _audit_handles(report: IPAMReport, keys: KeyLayout, handle_kvs: list[KeyValue],
                   handle_counts: dict[str, dict[str, int]]) -> None:
    """Each handle record must count exactly what the blocks hold for it."""
    stored: dict[str, dict[str, int]] = {}
    for kv in handle_kvs:
        hid = kv.key[len(keys.handles):]
        stored[hid] = Handle.from_kv(kv, hid).blocks
    for hid in sorted(set(stored) | set(handle_counts)):
        want = {c: n for c, n in handle_counts.get(hid, {}).items() if n}
        if stored.get(hid, {}) != want:
            report.inconsistencies.append(f"handle {hid}: record says {stored.get(hid, {})}, blocks hold {want}")


def _audit_affinities(report: IPAMReport, keys: KeyLayout, aff_kvs: list[KeyValue], blocks: dict[str, Block],
                      nodes: set[str]) -> None:
    """Each affinity must name an existing block of that node, and each affine block must hold an affinity."""
    affine: set[tuple[str, str]] = set()
    for kv in aff_kvs:
        parsed = keys.parse_affinity(kv.key)
        if parsed is None:
            report.inconsistencies.append(f"unparsable affinity key {kv.key}")
            continue
        node, cidr = parsed
        affine.add((node, cidr))
        problem = _affinity_problem(node, blocks.get(cidr), nodes)
        if problem:
            report.orphaned_affinities.append(f"node {node} -> {cidr}: {problem}")
    for cidr, b in blocks.items():
        if b.node and (b.node, cidr) not in affine:
            report.inconsistencies.append(f"block {cidr} names {b.affinity} but that node holds no affinity for it")


def _affinity_problem(node: str, b: Block | None, nodes: set[str]) -> str | None:
    """Why the affinity of ``node`` for block ``b`` is orphaned, or None when it is sound."""
    if b is None:
        return "the block does not exist"
    if b.affinity != host_affinity(node):
        return f"the block belongs to {b.affinity}"
    if node not in nodes:
        return f"no Node resource named {node}"
    return None


def block_in_pool(block_cidr: str, pool: IPNetwork) -> bool:
    """Is the block ``block_cidr`` inside ``pool`` (never across families: ``subnet_of`` raises TypeError there)?"""
    net = ipaddress.ip_network(block_cidr)
    return net.version == pool.version and net.subnet_of(pool)  # type: ignore[arg-type]


def _audit_pools(report: IPAMReport, pools: list[Pool]) -> None:
    """Sum the block usage inside each pool."""
    for p in pools:
        mine = [u for u in report.blocks if block_in_pool(u.cidr, p.cidr)]
        report.pools.append(PoolUsage(p.name, str(p.cidr), p.disabled, p.cidr.num_addresses,
                                      sum(u.in_use for u in mine), len(mine)))

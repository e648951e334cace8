"""l3net.lab.summary: what ``lab up`` prints once a lab runs (nodes, addresses, etcd, next commands)."""

from __future__ import annotations

from collections.abc import Callable

from l3net.lab import state as st
from l3net.lab.topology import Topology


def summary_lines(state: st.LabState, topo: Topology) -> list[str]:
    data = state.data
    lines = [f"lab {topo.name}: {len(topo.nodes)} nodes, {len(topo.links)} links (run dir {state.dir})",
             f"  {'NODE':<12} {'KIND':<7} {'ROLE':<16} {'MGMT eth0':<18} {'NAMESPACE'}"]
    for name, rec in data["nodes"].items():
        lines.append(f"  {name:<12} {rec['kind']:<7} {rec.get('role') or '-':<16} {rec.get('mgmt') or '-':<18} "
                     f"{rec['netns']}")
        node = topo.nodes[name]
        addrs = [f"{ep.iface} {ep.ipv4}" for li in topo.links for ep in (li.a, li.b)
                 if ep.node == name and ep.ipv4]
        if addrs:
            lines.append(f"  {'':<12} links: " + ", ".join(addrs))
        del node
    lines += [
        f"  etcd: {state.etcd_endpoints}",
        "",
        "Use it:",
        f"  export L3NET_ETCD_ENDPOINTS={state.etcd_endpoints.split(',')[0]}",
        "  .venv/bin/l3netctl node status",
        "  .venv/bin/l3net lab pod add NODE default/web --label app=web",
        "  .venv/bin/l3net lab exec NODE -- ip route",
        "  .venv/bin/l3net lab status",
        f"  .venv/bin/l3net lab down {topo.path}",
    ]
    return lines


def print_summary(state: st.LabState, topo: Topology, out: Callable[[str], None] = print) -> None:
    for line in summary_lines(state, topo):
        out(line)

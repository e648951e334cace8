"""bench.policyload: NetworkPolicy load for the benchmarks, compiled and applied by l3net's own code.

The resources are built here (shaped as the model hands them over) and compiled by
``policy.compiler.compile_policy`` (pure). Applying goes through felix's
iptables and ipsets drivers (:func:`apply_with_felix`); the baseline is a bare
``ipset restore`` + ``iptables-restore --noflush`` of the very same program
(:func:`render_restore`, :func:`render_ipsets`, :func:`apply_bare`).
All commands run inside the given namespace (``ip netns exec``), never in the root one.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.framework import Workspace
from bench.resources import netpol, ns, wep
from bench.topology import Node, Workload
from felix.drivers import ipsets as ipsets_driver
from felix.drivers import iptables as iptables_driver
from l3net import netns
from policy.compiler import PolicyCompiler, compile_policy

_log = logging.getLogger(__name__)

K8S_NAMESPACE = "bench"


def endpoint(ws: Workspace, wl: Workload, labels: dict[str, str]) -> Any:
    """The WorkloadEndpoint of a bench workload (its interfaceName is the cali veth the topology made)."""
    res = wep(f"{ws.tag}-{wl.name}", K8S_NAMESPACE, wl.node.name, wl.ip, labels)
    if res.spec["interfaceName"] != wl.host_if:
        raise RuntimeError(f"interface name mismatch: the model's veth name is {res.spec['interfaceName']}, "
                           f"the topology made {wl.host_if}")
    return res


def dataplane_policies(count: int) -> list[Any]:
    """``count`` policies selecting ``pair=yes``; all but the last allow only ports the test never uses,
    the last allows the pair everything, so a flow's first packet walks every policy chain."""
    pair = {"matchLabels": {"pair": "yes"}}
    out = []
    for i in range(count):
        last = i == count - 1
        peer = [{"podSelector": pair}]
        ingress: dict[str, Any] = {"from": peer}
        egress: dict[str, Any] = {"to": peer}
        if not last:
            port = [{"protocol": "TCP", "port": 20000 + i}]
            ingress["ports"] = port
            egress["ports"] = port
        out.append(netpol(f"pol-{i:03d}", K8S_NAMESPACE, {
            "podSelector": pair, "policyTypes": ["Ingress", "Egress"], "ingress": [ingress], "egress": [egress]}))
    return out


def program_for(local: Sequence[Any], everyone: Sequence[Any], policies: Sequence[Any], *,
                compiler: PolicyCompiler | None = None) -> Any:
    """The node's policy program. ``compiler``: whose caches to use (None: a fresh one, a cold compile;
    pass the same :class:`PolicyCompiler` again to time a warm one)."""
    return compile_policy(local, everyone, policies, [ns(K8S_NAMESPACE, {"name": K8S_NAMESPACE})],
                          compiler=compiler)


# -- applying -------------------------------------------------------------------
def render_ipsets(program: Any) -> str:
    """``ipset restore`` text creating every set of the program with its members."""
    lines = []
    for name, (kind, members) in sorted(program.ipsets.items()):
        lines.append(f"create {name} {kind} family inet -exist")
        lines += [f"add {name} {m} -exist" for m in sorted(members)]
    return "\n".join(lines) + "\n"


def render_restore(program: Any) -> dict[str, str]:
    """``iptables-restore --noflush`` text per table: our chains, their rules, one hook per kernel chain."""
    out = {}
    for table in sorted(set(program.chains) | set(program.hooks)):
        chains = program.chains.get(table, {})
        lines = [f"*{table}"]
        lines += [f":{c} - [0:0]" for c in sorted(chains)]
        for c, rules in sorted(chains.items()):
            lines += [f"-A {c} {r}" for r in rules]
        for kernel_chain, rules in sorted(program.hooks.get(table, {}).items()):
            lines += [f"-I {kernel_chain} {i + 1} {r}" for i, r in enumerate(rules)]
        lines.append("COMMIT")
        out[table] = "\n".join(lines) + "\n"
    return out


def apply_bare(ns: str, program: Any) -> None:
    """The limit: one ``ipset restore`` and one ``iptables-restore --noflush`` per table, nothing else."""
    _run(ns, ["ipset", "restore"], render_ipsets(program))
    for _table, text in render_restore(program).items():
        _run(ns, ["iptables-restore", "--noflush"], text)


def _run(ns: str, cmd: list[str], text: str) -> None:
    out = netns.run(ns, cmd, input=text, check=False, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {ns} failed: {out.stderr.strip()[:500]}")


class FelixPolicyDataplane:
    """felix's two policy drivers for one namespace, kept across applies as the running agent keeps them.

    A new instance reads the kernel's state on its first apply (as after an agent start);
    later applies diff against what it wrote, which is the path of every change an agent makes.
    """

    def __init__(self, ns: str) -> None:
        runner = iptables_driver.netns_runner(ns)
        self.ipsets = ipsets_driver.IpsetDriver(runner)
        self.iptables = iptables_driver.IptablesDriver(runner)

    def apply(self, program: Any) -> int:
        """ipsets add, iptables, ipsets delete (as ``felix.dataplane.Dataplane.apply_policy`` does: iptables
        alongside the ipset restore when that only moves members); the number of restore transactions written."""
        writes = self.ipsets.apply_adds(program.ipsets, then=lambda: self.iptables.apply_program(program))
        writes += self.ipsets.apply_deletes(program.ipsets)
        return writes

    def close(self) -> None:
        """End the drivers' long-lived restore processes (before the namespace goes)."""
        self.iptables.close()
        self.ipsets.close()


def apply_with_felix(ns: str, program: Any) -> int:
    """Apply ``program`` in ``ns`` with fresh drivers (as after an agent start); restore transactions written."""
    dataplane = FelixPolicyDataplane(ns)
    try:
        return dataplane.apply(program)
    finally:
        dataplane.close()


def install_dataplane_policies(ws: Workspace, n1: Node, w1: Workload, n2: Node, w2: Workload, *,
                               count: int, others: Sequence[Workload] = (), bare: bool = False) -> dict[str, Any]:
    """``count`` policies selecting the pair ``w1``/``w2``, applied by felix on both nodes.

    ``others`` (the routed and VXLAN workloads) are local endpoints too, as on a real node: their
    traffic crosses l3n's dispatch chains, and no policy selects them. ``bare``: the very same
    compiled programs loaded by :func:`apply_bare` (ipset restore + iptables-restore) instead of felix.
    """
    peps = {w1.name: endpoint(ws, w1, {"pair": "yes"}), w2.name: endpoint(ws, w2, {"pair": "yes"})}
    oeps = {o.name: endpoint(ws, o, {"pair": "no"}) for o in others}
    everyone = [*peps.values(), *oeps.values()]
    policies = dataplane_policies(count)
    summary: dict[str, Any] = {"policies": count, "selecting": [w1.name, w2.name],
                               "applied_by": "ipset restore + iptables-restore --noflush" if bare else "felix drivers"}
    for node, wl in ((n1, w1), (n2, w2)):
        local = [peps[wl.name]] + [oeps[o.name] for o in others if o.node is node]
        program = program_for(local, everyone, policies)
        if bare:
            apply_bare(node.ns, program)
        else:
            apply_with_felix(node.ns, program)
        summary[f"{node.name}_rules"] = program.rule_count
        summary[f"{node.name}_ipsets"] = len(program.ipsets)
    _check_chains(n1.ns)
    return summary


def _check_chains(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "filter"], capture_output=True,
                         text=True, check=True)
    if "l3n-" not in out.stdout:
        raise RuntimeError(f"no l3n- chains in {ns} after applying policy")

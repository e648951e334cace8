"""bench.policy_scale: 1,000 policies and 100 workloads on a node, applied by felix vs a bare iptables-restore.

One node's policy program (100 local workloads, 100 more on another node feeding the selector
ipsets, 1,000 NetworkPolicies) is applied, in a fresh namespace per sample, interleaved:
  felix   policy.compiler.compile_policy + felix's ipsets and iptables drivers (what the agent does)
  bare    ``ipset restore`` + ``iptables-restore --noflush`` of the very same program (the limit)
Then, with that load present in felix's namespace: one workload added, one label changed
(recompile + apply each). Every sample is checked: the namespace must hold exactly the
program's l3n- rules afterwards.
Targets (issue 8): full <= 2 x bare; one change <= 50 ms.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bench import policyload
from bench.framework import Context, Result, interleaved, need_binary, need_root
from l3net import netns
from policy import testing as builders

_log = logging.getLogger(__name__)

NAME = "policy_scale"
TITLE = "policy scale: 1,000 policies x 100 workloads, felix apply vs bare iptables-restore; one change"
NEEDS = ["root", "iptables-restore", "iptables-save", "ipset"]
TARGET_FULL_RATIO = 2.0
TARGET_CHANGE_MS = 50.0


def workloads(count: int, node: str, base: int) -> list[Any]:
    """``count`` endpoints on ``node`` with labels spread over 20 apps and 5 tiers."""
    out = []
    for i in range(count):
        n = base + i
        out.append(builders.wep(f"pod-{node}-{i}", policyload.K8S_NAMESPACE, node,
                         f"10.{60 + n // 60000}.{(n // 250) % 240}.{n % 250 + 1}",
                         {"app": f"app{i % 20}", "tier": f"t{i % 5}"}))
    return out


def policies(count: int) -> list[Any]:
    """A realistic mix: each selects one app; ingress from a tier on one port; every third also egress to a CIDR."""
    out = []
    for j in range(count):
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": {"app": f"app{j % 20}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": f"t{j % 5}"}}}],
                         "ports": [{"protocol": "TCP", "port": 1000 + j}]}],
        }
        types = ["Ingress"]
        if j % 3 == 0:
            spec["egress"] = [{"to": [{"ipBlock": {"cidr": f"172.{16 + j % 16}.0.0/16"}}],
                               "ports": [{"protocol": "UDP", "port": 53}]}]
            types.append("Egress")
        spec["policyTypes"] = types
        out.append(builders.netpol(f"np-{j:04d}", policyload.K8S_NAMESPACE, spec))
    return out


def _rule_count(ns: str) -> int:
    total = 0
    for table in ("filter", "raw"):
        out = netns.run(ns, ["iptables-save", "-t", table])
        total += sum(1 for line in out.stdout.splitlines() if line.startswith("-A l3n-"))
    return total


def _check(ns: str, program: Any, variant: str) -> None:
    have = _rule_count(ns)
    if have != program.rule_count:
        raise RuntimeError(f"{variant}: {have} l3n- rules in {ns}, the program has {program.rule_count}")


def run(ctx: Context) -> Result:
    need_root()
    for binary in ("iptables-restore", "iptables-save", "ipset"):
        need_binary(binary)
    n_pol = ctx.size(1000, 50)
    n_wl = ctx.size(100, 10)
    rounds = ctx.size(3, 1)
    local = workloads(n_wl, "node-a", 0)
    remote = workloads(n_wl, "node-b", n_wl)
    pols = policies(n_pol)
    res = Result(NAME, TITLE, ctx.quick)
    t0 = time.perf_counter()
    program = policyload.program_for(local, local + remote, pols)
    compile_s = time.perf_counter() - t0
    res.setup.update({"policies": n_pol, "local_workloads": n_wl, "remote_workloads": n_wl, "rounds": rounds,
                      "rules": program.rule_count, "ipsets": len(program.ipsets),
                      "ipset_members": program.ipset_members, "backend": _backend()})
    for rnd, variant in interleaved(rounds, ["felix", "bare"]):
        ns = ctx.workspace.netns(f"r{rnd}{variant[0]}")
        if variant == "bare":
            t0 = time.perf_counter()
            policyload.apply_bare(ns, program)
            elapsed = time.perf_counter() - t0
        else:
            dataplane = policyload.FelixPolicyDataplane(ns)
            t0 = time.perf_counter()
            prog = policyload.program_for(local, local + remote, pols)
            dataplane.apply(prog)
            elapsed = time.perf_counter() - t0
        _check(ns, program, variant)
        res.sample("full_apply_s", variant, elapsed, unit="s", better="lower")
        _log.info("policy full apply round=%d variant=%s seconds=%.3f", rnd, variant, elapsed)
        if variant == "felix":
            _one_changes(res, ns, dataplane, local, remote, pols)
        ctx.workspace.drop_netns(ns)
    res.sample("compile_s", "felix", compile_s, unit="s", better="lower")
    res.ratio("felix/bare full apply time", "full_apply_s", "felix", "bare", op="<=", threshold=TARGET_FULL_RATIO)
    for metric in ("workload_add_ms", "label_change_ms"):
        res.target(f"{metric} (p50)", res.median(metric, "felix"), unit="ms", op="<=", threshold=TARGET_CHANGE_MS)
    return res


def _one_changes(res: Result, ns: str, dataplane: policyload.FelixPolicyDataplane, local: list[Any],
                 remote: list[Any], pols: list[Any]) -> None:
    """With the full load applied: add one local workload, then change one workload's labels.

    Through the same long-lived drivers that did the full apply: the running agent's path.
    """
    extra = builders.wep("pod-new", policyload.K8S_NAMESPACE, "node-a", "10.59.0.1", {"app": "app3", "tier": "t1"})
    t0 = time.perf_counter()
    added = policyload.program_for([*local, extra], [*local, extra, *remote], pols)
    dataplane.apply(added)
    res.sample("workload_add_ms", "felix", (time.perf_counter() - t0) * 1000, unit="ms", better="lower")
    _check(ns, added, "felix workload add")
    relabelled = builders.wep("pod-new", policyload.K8S_NAMESPACE, "node-a", "10.59.0.1", {"app": "app4", "tier": "t2"})
    t0 = time.perf_counter()
    changed = policyload.program_for([*local, relabelled], [*local, relabelled, *remote], pols)
    dataplane.apply(changed)
    res.sample("label_change_ms", "felix", (time.perf_counter() - t0) * 1000, unit="ms", better="lower")
    _check(ns, changed, "felix label change")


def _backend() -> str:
    from bench.framework import tool_version

    return tool_version(["iptables-restore", "--version"])

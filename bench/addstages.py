"""bench.addstages: one ADD's stage timings from the agent's trace, plus the ends only the bench sees.

The origin agent's ``/debug/traces`` (``felix.addtrace``) times an ADD from the shim's
start to the advertisement written to ExaBGP. The bench adds what lies outside it,
all on the host's one monotonic clock (netns share it):

  lab_exec        bench clock start -> the shim's start (the lab's pod bookkeeping, netns
                  create, fork/exec of ``ip netns exec`` and of the shim's interpreter)
  ... the agent's stages ...
  remote_install  advertisement written to ExaBGP -> the /26 in the remote kernel (ExaBGP,
                  the reflector, the remote ExaBGP and agent, its route apply)

Which agent stages lie on the path to the remote route depends on what announced the
/26. A new block is announced from IPAM's block claim (the trace's ``block`` branch),
in parallel with ``wire`` and ``endpoint_write``; then the path is ``cni_start``,
``block_claim`` (the agent's first mark -> the claim delivered to the sync loop: IPAM up
to its block claim, etcd, the watch), ``block_coalesce``, ``block_calculation``,
``block_apply``, ``block_announce``. Without a block branch the endpoint's chain
(``felix.addtrace.STAGES``) is the path. Either way the stages of a sample add up to its
``add_to_route_ms``.

The ADD's own return (``add_call_ms``: the plugin holds its result until the agent has
programmed the pod) follows the trace's policy branch: ``lab_exec``, the pod's chain up
to ``watch_delivery``, ``policy_coalesce``, ``policy_route_wait``, ``policy_calculation``,
``policy_apply``, then ``release`` (-> the ADD returned: the agent's report of the apply,
the held request's wake-up, or the route side when it came later, the result, the
shim's exit and the lab's record of the pod). Pure: unit-tested on synthetic traces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.framework import Result, percentile

FIRST, LAST, RELEASE = "lab_exec", "remote_install", "release"
BLOCK_NAMES = {"watch_delivery": "block_claim", "coalesce": "block_coalesce", "calculation": "block_calculation",
               "apply": "block_apply", "bgp_announce": "block_announce"}


def find_trace(doc: Mapping[str, Any], trace_id: str) -> dict[str, Any] | None:
    """The finished trace ``trace_id`` in a ``/debug/traces`` document, or None."""
    for tr in doc.get("finished") or []:
        if isinstance(tr, dict) and tr.get("id") == trace_id and tr.get("complete"):
            return tr
    return None


def endpoint_ms(trace: Mapping[str, Any]) -> dict[str, float]:
    """The endpoint chain's stages (shim start -> the pod's endpoint announced), in ms."""
    return {str(st["stage"]): float(st["seconds"]) * 1000 for st in trace["stages"]}


def policy_ms(trace: Mapping[str, Any], t0: float, returned: float) -> dict[str, float] | None:
    """stage -> ms from the bench's clock start to the ADD's return, through the policy branch; None when the
    trace's policy branch is not complete (the hold timed out, or the agent served no hold)."""
    if not trace.get("policy_complete"):
        return None
    out = {FIRST: (float(trace["start_mono"]) - t0) * 1000}
    last = float(trace["start_mono"])
    for st in trace["stages"]:
        out[str(st["stage"])] = float(st["seconds"]) * 1000
        last = float(st["mono"])
        if st["stage"] == "watch_delivery":
            break
    else:
        return None
    for st in trace["policy"]:
        out[f"policy_{st['stage']}"] = (float(st["mono"]) - last) * 1000
        last = float(st["mono"])
    out[RELEASE] = (returned - last) * 1000
    return out


def _announced_by_block(trace: Mapping[str, Any]) -> bool:
    block = {st["stage"]: float(st["mono"]) for st in trace.get("block") or []}
    if "bgp_announce" not in block:
        return False
    ep = {st["stage"]: float(st["mono"]) for st in trace["stages"]}
    return block["bgp_announce"] <= ep.get("bgp_announce", float("inf"))


def stage_ms(trace: Mapping[str, Any], t0: float, seen_remote: float) -> dict[str, float]:
    """stage -> ms along the path that put the /26 in the remote kernel: ``lab_exec`` ... ``remote_install``.

    ``t0``: the bench's clock start; ``seen_remote``: the remote kernel's stamp (both time.monotonic()).
    """
    start = float(trace["start_mono"])
    out = {FIRST: (start - t0) * 1000}
    if _announced_by_block(trace):
        first = trace["stages"][0]  # cni_start: the agent's plugin began
        out[str(first["stage"])] = float(first["seconds"]) * 1000
        last = float(first["mono"])
        for st in trace["block"]:
            out[BLOCK_NAMES[str(st["stage"])]] = (float(st["mono"]) - last) * 1000
            last = float(st["mono"])
    else:
        last = start
        for st in trace["stages"]:
            out[str(st["stage"])] = float(st["seconds"]) * 1000
            last = float(st["mono"])
    out[LAST] = (seen_remote - last) * 1000
    return out


def stage_table(samples: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    """Per stage (in the order first seen): n, p50, p99 and mean share of the whole, in ms."""
    order: list[str] = []
    for s in samples:
        order += [k for k in s if k not in order]
    totals = [sum(s.values()) for s in samples]
    rows = []
    for name in order:
        vals = [s[name] for s in samples if name in s]
        shares = [s[name] / t for s, t in zip(samples, totals, strict=True) if name in s and t > 0]
        rows.append({"stage": name, "n": len(vals), "p50_ms": round(percentile(vals, 50), 3),
                     "p99_ms": round(percentile(vals, 99), 3),
                     "share": round(sum(shares) / len(shares), 4) if shares else None})
    return rows


def declare_stages(res: Result, stage_samples: Mapping[str, list[dict[str, Any]]]) -> None:
    """Per-sample stage timings into the JSON (``stage_samples``) and a per-stage p50/p99 table per variant
    (a variant: a path, or a node size)."""
    res.extra["stage_samples"] = stage_samples
    for field, title in (("stages_ms", "ADD -> remote route, stage by stage along its path (ms; they add up to "
                                       "add_to_route_ms; block_*: the new block's branch, see bench/README.md)"),
                         ("endpoint_stages_ms", "ADD -> the pod's endpoint applied and announced by the origin "
                                                "agent (ms; felix.addtrace stages)"),
                         ("policy_stages_ms", "ADD -> the pod policed and the ADD returned (ms; they add up to "
                                              "add_call_ms; policy_*: the agent's policy side)")):
        rows = []
        for variant, samples in stage_samples.items():
            with_field = [s[field] for s in samples if s.get(field)]
            if not with_field:
                continue
            for row in stage_table(with_field):
                share = "-" if row["share"] is None else f"{row['share'] * 100:.1f} %"
                rows.append([variant, row["stage"], str(row["n"]), f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}",
                             share])
        if rows:
            res.tables.append({"title": title, "columns": ["variant", "stage", "n", "p50", "p99", "mean share"],
                               "rows": rows})

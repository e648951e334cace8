"""bench.addstages: one ADD's stage timings from the agent's trace, plus the ends only the bench sees.

The origin agent's ``/debug/traces`` (``felix.addtrace``) times an ADD from the shim's
start to the advertisement written to ExaBGP. The bench adds what lies outside it,
all on the host's one monotonic clock (netns share it):

  lab_exec        bench clock start -> the shim's start (the lab's pod bookkeeping, netns
                  create, fork/exec of ``ip netns exec`` and of the shim's interpreter)
  ... the agent's stages (felix.addtrace.STAGES) ...
  remote_install  advertisement written to ExaBGP -> the /26 in the remote kernel (ExaBGP,
                  the reflector, the remote ExaBGP and agent, its route apply)

so the stages of one sample add up to its ``add_to_route_ms``. Pure: unit-tested on
synthetic traces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.framework import percentile

FIRST, LAST = "lab_exec", "remote_install"


def find_trace(doc: Mapping[str, Any], trace_id: str) -> dict[str, Any] | None:
    """The finished trace ``trace_id`` in a ``/debug/traces`` document, or None."""
    for tr in doc.get("finished") or []:
        if isinstance(tr, dict) and tr.get("id") == trace_id and tr.get("complete"):
            return tr
    return None


def stage_ms(trace: Mapping[str, Any], t0: float, seen_remote: float) -> dict[str, float]:
    """stage -> milliseconds for one sample, in path order: ``lab_exec``, the trace's stages, ``remote_install``.

    ``t0``: the bench's clock start; ``seen_remote``: the remote kernel's stamp (both time.monotonic()).
    """
    out = {FIRST: (float(trace["start_mono"]) - t0) * 1000}
    last = float(trace["start_mono"])
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

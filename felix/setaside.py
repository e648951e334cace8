"""felix.setaside: one operator view of every object the agent sets aside, whatever set it aside.

Three causes, one list (published as ``quarantined`` in ``status/<node>/agent``, printed by
``l3netctl node status``):

* ``kernel refused``: an object the kernel refused, quarantined by :mod:`felix.quarantine`
  (effect ``last good version``, ``absent`` or ``fail closed``);
* ``invalid value``: a datastore value that does not decode or validate, which the model treats
  as absent (:attr:`felix.calc.Model.invalid`; effect ``absent (invalid)``). A WorkloadEndpoint
  among them gets no route and no chains, so its interface, if it exists, is dropped by the
  dispatch chains' last rule;
* ``rejected``: a local endpoint the calculation skips (an address outside every IPPool,
  ``DesiredState.rejected_workloads``; effect ``no route, no policy (fail closed)``).

Each entry keeps the time it was first seen with the same effect and reason. The lists of the
second and third causes are bounded (:data:`MAX_PER_CAUSE`); the metrics
``l3net_datastore_invalid_values`` and ``l3net_rejected_local_endpoints`` count them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from felix.calc import Model, outside_pools, pool_index
from l3net.keys import KeyLayout
from l3net.model.resource import KINDS_BY_PLURAL

_log = logging.getLogger(__name__)

__all__ = ["EFFECT_INVALID", "EFFECT_REJECTED", "MAX_PER_CAUSE", "SetAside", "describe_key"]

EFFECT_INVALID = "absent (invalid)"
EFFECT_REJECTED = "no route, no policy (fail closed)"
# The status record is rewritten on every apply: a cluster full of bad values must not make it huge.
MAX_PER_CAUSE = 100
_REASON_MAX = 300


def describe_key(keys: KeyLayout, key: str) -> tuple[str, str]:
    """``(kind, ref)`` of a datastore key, ref as :func:`felix.quarantine.object_ref` names objects.

    Derived from the key alone: an invalid value has no trustworthy content to name it by.
    """
    parsed = keys.parse_resource(key)
    if parsed is not None:
        plural, namespace, name = parsed
        kind = KINDS_BY_PLURAL[plural].kind if plural in KINDS_BY_PLURAL else plural
        return kind, f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    affinity = keys.parse_affinity(key)
    if affinity is not None:
        return "BlockAffinity", f"BlockAffinity/{affinity[0]}/{affinity[1]}"
    return "Key", key


class SetAside:
    """Builds the combined list and remembers since when each entry has stood. Loop thread only."""

    def __init__(self, keys: KeyLayout, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self._since: dict[tuple[str, str, str], float] = {}

    def report(self, model: Model, rejected: Iterable[str],
               kernel: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Kernel refusals (already described), then invalid values, then rejected local endpoints."""
        out = [{**e, "cause": "kernel refused"} for e in kernel]
        for key in sorted(model.invalid)[:MAX_PER_CAUSE]:
            kind, ref = describe_key(self.keys, key)
            out.append(self._entry(ref, kind, EFFECT_INVALID, model.invalid[key], "invalid value", key))
        pools = pool_index(model)
        for key in sorted(rejected)[:MAX_PER_CAUSE]:
            w = model.workloads.get(key)
            if w is None:  # gone since the calculation that rejected it
                continue
            kind, ref = describe_key(self.keys, key)
            stray = outside_pools(w, pools)
            reason = f"addresses outside every IPPool: {','.join(stray)}" if stray else "rejected by the calculation"
            out.append(self._entry(ref, kind, EFFECT_REJECTED, reason, "rejected", key))
        alive = {(e["object"], e["effect"], e["reason"]) for e in out}
        for k in [k for k in self._since if k not in alive]:
            del self._since[k]
        return out

    def _entry(self, ref: str, kind: str, effect: str, reason: str, cause: str, key: str) -> dict[str, Any]:
        reason = reason[:_REASON_MAX]
        since = self._since.setdefault((ref, effect, reason), self.clock())
        return {"object": ref, "kind": kind, "effect": effect, "reason": reason, "since": round(since, 3),
                "cause": cause, "key": key}

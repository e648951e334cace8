"""bgp.exabgp_run: ExaBGP's own command line, with one change that makes a route reflector affordable.

``python -m bgp.exabgp_run server CONF`` is ``python -m exabgp server CONF`` except that
routes are not deep-copied per neighbour when nothing in them is per neighbour.

Why: ExaBGP 5's ``Neighbor.remove_self`` deep-copies every injected route for every neighbour
it goes to, only so that it can replace a ``next-hop self`` by that neighbour's local address.
A reflector never sends ``self`` on reflected routes, and it sends each route to N-1 neighbours:
measured at 50 clients x 64 prefixes (bench reflector_scale, cProfile), ``copy.deepcopy`` was
73 % of ExaBGP's CPU and the copies most of its 690 MiB RSS. With the change, a route whose next
hop is not SELF is shared by the neighbours' outgoing RIBs; SELF routes are still copied.

Why sharing is safe (read in exabgp 5.0.15): nothing mutates a change after it is injected. The
API builds fresh change objects for every command and sets their action before injecting them;
``OutgoingRIB.del_from_rib`` deep-copies before it flips the action to withdraw; the update
cache and the per-attribute buckets only read. The only in-place mutation of stored changes is
the watchdog feature, which l3net does not use. The patch is applied only to the ExaBGP release
line it was read in (:data:`PATCHED_SERIES`); any other version runs unmodified, with a warning.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_log = logging.getLogger(__name__)

PATCHED_SERIES = "5.0."


def patch_remove_self() -> bool:
    """Replace ``Neighbor.remove_self`` by a copy-on-SELF-only version; True if applied."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.version import release

    if not release.startswith(PATCHED_SERIES):
        _log.warning("ExaBGP %s is not %sx: running it unpatched (a deep copy per route and neighbour)",
                     release, PATCHED_SERIES)
        return False
    original = Neighbor.remove_self

    def remove_self(self: Any, change: Any) -> Any:
        if not change.nlri.nexthop.SELF:
            return change   # nothing per neighbour in it: share it (see the module docstring)
        return original(self, change)

    Neighbor.remove_self = remove_self
    return True


def main() -> None:
    patch_remove_self()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    exabgp_main()


if __name__ == "__main__":
    main()

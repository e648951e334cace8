"""bench.reflector_scale: an l3net route reflector vs a BIRD route reflector with 50, 100 and 200 clients.

Each client announces 64 prefixes; clients are simulated cheaply (several BGP sessions per
process). Measured: time until every client has every route, and the reflector's RSS.
The ratio is reported whatever it is (issue 8 sets no target).

Needs bgp.reflector (and its command) and BIRD; until they are in this build it fails with the
list of what is missing instead of a number.
"""

from __future__ import annotations

from bench.framework import Context, Result, Unavailable, need_all, need_root

NAME = "reflector_scale"
TITLE = "route reflector scale: l3net RR vs BIRD RR, 50/100/200 clients x 64 prefixes"
REQUIRED = [
    ("bgp.reflector", "the BGP engineer's route reflector"),
    ("bgp.cli", "`l3net route-reflector`"),
]
NEEDS = ["root", "bird", *[m for m, _ in REQUIRED]]
CLIENTS = (50, 100, 200)
PREFIXES_PER_CLIENT = 64


def run(ctx: Context) -> Result:
    need_root()
    need_all(REQUIRED, binaries=["bird", "birdc"])
    raise Unavailable("the reflector-scale harness (bench/reflector_scale.py)",
                      "not written yet: it waits for the l3net route reflector; no number is reported until it is")

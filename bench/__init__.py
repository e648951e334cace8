"""bench: l3net's benchmarks, run with ``l3net bench`` (see bench/README.md).

Every benchmark is a module here exposing ``NAME``, ``TITLE``, ``NEEDS`` and
``run(ctx) -> Result``; :mod:`bench.framework` turns a ``Result`` into the printed
table, ``bench/results/<name>.json`` and ``bench/results/<name>.png``.
"""

# Order of `l3net bench all`: issue 8's numbering, cheapest-to-fail first within it.
BENCHMARKS = [
    "dataplane",
    "control_plane",
    "policy_scale",
    "conn_rate",
    "route_scale",
    "reflector_scale",
    "footprint",
    "ipam",
    "bfd",
]

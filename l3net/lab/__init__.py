"""l3net.lab: containerlab topologies on network namespaces (``l3net lab ...``), workloads through
the real CNI plugin, and the demo. ``topology`` is pure; ``runtime``, ``pods`` and ``demo`` do I/O."""

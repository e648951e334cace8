"""l3net.cli: the two operator-facing command lines (``l3net`` and ``l3netctl``)."""

"""felix.drivers: one driver per kind of kernel object; each diffs against its cached view and applies."""

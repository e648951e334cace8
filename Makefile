# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest

.PHONY: setup demo demo-down test test-unit test-drivers test-integration test-netns test-e2e soak lint bench clean

setup:
	bash .ci/setup

demo: setup
	$(VENV)/bin/l3net lab demo

demo-down: setup
	$(VENV)/bin/l3net lab down topologies/two-node-rr.clab.yml

# Strict: a tool or privilege that .ci/setup provides is required, and only the skips named in
# tests/conftest.py (ALLOWED_SKIPS) may happen. Drills that watch timers for minutes are `make soak`.
test: setup
	$(VENV)/bin/ruff check .
	L3NET_STRICT_SKIPS=1 $(PYTEST) -q -p no:cacheprovider -m "not soak" tests

# One target per rung of the ladder (a directory of tests/, each test carrying its rung's marker); outside
# `make test`, a missing privilege or tool skips with a reason. unit and drivers need neither root nor etcd.
test-unit: setup
	$(PYTEST) -q -m "not soak" tests/unit

test-drivers: setup
	$(PYTEST) -q -m "not soak" tests/drivers

test-integration: setup
	$(PYTEST) -q -m "not soak" tests/integration

test-netns: setup
	$(PYTEST) -q -m "not soak" tests/netns

test-e2e: setup
	$(PYTEST) -q -m "not soak" tests/e2e

# Drills that watch long timers or run for minutes (prints their figures).
soak: setup
	L3NET_STRICT_SKIPS=1 $(PYTEST) -q -s -p no:cacheprovider --timeout=7200 -m soak tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/l3net-bench all

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.tmp

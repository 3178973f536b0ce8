# shrinkflow: `make run` and `make test` work on a fresh clone: they build .venv from requirements.lock first.
# Python 3.11, 3.12 or 3.13: `make run PYTHON=python3.13`. pyenv's shims answer only for the versions pyenv has
# activated, so an installed version it has not is looked up under `pyenv root`.
PYTHON ?= python3.11
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || ls -d "$$(pyenv root 2>/dev/null)"/versions/$(patsubst python%,%,$(notdir $(PYTHON)))*/bin/$(notdir $(PYTHON)) 2>/dev/null | tail -n 1)
PYTHON_VERSION := $(shell $(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
# One stamp per Python version: asking for another version rebuilds the venv with it.
STAMP := $(VENV)/.installed-$(PYTHON_VERSION)
CONFIG ?= configs/digits_cnn.yaml

.PHONY: setup run test clean bench bench-smoke bench-compression up down ui-screenshots

setup: $(STAMP)

# uv installs the lock in parallel (about 30 s against pip's two minutes on 2 cores) and byte-compiles it once,
# since this environment sets PYTHONDONTWRITEBYTECODE; it is itself pinned here and installed by pip.
UV_VERSION := 0.13.9

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON_VERSION)" || { echo "make: no $(PYTHON) found; install Python 3.11, 3.12 or 3.13, or pass PYTHON=/path/to/python3.X" >&2; exit 2; }
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PYTHON_VERSION)" ]; then \
		echo "make: rebuilding $(VENV) with Python $(PYTHON_VERSION)"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON_EXE) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/shrinkflow run $(CONFIG)

# Two pytest workers, one test file each at a time (a file's module fixtures stay in one worker): most e2e tests
# wait on servers and subprocesses, so two overlap well on two cores.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m tests.typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) workspace .pytest_cache .typecheck .mypy_cache

# Every benchmark (about 50 minutes; the two sweep benchmarks take 20 of them): bench/results/<name>.json and docs/benchmarks.md.
bench: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m bench

# The harness on tiny data, one repetition, in a temporary folder (under a minute).
bench-smoke: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m bench --smoke

bench-compression: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m bench --only compression

up: setup
	$(BIN)/shrinkflow up

down: setup
	$(BIN)/shrinkflow down

# Screenshots of the Prefect and MLflow UIs after a quick run, in a real browser (needs: apt-get install chromium).
ui-screenshots: setup .venv-ui/.installed
	.venv-ui/bin/python tests/ui/screenshots.py --out $(or $(OUT),ui-screenshots)
.venv-ui/.installed: requirements-ui.lock
	test -x .venv-ui/bin/python || $(PYTHON_EXE) -m venv .venv-ui
	.venv-ui/bin/pip install --quiet --disable-pip-version-check -r requirements-ui.lock
	touch .venv-ui/.installed

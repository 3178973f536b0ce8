# shrinkflow: `make run` and `make test` work on a fresh clone: they build .venv from requirements.lock first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/digits_cnn.yaml

.PHONY: setup run test clean bench bench-smoke bench-compression up down ui-screenshots

setup: $(STAMP)

# uv installs the lock in parallel (about 30 s against pip's two minutes on 2 cores) and byte-compiles it once,
# since this environment sets PYTHONDONTWRITEBYTECODE; it is itself pinned here and installed by pip.
UV_VERSION := 0.13.9

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/shrinkflow run $(CONFIG)

test: setup
	$(BIN)/mypy
	$(BIN)/pytest

clean:
	rm -rf $(VENV) workspace .pytest_cache

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
	test -x .venv-ui/bin/python || $(PYTHON) -m venv .venv-ui
	.venv-ui/bin/pip install --quiet --disable-pip-version-check -r requirements-ui.lock
	touch .venv-ui/.installed

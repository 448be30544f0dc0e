# fedlab — `make run` (the notebook sequence) and `make test` (the test suite) are all you need.
# Every target creates .venv when it is missing and reinstalls only when the lock changes.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedlab-installed
EXTRAS := device,workbench,dev
# Tests run in two processes (one per core); override with `make test PYTEST_ARGS=`.
PYTEST_ARGS ?= -n 2

# INFO/WARNING logs of TensorFlow's C++ core off; its ERRORs still show.
export TF_CPP_MIN_LOG_LEVEL ?= 2
export FLWR_TELEMETRY_ENABLED := 0
export PYTHONUNBUFFERED := 1
# The TF 2.15.1 wheel prints three harmless "Unable to register cuDNN/cuFFT/cuBLAS factory"
# errors at import on a CPU machine (tensorflow#62075). Drop exactly those lines, nothing else.
QUIET := 2> >(grep -v --line-buffered -E 'Unable to register cu(DNN|FFT|BLAS) factory' >&2)

# Debian packages the tests need: Chromium for the browser test of the dashboard,
# shellcheck for the device-kit scripts.
SYSTEM_PACKAGES := chromium shellcheck
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup system-deps run test lab bench lint format lock clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip check
	@touch $@

setup: $(STAMP)

## Install the missing Debian packages of SYSTEM_PACKAGES (apt-get update first).
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## The main job: execute every notebook with full parameters, render build/report/index.html.
run: setup
	$(BIN)/python -m fedlab.runbook --out build $(QUIET)

## The tests (unit tests + every notebook under papermill in SMOKE mode).
test: setup system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS) $(QUIET)

## JupyterLab on the notebooks.
lab: setup
	$(BIN)/jupyter lab notebooks

## Benchmarks: print ratios measured side by side; write build/bench/*.json.
bench: setup
	@mkdir -p build/bench
	@set -e; shopt -s nullglob; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b $(QUIET); done

lint: setup
	$(BIN)/ruff check fedlab tests benchmarks
	$(BIN)/ruff format --check fedlab tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format fedlab tests benchmarks
	$(BIN)/ruff check --fix fedlab tests benchmarks
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb

## Re-pin the lock from the current environment (after changing pyproject.toml on purpose).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | sort -f > requirements.lock
	$(BIN)/python -m pip check

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

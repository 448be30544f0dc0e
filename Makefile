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

.PHONY: setup python-check system-deps run test test-fleet test-portability lab bench lint format hooks lock clean wheelhouse

# TensorFlow 2.15 (and so tensorflow-privacy 0.9) has wheels for Python 3.9-3.11 only, and the
# lock is made on 3.11: any other Python would end in a long pip resolution error.
IS_PY311 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'

## Stop with one clear line when PYTHON is not a 3.11; rebuild a .venv made by another Python.
python-check:
	@if [ -z "$(PYTHON)" ] || ! "$(PYTHON)" $(IS_PY311) 2>/dev/null; then \
	  echo "fedlab needs Python 3.11 (TensorFlow 2.15 has no wheels for newer ones): PYTHON='$(PYTHON)' is $$("$(PYTHON)" --version 2>&1 || echo 'not found'); install python3.11 and run 'make PYTHON=/path/to/python3.11 $(or $(MAKECMDGOALS),setup)'" >&2; \
	  exit 1; \
	fi
	@if [ -e $(BIN)/python ] && ! $(BIN)/python $(IS_PY311) 2>/dev/null; then \
	  echo "$(VENV) was made by $$($(BIN)/python --version 2>&1 || echo 'a Python that is gone'); rebuilding it with $(PYTHON)"; \
	  rm -rf $(VENV); \
	fi

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip check
	@touch $@

# A sub-make, so that a .venv python-check just removed is seen as missing.
setup: python-check
	@$(MAKE) --no-print-directory $(STAMP)

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

## The tests (unit tests + every notebook under papermill in SMOKE mode), then the Flower
## fleet tests on their own (test-fleet) and the portability tests with oneDNN off.
test: setup system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not fleet" $(QUIET)
	@$(MAKE) --no-print-directory test-fleet
	@$(MAKE) --no-print-directory test-portability

## The tests that start real Flower processes (SuperLink, SuperNodes) on 127.0.0.1, in one
## process after the rest: their deadlines and heartbeats must not compete with a second
## pytest worker for the CPU.
test-fleet: setup
	$(BIN)/python -m pytest -m fleet $(QUIET)

## The tests marked `portability` with TensorFlow's oneDNN kernels forced off: the kernel set
## of AVX2-only x86 and ARM CPUs, which a machine with AVX-512 VNNI/AMX would otherwise hide.
test-portability: setup
	TF_ENABLE_ONEDNN_OPTS=0 $(BIN)/python -m pytest $(PYTEST_ARGS) -m portability $(QUIET)

## Device wheels for kits (network, once): build/wheelhouse/linux_aarch64/, which build_kit(...,
## wheelhouse=...) vendors hash-pinned so a board installs offline. PLATFORM=linux_x86_64 for x86 boards.
PLATFORM ?= linux_aarch64
wheelhouse: setup
	$(BIN)/python -c 'import sys; from fedlab.kits.wheelhouse import main; sys.exit(main(sys.argv[1:]))' --platform $(PLATFORM) --out build/wheelhouse $(QUIET)

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

## nbstripout as this clone's git filter for *.ipynb (.gitattributes): what `git add` stages
## has no outputs, the working copy keeps them. Once per clone; GIT lets a test aim it elsewhere.
GIT ?= git
hooks:
	@test -x $(BIN)/nbstripout || { echo "$(BIN)/nbstripout is missing: run 'make setup' first" >&2; exit 1; }
	$(GIT) config filter.nbstripout.clean '"$(abspath $(BIN))/nbstripout" --keep-id'
	$(GIT) config filter.nbstripout.smudge cat
	$(GIT) config filter.nbstripout.required true
	$(GIT) config diff.ipynb.textconv '"$(abspath $(BIN))/nbstripout" --keep-id -t'

## Re-pin the lock from the current environment (after changing pyproject.toml on purpose).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | sort -f > requirements.lock
	$(BIN)/python -m pip check

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

## The device kit on a full-system aarch64 VM (qemu-system-aarch64, Debian arm64 kernel and
## root, no KVM): install offline, doctor, bench, LiteRT train, one agent round. Slow (builds
## build/arm64 once, then ~tens of minutes per run); not part of `make test`. Needs root.
.PHONY: test-arm64
test-arm64: setup
	bash device_kits/arm64/run_test.sh

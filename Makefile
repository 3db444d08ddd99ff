# Two commands do all setup: `make run` and `make test`. Both create .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_NP124 := .venv-np124
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
RUN_DIR := .run
# The laptop config: replay camera over $(RUN_DIR)/demo-images, mock GPIO, state in $(RUN_DIR)/state.
RUN_CONFIG ?= device/leukoscope/configs/laptop.toml

.PHONY: run test quick lint typecheck unit test-np124 bench clean help system-deps fault pi-check

help:
	@echo "make run    - start the appliance on this machine (replay camera, mock GPIO, shipped model)"
	@echo "make test   - lint, type checks and the whole test suite (numpy 2 and numpy 1.24)"
	@echo "make quick  - lint, the import layers and the fast tests (a few minutes)"
	@echo "make bench  - print speed and memory figures (not a test)"
	@echo "make fault  - the fault campaign: kills, HTTP and image fuzz (about 10 minutes)"
	@echo "make pi-check - the device install and tests in an arm64 Bookworm root under qemu"

$(VENV)/.installed: pyproject.toml constraints/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade 'pip>=24'
	$(PY) -m pip install $(PIP_FLAGS) -c constraints/dev.txt -e '.[device,host,test]'
	touch $@

# The Pi's numpy (1.24) with the device stack alone: no TensorFlow, as on the Pi.
$(VENV_NP124)/.installed: pyproject.toml constraints/np124.txt constraints/pi.txt
	$(PYTHON) -m venv $(VENV_NP124)
	$(VENV_NP124)/bin/python -m pip install $(PIP_FLAGS) --upgrade 'pip>=24'
	$(VENV_NP124)/bin/python -m pip install $(PIP_FLAGS) -c constraints/np124.txt \
		-e '.[device]' pytest pytest-timeout hypothesis
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/leukoscope demo-images $(RUN_DIR)/demo-images >/dev/null
	@# The laptop config runs the model store's active bundle, as a Pi does: the shipped one at first.
	@if [ "$(RUN_CONFIG)" = device/leukoscope/configs/laptop.toml ] && [ ! -e $(RUN_DIR)/state/models/active ]; then \
		$(VENV)/bin/leukoscope model install --activate models/default --config $(RUN_CONFIG); fi
	@echo "take a photo from another terminal: $(VENV)/bin/leukoscope capture --config $(RUN_CONFIG)"
	$(VENV)/bin/leukoscope run --config $(RUN_CONFIG)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check device tools tests
	$(VENV)/bin/ruff format --check device tools tests
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy device/leukoscope tools/leukoscope_tools tests

# Debian packages the tests drive (shellcheck, chromium, sshd, ...); installs as root.
system-deps:
	bash tools/install-test-deps.sh

unit: $(VENV)/.installed system-deps
	$(VENV)/bin/pytest

# The same tiny int8 bundles (whole-field, and cells with a dynamic batch), built with
# TensorFlow under numpy 2, must load, pass their golden checks and classify under the
# Pi's numpy 1.24.
test-np124: $(VENV)/.installed $(VENV_NP124)/.installed
	$(VENV_NP124)/bin/python -c 'import numpy; assert numpy.__version__.startswith("1.24"), numpy.__version__'
	rm -rf build/test-bundle build/test-cells-bundle
	$(PY) -c 'from pathlib import Path; from tests.helpers import build_tiny_bundle; build_tiny_bundle(Path("build/test-bundle"))'
	$(PY) -c 'from pathlib import Path; from tests.helpers import build_tiny_cells_bundle; build_tiny_cells_bundle(Path("build/test-cells-bundle"))'
	LEUKOSCOPE_TEST_BUNDLE=build/test-bundle LEUKOSCOPE_TEST_CELLS_BUNDLE=build/test-cells-bundle \
		$(VENV_NP124)/bin/pytest -m "not host" -p no:cacheprovider

test: lint typecheck unit test-np124

# Lint, the import layers and the tests that need neither the real data nor much time.
quick: lint
	$(VENV)/bin/pytest -q -m "not slow and not realdata"

bench: $(VENV)/.installed
	$(VENV)/bin/leukoscope bench
	$(VENV)/bin/leukoscope bench-daemon

# Issue 17's fault campaign against a real daemon on 127.0.0.1: SIGKILLs during captures and
# model installs, hostile HTTP, odd image files. Prints the table, writes build/fault-campaign.md
# and fails if anything was lost, corrupt, a 5xx or a crash (a short run is in `make test`).
fault: $(VENV)/.installed
	$(PY) -m tests.fault_campaign --report build/fault-campaign.md

# The device as on a Pi, in an arm64 Debian Bookworm root under qemu user emulation (qemu 10
# or newer, as root): a built wheel under constraints/pi.txt, then the device tests. Not in
# `make test`; everything it makes is under build/pi-check/ (tools/pi-check.sh --help).
pi-check: $(VENV)/.installed
	tools/pi-check.sh $(PI_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(VENV_NP124) $(RUN_DIR) build *.egg-info

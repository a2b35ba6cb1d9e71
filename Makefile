# The README's two commands. Both set up everything themselves on a fresh clone (virtualenv,
# packages, the Kafka jars, a local broker and database) and are safe to run twice.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when the dependencies change.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
LOCAL_ENV = eval "$$($(BIN)/provisioning dev env)"

.PHONY: demo test chaos

demo: $(STAMP)
	$(BIN)/provisioning dev up
	$(LOCAL_ENV); $(BIN)/provisioning demo

test: $(STAMP)
	$(BIN)/provisioning dev up
	$(BIN)/provisioning dev tools
	$(LOCAL_ENV); $(BIN)/pytest $(PYTEST_ARGS)

# Faults under load on real processes (minutes); ends with the `chaos: ...` summary line of
# all its runs (written by tests/chaos/conftest.py).
chaos: $(STAMP)
	$(BIN)/provisioning dev up
	rm -f .local/chaos/summary.txt
	$(LOCAL_ENV); status=0; \
	$(BIN)/pytest -m '' tests/chaos -s -p no:cacheprovider $(PYTEST_ARGS) || status=$$?; \
	cat .local/chaos/summary.txt 2>/dev/null || echo "chaos: no run finished"; \
	exit $$status

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

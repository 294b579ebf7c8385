# Every target bootstraps its own virtual environment, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
# Another CPython gets a venv of its own: `make test PYTHON=python3.13 VENV=.venv-3.13`
# (.ci/run does so for each newer CPython scripts/other-pythons finds).
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# Test workers (pytest-xdist) for `make test`'s first pass: most tests wait on a broker, a
# daemon or a database, so two workers halve the suite on a 2-core machine. `JOBS=0`: one process.
JOBS   ?= 2

.PHONY: demo test test-all bench soak check lint typecheck lock clean

# The venv gets the versions in requirements/dev.lock (with hashes), the ones the tests pass
# with, not whatever pyproject.toml's ranges allow today; then alarmhub itself, editable, built
# by the locked hatchling. Wheels only: nothing is compiled at install time. `pip check` stops
# a lock that no longer satisfies pyproject.toml.
# A changed lock is installed over the existing venv (make rebuilds when either file changes).
$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --only-binary :all: --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check || { echo "requirements/dev.lock does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

# Regenerate the locks from pyproject.toml (docs/operations.md). Pins already in a lock are
# kept; `make lock ARGS=--upgrade` (or `ARGS="--upgrade-package paho-mqtt"`) moves them.
# run.lock is resolved within dev.lock, so production gets exactly the versions tested.
# uv resolves against PyPI only, whatever pip's configuration on this machine says.
UV_VERSION := 0.13.9
UV_VENV    := .venv-uv
UV         := $(UV_VENV)/bin/uv
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet 'uv==$(UV_VERSION)'

lock: $(UV)
	$(UV) pip compile pyproject.toml requirements/build.in --extra dev $(LOCK_FLAGS) $(ARGS) \
		-o requirements/dev.lock
	$(UV) pip compile pyproject.toml -c requirements/dev.lock $(LOCK_FLAGS) -o requirements/run.lock

# The real components the demo and the tests drive (Mosquitto, promtool, Chromium, …) come
# from Debian's packages: installed when missing, where this user may (scripts/system-packages).
demo: $(STAMP)
	scripts/system-packages demo
	$(BIN)/python -m alarmhub.dev.demo $(ARGS)

# The bounded suite: everything except the long soak variants, on $(JOBS) workers, then the
# tests marked `solo` (they measure the daemon's own CPU or memory) alone: scripts/test-suite.
test: $(STAMP)
	scripts/system-packages test
	scripts/test-suite $(BIN)/python $(JOBS) $(ARGS)

test-all: $(STAMP)
	scripts/system-packages test
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# The long soak: the daemon at a steady municipal load, watched for leaks and slowdowns
# (tests/system/test_soak.py). 10 minutes by default; longer with e.g. `make soak SOAK_SECONDS=3600`.
soak: $(STAMP)
	SOAK_SECONDS=$(or $(SOAK_SECONDS),600) $(BIN)/python -m pytest tests/system/test_soak.py -m slow -s $(ARGS)

check: lint typecheck

# ruff's rules and its formatter over everything Python in the repository; then the import
# contracts in pyproject.toml (the core does no I/O, the layers, no cycles between siblings).
# The shape tests (tests/test_shape.py: root modules, module and function length, noqa, SQL outside the
# store, import cycles) run with `make test`.
lint: $(STAMP)
	$(BIN)/ruff check alarmhub tests scripts bench
	$(BIN)/ruff format --check alarmhub tests scripts bench
	$(BIN)/lint-imports

# mypy strict on alarmhub/ (pyproject.toml's `packages`) and bench/ (what `make bench`
# reports is only as good as its code), and non-strict on tests/ (the `tests.*` override):
# test bodies are checked, test signatures need no annotations.
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/mypy tests

clean:
	rm -rf $(VENV) $(UV_VENV) .pytest_cache .mypy_cache .ruff_cache

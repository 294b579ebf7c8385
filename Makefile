# Every target bootstraps its own virtual environment, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test test-all bench soak check lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m alarmhub.demo $(ARGS)

# The bounded suite: everything except the long soak variants.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# The long soak: the daemon at a steady municipal load, watched for leaks and slowdowns
# (tests/test_soak.py). 10 minutes by default; longer with e.g. `make soak SOAK_SECONDS=3600`.
soak: $(STAMP)
	SOAK_SECONDS=$(or $(SOAK_SECONDS),600) $(BIN)/python -m pytest tests/test_soak.py -m slow -s $(ARGS)

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check alarmhub tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# patron-tui: two commands do everything.
#   make run   - create .venv, install, create the demo database on first start, open the console
#   make test  - install test needs and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# pytest workers: one per core (CI machines have 2)
JOBS   ?= auto

.PHONY: run test install install-test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/patron-tui $(ARGS)

test: install-test
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(JOBS) $(PYTEST_ARGS)

bench: install
	$(PY) bench/demo_build.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# patron-tui: two commands do everything.
#   make run   - create .venv, install, create the demo database on first start, open the console
#   make test  - install test needs and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# pytest workers: one per core (CI machines have 2)
JOBS   ?= auto

.PHONY: run test install install-test test-sshd bench lint clean

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

# The SFTP end-to-end tests run a real OpenSSH sshd on 127.0.0.1 (Debian package
# openssh-server). It is installed here when missing and we can (root with apt-get), without
# starting the system's ssh service; where it cannot be, those tests skip naming the package,
# unless PATRON_TUI_REQUIRE_SSHD=1 (set by .ci/run) turns the skip into a failure.
SSHD := /usr/sbin/sshd
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server

test-sshd:
	@if [ ! -x $(SSHD) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: installing openssh-server for the SFTP tests"; \
	  norc=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && norc=1; fi; \
	  { $(APT_INSTALL) >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && $(APT_INSTALL) >/dev/null 2>&1; }; } \
	    || echo "make test: could not install openssh-server; the SFTP tests will skip"; \
	  if [ -n "$$norc" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	fi

test: install-test test-sshd
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(JOBS) $(PYTEST_ARGS)

bench: install
	$(PY) bench/demo_build.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

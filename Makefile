# patron-tui: two commands do everything.
#   make run   - create .venv, install, create the demo database on first start, open the console
#   make test  - install test needs and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# pytest workers: 3 on the 2-core CI machines. A Pilot test waits for the app to go idle after
# every key (about half its wall time), so a third worker fills those waits; worksteal hands
# the long walkthroughs to whichever worker is free. Measured on 2 cores, 1152 tests, with
# other work on the machine (load 1.4-5): -n 2 350 s, -n 3 --dist worksteal 275 s, -n 4 291 s.
JOBS   ?= 3

.PHONY: run test install install-test test-sshd bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

# the test needs include the package: one pip run (not `-e .` and then `-e '.[test]'`)
$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(VENV)/.installed $@

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
	$(BIN)/pytest -q -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

bench: install
	$(PY) bench/demo_build.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

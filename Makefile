# The two entry points of the README: `make demo` and `make test`. Both create the venv and
# install what is missing, so they work on a fresh Debian machine (as root) and in CI.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Debian packages the tests start for real: etcd, git, systemd user managers, dockerd.
SYSTEM_PKGS := git etcd-server etcd-client systemd dbus dbus-user-session iproute2 util-linux docker.io python3-venv debootstrap openssh-client gnupg systemd-container ignition

.PHONY: demo test test-fast test-sandbox setup system-deps lint typecheck bench image node-root clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@python3 -c 'import ensurepip' 2>/dev/null || $(MAKE) system-deps
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade 'pip>=25.1'
	$(PIP) install -q -c constraints.txt --group dev -e .
	touch $@

# Installs only what is missing, so a machine that has everything makes no apt call.
system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: system-deps setup node-root
	$(PY) scripts/demo.py

test: system-deps setup node-root
	$(PY) -m pytest -q -m "not sandbox"

# The whole cluster on this machine (docs/sandbox.md): its own lane, a few minutes.
test-sandbox: system-deps setup node-root
	$(PY) -m pytest -q -m sandbox tests/test_sandbox_cluster.py

# The Debian bookworm root the PID-1 node tests boot with systemd-nspawn (scripts/build-root.sh):
# about a minute on a clean machine, instant once cached under $SWARMKEEPER_CACHE.
node-root: system-deps
	./scripts/build-root.sh

# The tests that start no service (pure, property and in-process tests): seconds, no root.
test-fast: setup
	$(PY) -m pytest -q -m "not services"

# ruff, the formatter, mypy --strict and the layer contracts (pyproject's [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

image:
	./scripts/build-image.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo

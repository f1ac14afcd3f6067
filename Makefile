# Two commands on a fresh machine: `make run` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
CONFIG ?= config.yaml

.PHONY: run test test-deps install install-test bench check-config doctor clean

$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(VENV)/.installed-run $@

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

run: install
	$(PY) -m gateway serve --config $(CONFIG)

check-config: install
	$(PY) -m gateway check-config --config $(CONFIG)

doctor: install
	$(PY) -m gateway doctor --config $(CONFIG)

test-deps:
	bash scripts/install-test-deps.sh

test: install-test test-deps
	$(PY) -m pytest -q

bench: install-test test-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache

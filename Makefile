# hsq_refunds: every target is self-contained on a fresh machine (it creates .venv itself).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH (or pyenv's); override with `make PYTHON=/path/to/python3.12`.
PYTHON ?= $(shell for p in python3 python3.11 python3.12 python3.13 $$HOME/.pyenv/shims/python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
# Python 3.12 for Django 6.0 (the line between the LTS and the newest).
PYTHON312 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null) python3.12; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
# Python 3.11, the oldest supported, for the run with the oldest requests and urllib3.
PYTHON311 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.11*/bin/python3.11 2>/dev/null) python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
# Python 3.13 for the second supported line (newest Django 6.1).
PYTHON313 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null) python3.13; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 && { command -v $$p; break; }; done)

VENV := .venv
VENV312 := .venv-py312
VENV313 := .venv-py313
VENVMIN := .venv-min
# The lower bounds of requests and urllib3 in pyproject.toml's dependencies: keep them equal.
MIN_DEPENDENCIES := 'requests==2.31.0' 'urllib3==2.0.7'
BIN := $(VENV)/bin
PYTEST_FAST := -m "not slow and not browser and not postgres and not redis"

.PHONY: help demo serve test lint format package docs test-sqlite test-postgres test-py312 \
	test-py313 test-min system-deps services-stop bench clean

help:
	@echo "make demo   - the example project applying for refunds, receiving notifications and syncing, with the local sandbox gateway"
	@echo "make serve  - the example project's admin, sandbox and django-q2 cluster, for a person"
	@echo "make test   - lint, the whole test suite (SQLite, PostgreSQL, Python 3.13 + Django 6.1, oldest requests + urllib3)"
	@echo "make docs   - the documentation site (English and Chinese), built --strict into site/"
	@echo "make bench  - the benchmarks under bench/"

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is needed" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(VENV312)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 is needed for the Django 6.0 run" >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/pip install -q --upgrade pip
	$(VENV312)/bin/pip install -q -e '.[test]' 'Django>=6.0,<6.1'
	@touch $@

$(VENV313)/.installed: pyproject.toml
	@test -n "$(PYTHON313)" || { echo "Python 3.13 is needed for the Django 6.1 run" >&2; exit 1; }
	$(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/pip install -q --upgrade pip
	$(VENV313)/bin/pip install -q -e '.[test]' 'Django>=6.1,<6.2'
	@touch $@

$(VENVMIN)/.installed: pyproject.toml
	@test -n "$(PYTHON311)" || { echo "Python 3.11 is needed for the oldest-dependencies run" >&2; exit 1; }
	$(PYTHON311) -m venv $(VENVMIN)
	$(VENVMIN)/bin/pip install -q --upgrade pip
	$(VENVMIN)/bin/pip install -q -e '.[test]' $(MIN_DEPENDENCIES)
	@touch $@

system-deps:
	@bash .ci/system-deps.sh

demo: $(VENV)/.installed
	$(BIN)/python -m example_project.demo

serve: $(VENV)/.installed
	$(BIN)/python -m example_project.serve

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation tools go into the same .venv, once (and again when pyproject.toml changes).
$(VENV)/.installed-docs: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[docs]'
	@touch $@

# A broken link, page or API reference fails the build (--strict). NO_MKDOCS_2_WARNING: no
# banner about future MkDocs versions in the output.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: system-deps $(VENV)/.installed
	$(MAKE) lint
	$(MAKE) package
	$(MAKE) docs
	$(BIN)/python -m tests.services start
	$(MAKE) test-sqlite
	$(MAKE) test-postgres
	$(MAKE) test-py312
	$(MAKE) test-py313
	$(MAKE) test-min
	$(BIN)/python -m tests.services stop

# The sdist and the wheel, checked as a package index would (metadata, README, contents).
package: $(VENV)/.installed
	rm -rf dist
	$(BIN)/python -m build -q --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*
	$(BIN)/check-wheel-contents dist/*.whl

# The whole suite on SQLite (browser, Redis and multi-process tests included).
test-sqlite: $(VENV)/.installed
	$(BIN)/python -m pytest -p no:cacheprovider -m "not postgres"

# Everything that touches the database, again on PostgreSQL (concurrency tests need it).
test-postgres: $(VENV)/.installed
	HSQ_TEST_DATABASE=postgres $(BIN)/python -m pytest -p no:cacheprovider -m "not browser" \
		--ignore=tests/gateway --ignore=tests/sandbox

# The fast part once more on Python 3.12 with Django 6.0.
test-py312: $(VENV312)/.installed
	$(VENV312)/bin/python -m pytest -p no:cacheprovider $(PYTEST_FAST)

# The fast part once more on Python 3.13 with the newest Django 6.1.
test-py313: $(VENV313)/.installed
	$(VENV313)/bin/python -m pytest -p no:cacheprovider $(PYTEST_FAST)

# The fast part once more on Python 3.11 with the oldest requests and urllib3 allowed.
test-min: $(VENVMIN)/.installed
	$(VENVMIN)/bin/python -m pytest -p no:cacheprovider $(PYTEST_FAST)

services-stop: $(VENV)/.installed
	$(BIN)/python -m tests.services stop

bench: $(VENV)/.installed
	$(BIN)/python bench/crypto.py
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/sync_throughput.py

clean:
	rm -rf $(VENV) $(VENV312) $(VENV313) $(VENVMIN) .pytest_cache .ruff_cache .hypothesis build dist

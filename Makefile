# Two commands matter: `make test` and `make demo`. Both start from nothing: they create the
# virtual environments they need, install the project, and start every server they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VENV_MIN ?= .venv-min
# The Airflow versions CI proves: the floor pyproject.toml sets, and the newest release
# (`pip index versions apache-airflow`; pyproject.toml has no ceiling, as the official providers).
AIRFLOW_NEWEST ?= 3.3.2
AIRFLOW_LOWEST ?= 3.1.8
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test test-newest test-lowest test-deployment lint bench clean services

# mysqlclient (Airflow's MySQL provider, used for the MariaDB tests) compiles against the
# MariaDB client headers; install them when missing (needs root, as on CI and the dev machines).
# The connection-form test drives Debian's chromium (Playwright's browser downloads fail here),
# with a CJK font so the vendor's Chinese messages are legible in its screenshots.
.PHONY: sysdeps
sysdeps:
	@pkg-config --exists libmariadb 2>/dev/null || { \
		echo "installing libmariadb-dev and pkg-config (needed to build mysqlclient)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config; }
	@test -x /usr/bin/chromium && fc-list :lang=zh 2>/dev/null | grep -q . || { \
		echo "installing chromium and fonts-wqy-microhei (the browser test of the connection form)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei; }

$(VENV)/.installed: pyproject.toml Makefile | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]' "apache-airflow==$(AIRFLOW_NEWEST)"
	touch $@

$(VENV_MIN)/.installed: pyproject.toml Makefile | sysdeps
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/pip install $(PIP_FLAGS) --upgrade pip
	# wtforms + flask-babel: Airflow 3.1 builds provider connection forms with them (3.2+ does not).
	$(VENV_MIN)/bin/pip install $(PIP_FLAGS) -e '.[test]' \
		"apache-airflow==$(AIRFLOW_LOWEST)" wtforms flask-babel
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

services:
	@.ci/services

test-newest: $(VENV)/.installed services
	$(VENV)/bin/python -m pytest -q

## The lowest Airflow: everything but the warehouse variants (DuckDB, status tables, dbt), whose
## code does not depend on Airflow's version and which the newest run covers.
test-lowest: $(VENV_MIN)/.installed services
	$(VENV_MIN)/bin/python -m pytest -q -m "not deployment and not warehouse_variant"

## A real Airflow deployment (API server, scheduler, DAG processor, PostgreSQL) running the
## example DAGs against the sandbox: `-m deployment` selects what plain pytest deselects.
test-deployment: $(VENV)/.installed services
	$(VENV)/bin/python -m pytest -q -m deployment tests/deployment

## The whole suite: lint, every test on the newest and on the lowest Airflow admitted, and the
## deployment tests on the newest.
test: lint test-newest test-lowest test-deployment

## The demo: sandbox + messy SQLite warehouse + the revalidation DAG through real Airflow.
demo: $(VENV)/.installed
	$(VENV)/bin/python demo/demo.py

## Benchmarks: ratios against baselines measured in the same run.
bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(VENV_MIN) .venv-dbt .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

# entsync: `make demo` runs an academy's DAG end to end on the embedded defaults;
# `make test` runs lint and every test. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ACADEMY ?= ac-strasbourg
SCHOOLS ?= 3
PUPILS ?= 250
# the demo's exports: siecle (each school's SIECLE/STS-web) or aaf (the academy's AAF feed)
FORMAT ?= siecle
DEMO := var/demo
export PATH := $(CURDIR)/$(BIN):$(PATH):/usr/sbin:/sbin

.PHONY: install system-deps lint test demo demo-down clean bench

install: system-deps $(VENV)/.installed

# Debian packages the project runs: OpenLDAP's slapd and its client tools.
system-deps:
	@if ! command -v slapd >/dev/null || ! command -v ldapsearch >/dev/null; then \
	  echo "installing Debian packages slapd ldap-utils"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slapd ldap-utils >/dev/null; \
	fi

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check etl dags plugins tests bench
	$(BIN)/mypy etl dags plugins

# the integration tests that take a state DB run twice: SQLite, then PostgreSQL (a fresh
# database per test on 127.0.0.1:5432; skipped without one, except in CI where they fail)
PG_TESTS = $(addprefix tests/integration/test_,$(addsuffix .py,\
	sync lifecycle matching metrics staging status \
	feed plan_state ine_conflict classes_groups export_dates aaf audit))

test: install browser-deps lint
	$(BIN)/python -m pytest -q
	ENTSYNC_TEST_STATE=postgresql $(BIN)/python -m pytest -q -p no:cacheprovider $(PG_TESTS)

demo: install
	-@[ -d $(DEMO)/slapd ] && $(BIN)/entsync ldap down --dir $(DEMO)/slapd >/dev/null 2>&1; true
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/entsync ldap up --dir $(DEMO)/slapd > $(DEMO)/ldap.env
	$(BIN)/entsync generate --academy $(ACADEMY) --schools $(SCHOOLS) \
	  --pupils-per-school $(PUPILS) --seed 7 --format $(FORMAT) --out $(DEMO)/landing
	source $(DEMO)/ldap.env && \
	export ENTSYNC_LANDING=$(CURDIR)/$(DEMO)/landing ENTSYNC_WORKDIR=$(CURDIR)/$(DEMO)/work \
	  AIRFLOW_HOME=$(CURDIR)/$(DEMO)/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	  AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__UNIT_TEST_MODE=False && \
	{ $(BIN)/airflow db migrate > $(DEMO)/db-migrate.log 2>&1 \
	  || { tail -30 $(DEMO)/db-migrate.log; exit 1; }; } && \
	echo "airflow dags test ent_sync__$(subst -,_,$(ACADEMY)) (log: $(DEMO)/dag-test.log)" && \
	{ $(BIN)/airflow dags test ent_sync__$(subst -,_,$(ACADEMY)) > $(DEMO)/dag-test.log 2>&1 \
	  || { tail -50 $(DEMO)/dag-test.log; exit 1; }; } && \
	{ grep -o 'DagRun Finished: dag_id=[^,]*' $(DEMO)/dag-test.log; \
	  grep -o 'run_duration=[0-9.]*, state=[a-z]*' $(DEMO)/dag-test.log; true; } && \
	$(BIN)/entsync status && \
	$(BIN)/entsync show --academy $(ACADEMY) && \
	echo "reports: $(DEMO)/work/reports/; slapd keeps running: make demo-down stops it"

demo-down:
	-$(BIN)/entsync ldap down --dir $(DEMO)/slapd

clean: demo-down
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# `make bench [SCALE=0.1]`: initial load, no-change rerun and 2 % delta of the generated
# region at SCALE (1.0: Grand Est, ~680 schools) against ldapadd/ldapmodify on fresh slapds,
# and the same nights through the three academy DAGs; one table on stdout, bench/results/latest.json.
SCALE ?= 0.1
BENCH_SEED ?= 7
bench: install
	$(BIN)/python -m bench.run --scale $(SCALE) --seed $(BENCH_SEED)

.PHONY: airflow browser-deps

# Debian's chromium for the browser test (tests/airflow/test_airflow_ui.py drives it with playwright's
# Python package and executable_path=/usr/bin/chromium): never a browser download.
browser-deps:
	@if ! command -v chromium >/dev/null; then \
	  echo "installing Debian package chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

# The Airflow UI (api-server, scheduler, dag-processor, triggerer) with the academy DAGs, on
# the demo data: slapd in $(DEMO)/slapd (started if needed), landing generated if missing,
# metadata DB in var/airflow. Prints the URL and the admin password; Ctrl-C stops it.
# PORT=8080 make airflow for a fixed port (default: a free one).
airflow: install
	$(BIN)/entsync airflow --demo $(DEMO) --home var/airflow $(if $(PORT),--port $(PORT))

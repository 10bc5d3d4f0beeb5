# UMS controller. `make run` serves the demo on the embedded default; `make test` runs the
# whole suite against the real PostgreSQL and Redis on 127.0.0.1.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The databases the suite and the benchmarks use (PostgreSQL with trust auth, Redis).
TEST_DATABASE_URL ?= postgres://$(shell id -un)@127.0.0.1:5432/ums
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_BROKER_URL ?= redis://127.0.0.1:6379/3
BENCH_DATABASE_URL ?= postgres://$(shell id -un)@127.0.0.1:5432/ums_bench

.PHONY: venv run test bench lint messages

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet ".[test]"
	touch $@

# LDAP support (the `ldap` extra) compiles python-ldap against libldap2-dev and libsasl2-dev:
# the Debian packages come first (as root), so only `make test` installs it; `make run`
# needs neither root nor the headers, and its portal says directory login is not installed.
$(VENV)/.installed-ldap: $(VENV)/.installed scripts/install-test-packages.sh
	bash scripts/install-test-packages.sh
	$(PY) -m pip install --quiet ".[test,ldap]"
	touch $@

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo
	@echo "Portal and API on http://$(HOST):$(PORT)/ (API docs: /api/docs/)"
	$(VENV)/bin/gunicorn ums.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile -

test: $(VENV)/.installed-ldap
	bash scripts/install-test-packages.sh
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		CELERY_BROKER_URL=$(TEST_BROKER_URL) UMS_TASKS_IN_PROCESS=true \
		UMS_ARGON2_TIME_COST=1 UMS_ARGON2_MEMORY_KIB=1024 UMS_ARGON2_PARALLELISM=1 \
		$(PY) -m pytest $(PYTEST_ARGS)

# Each benchmark seeds its own database (names contain "bench"; seeding truncates tables).
bench: venv
	DATABASE_URL=$(BENCH_DATABASE_URL) $(PY) benchmarks/run.py $(BENCH_ARGS)
	DATABASE_URL=$(BENCH_DATABASE_URL)_mail $(PY) benchmarks/mail.py
	DATABASE_URL=$(BENCH_DATABASE_URL)_servers $(PY) benchmarks/servers.py
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold $(PY) benchmarks/spamhold.py
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold_nodes REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/spamhold_nodes.py
	DATABASE_URL=$(BENCH_DATABASE_URL)_converge REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/converge.py
	DATABASE_URL=$(BENCH_DATABASE_URL)_reconcile REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/reconcile.py

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

messages: venv
	$(PY) manage.py makemessages --all --no-location --ignore=.venv --ignore=var --ignore=tests --ignore=benchmarks
	$(PY) manage.py compilemessages --ignore=.venv

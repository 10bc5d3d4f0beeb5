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
# The suite mostly waits on real daemons in namespaced nodes, so it runs in this many worker
# processes (pytest-xdist; each has its own test database, Redis databases and node slots).
# A whole module stays on one worker (--dist loadfile): its nodes are started once.
TEST_WORKERS ?= 3
BENCH_DATABASE_URL ?= postgres://$(shell id -un)@127.0.0.1:5432/ums_bench

.PHONY: venv run test bench lint messages audit lock

venv: $(VENV)/.installed

# Installs come only from the hashed lock files (requirements/, see README "Supply chain"):
# every file pip downloads must match a recorded hash. The project itself has no packages
# of its own to install (its code runs from this folder), so it is installed without deps.
PIP_LOCKED := $(PY) -m pip install --quiet --require-hashes
$(VENV)/.installed: pyproject.toml requirements/dev.txt requirements/pip.txt
	python3 -m venv $(VENV)
	$(PIP_LOCKED) -r requirements/pip.txt
	$(PIP_LOCKED) -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps .
	touch $@

# LDAP support (the `ldap` extra) compiles python-ldap against libldap2-dev and libsasl2-dev:
# the Debian packages come first (as root), so only `make test` installs it; `make run`
# needs neither root nor the headers, and its portal says directory login is not installed.
$(VENV)/.installed-ldap: $(VENV)/.installed scripts/install-test-packages.sh requirements/test.txt
	bash scripts/install-test-packages.sh
	$(PIP_LOCKED) -r requirements/test.txt
	touch $@

# One supervisor (ums/embedded/supervisor.py): embedded PostgreSQL under var/ (unless
# DATABASE_URL is set) -> migrate -> collectstatic -> seed_demo -> gunicorn + the task
# runner; Ctrl-C stops all of it. DEMO_NODES=1 also starts two local mail nodes (root).
DEMO_NODES ?= 0
# The demo nodes have no syslog and no DNS: every process (portal, task runner) must render
# their files with a log file of Postfix's own and without network spam checks, or the
# next mail change would converge them back to settings they cannot run with.
DEMO_NODE_SETTINGS := {"postfix_maillog_file": "/var/spool/postfix/maillog", "lda_log_file": "/var/lib/ums-lda/lda.log", "spam_network_checks": false}
run: venv
	$(if $(filter 1,$(DEMO_NODES)),UMS_NODE_SETTINGS='$(or $(UMS_NODE_SETTINGS),$(DEMO_NODE_SETTINGS))') \
	$(PY) manage.py serve_embedded --host $(HOST) --port $(PORT) $(if $(filter 1,$(DEMO_NODES)),--demo-nodes)

TEST_ENV = DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	CELERY_BROKER_URL=$(TEST_BROKER_URL) UMS_TASKS_IN_PROCESS=true \
	UMS_ARGON2_TIME_COST=1 UMS_ARGON2_MEMORY_KIB=1024 UMS_ARGON2_PARALLELISM=1
# Two passes: everything but the browser tests in parallel, then the browser tests alone.
# Chromium aborts its loads with ERR_NETWORK_CHANGED whenever an interface appears or goes
# on the host, which is what the other workers' namespaced nodes do all the time. Exit
# status 5 (no test selected, e.g. PYTEST_ARGS names a folder without browser tests) is fine.
test: $(VENV)/.installed-ldap
	bash scripts/install-test-packages.sh
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not browser" \
		$(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(TEST_ENV) $(PY) -m pytest -m browser $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Each benchmark seeds its own database (names contain "bench"; seeding truncates tables).
# Every benchmark runs even when an earlier one misses its target; the names of those
# that missed (non-zero exit) are listed at the end, and then make fails.
BENCH_MISSED = var/bench-missed.txt
bench: venv
	@mkdir -p var && rm -f $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL) $(PY) benchmarks/run.py $(BENCH_ARGS) || echo run.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_mail $(PY) benchmarks/mail.py || echo mail.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_mail $(PY) benchmarks/throughput.py || echo throughput.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_mail $(PY) benchmarks/concurrent_writes.py || echo concurrent_writes.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_mail REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/concurrent_writes_http.py || echo concurrent_writes_http.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_servers $(PY) benchmarks/servers.py || echo servers.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold $(PY) benchmarks/spamhold.py || echo spamhold.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold_nodes REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/spamhold_nodes.py || echo spamhold_nodes.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold_reconcile $(PY) benchmarks/spamhold_reconcile.py || echo spamhold_reconcile.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_spamhold_resume REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/spamhold_resume.py || echo spamhold_resume.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_converge REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/converge.py || echo converge.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_reconcile REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/reconcile.py || echo reconcile.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_dump $(PY) benchmarks/dump.py || echo dump.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_restore $(PY) benchmarks/restore.py || echo restore.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_offnode $(PY) benchmarks/offnode.py || echo offnode.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_offnode $(PY) benchmarks/offnode_verify.py || echo offnode_verify.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_usage $(PY) benchmarks/usage.py || echo usage.py >> $(BENCH_MISSED)
	DATABASE_URL=$(BENCH_DATABASE_URL)_failover REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/failover.py || echo failover.py >> $(BENCH_MISSED)
	@if [ -s $(BENCH_MISSED) ]; then echo "targets missed: $$(tr '\n' ' ' < $(BENCH_MISSED))"; exit 1; fi

# Known vulnerabilities in every locked package (pip-audit; needs PyPI's per-release JSON
# API). Accepted findings go to requirements/audit-ignore.txt, one id and its reason a line.
AUDIT_IGNORES = $(shell sed -n 's/^\([A-Za-z0-9-]\+\).*/--ignore-vuln \1/p' requirements/audit-ignore.txt)
audit: venv
	$(PY) -m pip_audit --strict --require-hashes --disable-pip --progress-spinner off \
		-r requirements/test.txt $(AUDIT_IGNORES)

# Re-solve requirements/*.txt after a change in pyproject.toml (needs uv on PATH).
lock:
	bash scripts/lock-requirements.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

messages: venv
	$(PY) manage.py makemessages --all --no-location --ignore=.venv --ignore=var --ignore=tests --ignore=benchmarks
	$(PY) manage.py compilemessages --ignore=.venv

# Two commands for a newcomer: `make run` and `make test`. Everything installs into .venv from
# uv.lock (uv itself is pinned and installed into the venv by pip).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
PORT ?= 8000
HOST ?= 127.0.0.1
WEB_CONCURRENCY ?= 2
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run serve worker test lint format migrate bench-ledger bench-funding clean

$(VENV)/.installed: pyproject.toml uv.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --inexact --quiet
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

# Development: embedded defaults (SQLite, in-memory layer, sandbox gateway), DEBUG. One Daphne
# plus, without REDIS_URL, a Celery worker with beat on a filesystem broker in .run/
# (config/serve.py); Ctrl-C stops them all.
run: export DEBUG ?= true
run: export EMAIL_URL ?= consolemail://
run: install migrate
	$(PY) manage.py load_demo
	$(PY) -m config.serve --host 127.0.0.1 --port $(PORT) --workers 1

# Production mode: no demo data, DEBUG off unless set, several Daphne processes on one port
# (restarted if one exits); without REDIS_URL also the worker with beat, as in `make run`.
serve: export DEBUG ?= false
serve: install migrate
	$(PY) -m config.serve --host $(HOST) --port $(PORT) --workers $(WEB_CONCURRENCY) --restart

worker: install
	$(VENV)/bin/celery -A config worker --beat -Q high,default,webhooks -l INFO --concurrency $${CELERY_CONCURRENCY:-2}

# The browser tests drive Debian's Chromium through Playwright (never `playwright install`,
# which downloads browsers); installed once, only when it is missing.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y chromium \
	  || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# The serving tests run deploy/nginx.conf in front of Daphne (tests/config/test_serving.py).
NGINX := /usr/sbin/nginx
$(NGINX):
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y --no-install-recommends nginx-light \
	  || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends nginx-light; }

test: export CELERY_TASK_ALWAYS_EAGER ?= true
test: install $(CHROMIUM) $(NGINX)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The ledger's throughput beside pgbench's (docs/PERFORMANCE.md); PostgreSQL on loopback only.
bench-ledger: install
	DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
	  $(PY) bench/ledger.py $(BENCH_ARGS)

# The whole money-in path on the full stack (docs/PERFORMANCE.md); loopback only.
bench-funding: install
	DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
	  $(PY) bench/funding.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* staticfiles .pytest_cache .run

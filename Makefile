# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

# Where `make run` serves; the Procfile's web process reads it too.
export WEB_BIND ?= 127.0.0.1:8000
# Files collectstatic gathers from this checkout (the installed packages' own come with .installed).
STATIC_SOURCES := $(shell find . -path ./var -prune -o -path ./.venv -prune -o -path '*/static/*' -type f -print)

.PHONY: run address test bench load reset clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## Set up and start web, worker and beat on embedded defaults, with demo data.
## Everything it writes goes under var/ (database, broker queue, static files, metrics).
run: address $(BIN)/.installed var/static/.collected
	@$(BIN)/python manage.py seed_demo --migrate
	@PATH="$(abspath $(BIN)):$$PATH" ACCESS_LOG_LEVEL=WARNING $(BIN)/honcho start -f Procfile

address:
	@echo "Red packets: open http://$(WEB_BIND)/ for the chat client. Ctrl-C stops it; make reset starts over."

# Compressing the static files takes ~20 s: only when the packages or this checkout's files changed.
var/static/.collected: $(BIN)/.installed $(STATIC_SOURCES)
	@echo "Collecting static files (once, then only after changes)..."
	@$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@touch $@

## Set up and run the whole test suite (PostgreSQL and Redis when reachable).
test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Claims-per-second benchmark on PostgreSQL; writes docs/performance.md.
bench: $(BIN)/.installed
	$(BIN)/python bench/claims.py

## Load test of the whole stack (gunicorn, PostgreSQL, Redis, Celery) under locust; writes docs/performance.md.
load: $(BIN)/.installed
	$(BIN)/python bench/load/run.py

## Forget the local run's data: database, broker queue, static files, logs, test screenshots.
reset:
	rm -rf var

## Everything `make run` and `make test` created, the virtualenv included.
clean: reset
	rm -rf $(VENV) .pytest_cache .hypothesis

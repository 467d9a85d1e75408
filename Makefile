# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench load clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## Set up and start web, worker and beat on embedded defaults, with demo data.
run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py seed_demo
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start -f Procfile

## Set up and run the whole test suite (PostgreSQL and Redis when reachable).
test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Claims-per-second benchmark on PostgreSQL; writes docs/performance.md.
bench: $(BIN)/.installed
	$(BIN)/python bench/claims.py

## Load test of the whole stack (gunicorn, PostgreSQL, Redis, Celery) under locust; writes docs/performance.md.
load: $(BIN)/.installed
	$(BIN)/python bench/load/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis

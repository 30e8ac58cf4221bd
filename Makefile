# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-peers postgres chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,postgres,otel,dev]'
	touch $(STAMP)

## run: the producer API on SQLite at http://127.0.0.1:8080 and a receiver at :8000 wired to it
run: $(STAMP)
	$(BIN)/convhook dev

## test: lint, type-check and the whole test suite (SQLite, a throwaway PostgreSQL, headless chromium)
test: $(STAMP) postgres chromium lint typecheck pytest

postgres:
	bash scripts/ensure-postgres

## chromium: Debian's chromium for the dashboard's browser test
chromium:
	bash scripts/ensure-chromium

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict

# Three workers on two cores: most tests wait on subprocesses, servers and fsyncs, not CPU
# (measured here: the whole suite in under 6 minutes with three).
PYTEST_WORKERS ?= 3

pytest: $(STAMP)
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --cov --cov-report=term --cov-fail-under=85 -p no:cacheprovider

## bench: every benchmark, each printing its own table with a baseline from the same run
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || true
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/dispatch.py --db temp --dispatchers 1,2,4
	$(MAKE) bench-peers

## bench-peers: convhook against a Celery worker (Redis broker) and a FastAPI receiver
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[server,postgres,dev,bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || true
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .ruff_cache

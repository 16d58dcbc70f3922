# Costlake: `make run` serves the app on embedded defaults; `make test` sets up and runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)
# Test workers: each runs whole modules (--dist loadfile), so a module's servers and fixtures stay together.
PYTEST_WORKERS ?= 2

.PHONY: setup run test test-all lint format status pipeline bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

run: setup  ## serve the app on http://localhost:8501 (embedded Postgres, Kafka, lake, Spark)
	$(BIN)/python -m app.serve --server.port 8501

test: setup  ## lint, the whole suite against real embedded servers (Sail), then the pure transforms on JVM Spark
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25
	$(BIN)/python -m pytest --engine jvm -m transform

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

status: setup  ## each service, where it runs and whether it is healthy
	$(BIN)/python -m backend.runtime status

bench: setup  ## every benchmark; results land in bench/results/
	$(BIN)/python -m bench

clean-venv:
	rm -rf $(VENV)

# Diamond — `make help` lists the targets. Everything installs into .venv from the lock files.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := UV_LINK_MODE=copy $(BIN)/uv
# Debian's chromium, driven by Playwright in tests/e2e/test_dashboard.py (never `playwright install`: no CDN here)
CHROMIUM := /usr/bin/chromium
# Debian's PostgreSQL 15 server binaries: the tests start a throwaway cluster with them (tests/helpers/postgres.py)
PG_CTL := /usr/lib/postgresql/15/bin/pg_ctl
export BENTOML_DO_NOT_TRACK := True
export MLFLOW_DISABLE_TELEMETRY := true

.DEFAULT_GOAL := help
.PHONY: help install dev demo test test-fast chromium postgresql bento lint format bench bench-synthetic bench-features bench-batch bench-model-quality bench-load bench-serving bench-reliability bench-spark lock clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/uv:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Diamond needs Python 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.runtime: requirements.lock pyproject.toml | $(BIN)/uv
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

$(VENV)/.dev: requirements-dev.lock pyproject.toml | $(BIN)/uv
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime ## Create .venv and install Diamond with its locked dependencies

dev: $(VENV)/.dev ## Create .venv with the dev extras (pytest, hypothesis, ruff)

demo: $(VENV)/.runtime ## Run the whole product end to end on the bundled CDNOW data
	$(BIN)/diamond demo --out demo-output

test: $(VENV)/.dev $(CHROMIUM) $(PG_CTL) ## Run every tier (unit, integration, e2e) in parallel; installs Debian's chromium and postgresql
	$(BIN)/pytest -n auto

test-fast: $(VENV)/.dev ## Run the unit tier only: pure functions, no servers or stores (about 30 s on two cores)
	$(BIN)/pytest tests/unit -n auto

chromium: $(CHROMIUM) ## Install Debian's chromium for the dashboard's browser tests (needs root and apt)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

postgresql: $(PG_CTL) ## Install Debian's PostgreSQL server for the store tests (needs root and apt; no cluster is started)

$(PG_CTL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15

/usr/bin/wrk: # the closed-loop load generator of bench-serving (Debian's wrk; needs root and apt)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk

bento: $(VENV)/.runtime ## Build the service as a Bento (bentofile.yaml): then `bentoml serve diamond:latest` or `bentoml containerize diamond:latest`
	$(BIN)/bentoml build

lint: $(VENV)/.dev ## ruff lint and format check, then mypy over core/ features/ training/ serving/ diamond/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev ## Fix lint and formatting where ruff can
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-synthetic: $(VENV)/.dev ## Benchmark the synthetic generator at 1M customers (minutes)
	$(BIN)/python bench/bench_synthetic.py --customers 1000000

bench-features: $(VENV)/.dev ## Benchmark feature building vs hand-written SQL and pandas (100k/1M/3M; ~15 min)
	$(BIN)/python bench/bench_features.py --customers 100000 1000000 3000000
	$(BIN)/python bench/bench_features.py --customers 1000000 --threads 2 --pin

bench-batch: $(VENV)/.dev ## diamond score vs a hand-written DuckDB + inplace_predict reference, 100k and 1M customers
	$(BIN)/python bench/bench_batch.py --customers 100000 1000000

bench-model-quality: $(VENV)/.dev ## Model vs a plain peer, baselines and a perfect model, two synthetic seeds (~30 min)
	$(BIN)/python bench/bench_model_quality.py --customers 50000 --seeds 0 1

bench-load: $(VENV)/.dev ## Load on a real diamond serve: 5 min each of healthz, single and 1,000-row /score
	$(BIN)/python bench/bench_load.py --duration 300

bench-serving: $(VENV)/.dev /usr/bin/wrk ## /score by id vs a bare BentoML service on the same booster, closed loop (~15 min)
	$(BIN)/python bench/bench_serving.py --duration 10 --rounds 3

bench-reliability: bench-load ## The long reliability run: 5-min loads, then 10x fuzzing and 10x delivery faults (~35 min)
	DIAMOND_FUZZ_EXAMPLES=300 DIAMOND_FAULT_ALERTS=1200 $(BIN)/pytest -s -q -p no:cacheprovider \
		tests/e2e/test_reliability_api.py tests/e2e/test_reliability_delivery.py tests/e2e/test_bad_input.py \
		tests/integration/test_bad_input.py tests/e2e/test_serving.py

bench-spark: $(VENV)/.dev ## DuckDB vs Spark local[2] training sets at 1M customers: time, peak memory, task costs (~1 h)
	$(BIN)/python bench/bench_spark.py --customers 1000000 --json bench/spark_results_1m.json

bench: bench-synthetic bench-features bench-batch bench-model-quality bench-serving bench-reliability bench-spark ## Run every benchmark under bench/

lock: | $(BIN)/uv ## Re-resolve the lock files from pyproject.toml
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.lock
	$(UV) pip compile --quiet --python-version 3.11 --extra dev pyproject.toml -o requirements-dev.lock

clean: ## Remove .venv and generated outputs
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .mypy_cache .hypothesis test-artifacts

# hybridmem front door. `make run` serves the app; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test test-fast test-faults lint bench bench-gpu bench-report clean

# Idempotent: re-installs only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml client/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (hybridmem needs Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and exactly pinned, so that no other requirement pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The client package first in the same command: it satisfies the server's hybridmem-client requirement.
	$(BIN)/python -m pip install --quiet -e './client[langgraph,mcp]' -e '.[dev,langgraph]'
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/hybridmem run --host $(HOST) --port $(PORT)

test: setup
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not serve and not slow" $(PYTEST_ARGS)

# Stores and replicas fail under load; prints the fault table (FAULTS_JSON=path also saves it as JSON).
test-faults: setup
	HYBRIDMEM_FAULTS_JSON=$(FAULTS_JSON) $(BIN)/python -m pytest -q -ra -m faults $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check core deployments jobs bench tests client
	$(BIN)/ruff format --check core deployments jobs bench tests client
	$(BIN)/mypy core deployments jobs bench client/hybridmem_client
	$(BIN)/lint-imports

# Every benchmark, each against a fresh local app; JSON into bench/results, report into docs/benchmarks.md.
RESULTS := bench/results
HM := $(BIN)/hybridmem
bench: setup
	mkdir -p $(RESULTS)
	$(HM) bench embed --json --out $(RESULTS)/embed.json
	$(HM) bench ingest --episodes 50000 --batch 500 --clients 4 --json --out $(RESULTS)/ingest.json
	$(HM) bench retrieve --memories 10000 --clients 16 --json --out $(RESULTS)/retrieve_10k.json
	$(HM) bench retrieve --memories 100000 --clients 16 --json --out $(RESULTS)/retrieve_100k.json
	$(HM) bench consolidate --json --out $(RESULTS)/consolidate.json
	$(HM) bench locomo --json --out $(RESULTS)/quality_locomo.json
	$(HM) bench scifact --json --out $(RESULTS)/quality_scifact.json
	$(HM) bench soak --duration 300 --json --out $(RESULTS)/soak.json
	$(HM) bench updates --json --out $(RESULTS)/updates.json
	$(MAKE) test-faults FAULTS_JSON=$(CURDIR)/$(RESULTS)/faults.json
	$(MAKE) bench-report

# On a machine with a GPU (CI has none): the GPU tests, then the Embedder's in-process GPU benchmark.
bench-gpu: setup
	mkdir -p $(RESULTS)
	$(BIN)/python -m pytest -q -ra -m gpu tests/unit/test_embedding_gpu.py
	$(BIN)/python -m bench.embed_device --json --out $(RESULTS)/embed_device.json

bench-report: setup
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

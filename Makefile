# Two commands set everything up on a fresh machine:
#   make demo   -- create .venv, install, run the embedded demo experiment (offline, CPU, no LLM)
#   make test   -- create .venv, install, run the test suite (slow tests skipped)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is pinned here: a bare `torch` requirement can pull a multi-GB CUDA
# build. Override for a GPU machine, e.g. `make demo TORCH=torch==2.13.0+cu128`.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/airlab run demo --workers 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# Lab overhead % of an experiment's wall time and trainer / plain-loop throughput (~3-6 min on
# 2 quiet cores; add ARGS="--quality 1e6" for the 1M-token validation-loss check).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_trainer.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/airlab

clean:
	rm -rf $(VENV) .airlab .pytest_cache

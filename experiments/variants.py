"""The names of attention variants: the strings in ``results/*.csv`` and how the paper prints them.

`variant_name` is the one namer, and a model is named by what its attention runs:

* a **trained** byte GPT by its `AttentionConfig`, `variant_name` of the config: ``softmax``,
  ``entmax1.5``, ``sparsemax``, ``learned``, ``scheduled-linear``, ``scheduled-linear-gated``,
  ``scheduled-absolute-linear``, ``scheduled-sparsemax-linear``, ``scheduled-cosine`` … An experiment
  that sweeps the hydra group ``attention`` takes the config file's name (``configs/attention/<name>.yaml``:
  ``entmax``, ``scheduled_gated`` …) as an input only, for training and its run folders; its rows name
  the model `file_variant` of the file, the `variant_name` of the config the file composes to;
* a **pretrained** model whose attention is swapped without training by the α its attention runs,
  `variant_name` of the α: ``softmax`` (α = 1), ``alpha=1.25``, ``scheduled``, ``scheduled-gated``,
  ``per-head`` (a tensor of α per layer and head).

`display_name` is the plain text a table or a sentence prints for a name, and `fixed_alpha` the α it
stands for where it stands for one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from entropic.attention import EntropySchedule
from entropic.models import AttentionConfig
from entropic.ops.entmax_attention.schedule import check_alpha

__all__ = ["ALPHA_PREFIX", "ENTMAX_PREFIX", "display_name", "file_variant", "fixed_alpha", "variant_name"]

ALPHA_PREFIX = "alpha="  # a fixed α applied to a pretrained model: "alpha=1.25"
ENTMAX_PREFIX = "entmax"  # a trained model's fixed α: "entmax1.5"


def _schedule_name(schedule: EntropySchedule, shape: bool) -> str:
    """``scheduled``, then ``sparsemax`` for a schedule on the sparsemax entropy, or else ``absolute`` for
    one on absolute softmax entropy, the shape (when `shape`, or when it is not linear) and ``gated``
    when gated, joined by ``-``."""
    parts = ["scheduled"]
    if schedule.source == "sparsemax":  # always in nats
        parts.append("sparsemax")
    elif schedule.absolute:
        parts.append("absolute")
    if shape or schedule.shape != "linear":
        parts.append(schedule.shape)
    if schedule.varentropy_threshold is not None:
        parts.append("gated")
    return "-".join(parts)


def variant_name(attention: AttentionConfig | Mapping[str, Any] | float | EntropySchedule | Tensor) -> str:
    """The name under which results/*.csv record an attention variant.

    Parameters
    ----------
    attention : AttentionConfig, mapping, float, EntropySchedule or Tensor
        A trained model's attention: its `AttentionConfig`, or a run's resolved ``model.attention`` in any
        format `AttentionConfig.from_dict` reads (named by kind: ``entmax1.5``, ``scheduled-linear-gated``).
        Or the α handed to a pretrained model's attention: a number (``softmax`` at 1, else
        ``alpha=<α>``), an `EntropySchedule` (``scheduled``, ``scheduled-gated``; a shape other than linear
        is named: ``scheduled-cosine``; a schedule on absolute entropy: ``scheduled-absolute``; on the
        sparsemax entropy: ``scheduled-sparsemax``) or an
        ``(L, H)`` tensor of α per layer and head (``per-head``).

    Examples
    --------
    >>> variant_name({"kind": "entmax", "alpha": 1.25}), variant_name(1.25), variant_name(1.0)
    ('entmax1.25', 'alpha=1.25', 'softmax')
    >>> variant_name(AttentionConfig(alpha=EntropySchedule(varentropy_threshold=1.0)))
    'scheduled-linear-gated'
    >>> variant_name(EntropySchedule(varentropy_threshold=1.0))
    'scheduled-gated'
    """
    if isinstance(attention, AttentionConfig):
        config = attention
    elif isinstance(attention, Mapping):
        config = AttentionConfig.from_dict(attention)
    else:
        alpha = check_alpha(attention, name="attention")
        if isinstance(alpha, Tensor):
            return "per-head"
        if isinstance(alpha, EntropySchedule):
            return _schedule_name(alpha, shape=False)
        return "softmax" if alpha == 1 else f"{ALPHA_PREFIX}{alpha:g}"
    if config.kind == "entmax":
        return f"{ENTMAX_PREFIX}{config.alpha:g}"
    if config.kind == "scheduled":
        return _schedule_name(config.alpha, shape=True)
    return config.kind


def file_variant(name: str) -> str:
    """`variant_name` of the attention config that ``configs/attention/<name>.yaml`` composes to.

    Parameters
    ----------
    name : str
        A choice of the hydra group ``attention`` (``attention=<name>``), e.g. ``entmax`` or
        ``scheduled_gated``.

    Returns
    -------
    str
        The name the model trained with that file is recorded under.

    Raises
    ------
    ValueError
        When ``configs/attention/<name>.yaml`` does not exist.

    Examples
    --------
    >>> file_variant("entmax"), file_variant("scheduled_gated")
    ('entmax1.5', 'scheduled-linear-gated')
    """
    from omegaconf import OmegaConf

    from experiments.train import CONFIG_DIR, compose_train

    files = sorted(p.stem for p in (Path(CONFIG_DIR) / "attention").glob("*.yaml"))
    if name not in files:
        raise ValueError(f"name must be one of configs/attention/*.yaml ({', '.join(files)}), got {name!r}")
    attention = compose_train([f"attention={name}"]).model.attention
    return variant_name(OmegaConf.to_container(attention, resolve=True))


def fixed_alpha(name: str) -> str | None:
    """The one α a variant `name` stands for, as written (``"1.25"``), or None (softmax, schedules, …).

    Names with a fixed α: ``alpha=<α>`` (`variant_name` of a number), ``entmax<α>`` and ``sparsemax``
    (α = 2; `variant_name` of a config).

    >>> fixed_alpha("alpha=1.25"), fixed_alpha("entmax1.25"), fixed_alpha("sparsemax")
    ('1.25', '1.25', '2')
    >>> fixed_alpha("scheduled-linear") is None and fixed_alpha("entmax") is None
    True
    """
    for prefix in (ALPHA_PREFIX, ENTMAX_PREFIX):
        value = name.removeprefix(prefix)
        if value != name and re.fullmatch(r"\d+(\.\d+)?", value):
            return value
    return "2" if name == "sparsemax" else None


def display_name(name: str) -> str:
    """How the paper prints a variant `name` (of `variant_name`), as plain text.

    A fixed α (`fixed_alpha`) reads ``α = <α>``, so that a trained and a pretrained model with the same
    attention share one name; every other name is printed as it is.

    >>> display_name("alpha=1.25"), display_name("entmax1.5"), display_name("scheduled-gated")
    ('α = 1.25', 'α = 1.5', 'scheduled-gated')
    """
    alpha = fixed_alpha(name)
    return name if alpha is None else f"α = {alpha}"

"""The names of attention variants: the strings in ``results/*.csv`` and how the paper prints them.

Two kinds of experiment name a variant, and the committed CSVs keep both conventions:

* a **trained** byte GPT is named by its `AttentionConfig`, `variant_name` of the config: ``softmax``,
  ``entmax1.5``, ``sparsemax``, ``learned``, ``scheduled-linear``, ``scheduled-cosine-gated`` (the
  ablation and scaling sweeps); experiments that sweep the hydra group ``attention`` name a run by its
  config file instead, `config_name`: ``softmax``, ``entmax``, ``scheduled``, ``scheduled_gated`` …
  (``configs/attention/<name>.yaml``; complexity and trained lengths);
* a **pretrained** model whose attention is swapped without training is named by the α its attention
  runs, `variant_name` of the α: ``softmax`` (α = 1), ``alpha=1.25``, ``scheduled``, ``scheduled-gated``,
  ``per-head`` (a tensor of α per layer and head).

`display_name` is the plain text a table or a sentence prints for a name of either convention, and
`fixed_alpha` the α it stands for where it stands for one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from entropic.attention import EntropySchedule
from entropic.models import AttentionConfig
from entropic.ops.entmax_attention.schedule import check_alpha

__all__ = ["ALPHA_PREFIX", "ENTMAX_PREFIX", "config_name", "display_name", "fixed_alpha", "variant_name"]

ALPHA_PREFIX = "alpha="  # a fixed α applied to a pretrained model: "alpha=1.25"
ENTMAX_PREFIX = "entmax"  # a trained model's fixed α: "entmax1.5"
# configs/attention/<name>.yaml whose α the file sets, as the α-convention name of the same attention
_CONFIG_ALPHA = {"entmax": 1.5, "sparsemax": 2.0}


def _config(attention: AttentionConfig | Mapping[str, Any]) -> AttentionConfig:
    if isinstance(attention, AttentionConfig):
        return attention
    if isinstance(attention, Mapping):
        return AttentionConfig.from_dict(attention)
    raise TypeError(
        f"attention must be an AttentionConfig or a mapping of one, got {type(attention).__name__}"
    )


def _schedule_name(schedule: EntropySchedule, separator: str, shape: bool) -> str:
    """``scheduled``, then ``sparsemax`` for a schedule on the sparsemax entropy, or else ``absolute`` for
    one on absolute softmax entropy, the shape (when `shape`, or when it is not linear) and ``gated``
    when gated."""
    parts = ["scheduled"]
    if schedule.source == "sparsemax":  # always in nats
        parts.append("sparsemax")
    elif schedule.absolute:
        parts.append("absolute")
    if shape or schedule.shape != "linear":
        parts.append(schedule.shape)
    if schedule.varentropy_threshold is not None:
        parts.append("gated")
    return separator.join(parts)


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
    if isinstance(attention, AttentionConfig | Mapping):
        config = _config(attention)
    else:
        alpha = check_alpha(attention, name="attention")
        if isinstance(alpha, Tensor):
            return "per-head"
        if isinstance(alpha, EntropySchedule):
            return _schedule_name(alpha, "-", shape=False)
        return "softmax" if alpha == 1 else f"{ALPHA_PREFIX}{alpha:g}"
    if config.kind == "entmax":
        return f"{ENTMAX_PREFIX}{config.alpha:g}"
    if config.kind == "scheduled":
        return _schedule_name(config.alpha, "-", shape=True)
    return config.kind


def config_name(attention: AttentionConfig | Mapping[str, Any]) -> str:
    """The ``configs/attention/<name>.yaml`` choice a trained model's attention is named by.

    The kind, and for a schedule ``absolute`` on absolute entropy, its shape where not linear and ``gated``
    with the varentropy gate, joined by ``_``: ``softmax``, ``entmax`` (any α), ``sparsemax``, ``learned``,
    ``scheduled``, ``scheduled_absolute``, ``scheduled_cosine``, ``scheduled_gated``,
    ``scheduled_sparsemax`` (the schedule on the sparsemax entropy).

    >>> config_name({"kind": "scheduled", "alpha": {"varentropy_threshold": 1.0}})
    'scheduled_gated'
    """
    config = _config(attention)
    if config.kind == "scheduled":
        return _schedule_name(config.alpha, "_", shape=False)
    return config.kind


def fixed_alpha(name: str) -> str | None:
    """The one α a variant `name` stands for, as written (``"1.25"``), or None (softmax, schedules, …).

    Names with a fixed α: ``alpha=<α>`` (`variant_name` of a number), ``entmax<α>`` and ``sparsemax``
    (`variant_name` of a config) and the config files that set one (`config_name`: ``entmax`` is α = 1.5,
    ``sparsemax`` α = 2).

    >>> fixed_alpha("alpha=1.25"), fixed_alpha("entmax1.25"), fixed_alpha("entmax"), fixed_alpha("scheduled")
    ('1.25', '1.25', '1.5', None)
    """
    for prefix in (ALPHA_PREFIX, ENTMAX_PREFIX):
        value = name.removeprefix(prefix)
        if value != name and re.fullmatch(r"\d+(\.\d+)?", value):
            return value
    return f"{_CONFIG_ALPHA[name]:g}" if name in _CONFIG_ALPHA else None


def display_name(name: str) -> str:
    """How the paper prints a variant `name` (of `variant_name` or `config_name`), as plain text.

    A fixed α (`fixed_alpha`) reads ``α = <α>``, so that a trained and a pretrained model with the same
    attention share one name; every other name is printed as it is.

    >>> display_name("alpha=1.25"), display_name("entmax"), display_name("scheduled-gated")
    ('α = 1.25', 'α = 1.5', 'scheduled-gated')
    """
    alpha = fixed_alpha(name)
    return name if alpha is None else f"α = {alpha}"

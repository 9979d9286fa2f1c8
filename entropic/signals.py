"""Signals that one part of the package produces and another consumes, with no dependency between them.

`EntropixAttentionMetrics` is produced by the attention code (`entropic.attention.entropix_attention_metrics`,
the models' forward) and read by the Entropix sampler (`entropic.sampling.EntropixSampler`): it lives here so
that the sampler does not import the attention package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EntropixAttentionMetrics"]


@dataclass(frozen=True)
class EntropixAttentionMetrics(Mapping):
    """The four Entropix attention signals at the last query of each row; every field has shape ``(B,)``.

    With ``a_h`` the softmax attention of head h over the n visible keys and ``s_h`` its scores. The
    field names and definitions are those the Entropix sampler reads (`entropic.sampling`), and the
    object is a read-only mapping of them, so it can be passed as ``attn_stats`` as it is.

    Attributes
    ----------
    entropy : Tensor
        Mean over heads of the entropy ``H(a_h) = -Σ_k a_hk log a_hk`` (nats).
    varentropy : Tensor
        Variance **across heads** of ``H(a_h)`` (population variance, nats²). This is what Entropix calls
        attention varentropy; it is not the varentropy of any one distribution (that is
        ``AttentionStats.varentropy``).
    agreement : Tensor
        Entropix's ``mean_{h,k} |a_hk - ā_k|`` with ``ā`` the head-mean attention, the mean running over
        heads and visible keys only: 0 when every head attends alike (despite the name, it grows with
        disagreement), at most ``2 / n``.
    interaction_strength : Tensor
        Mean of ``|s_hk|`` over heads and visible keys (score units): how strongly the query couples to
        the context.
    """

    entropy: Tensor
    varentropy: Tensor
    agreement: Tensor
    interaction_strength: Tensor

    @classmethod
    def zeros(cls, batch: int, device: torch.device | str | None = None) -> EntropixAttentionMetrics:
        """Neutral signals: every attention term of the Entropix sampler's formulas drops out."""
        z = torch.zeros(batch, device=device)
        return cls(z, z, z, z)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

"""The types the package shares with its ops: what a kernel returns is what the domain code reads.

`AttentionStats` is returned by every attention backend (the PyTorch path, the flash and the α-entmax
Triton kernels) and read by the attention module, its statistic sinks, the experiments and the samplers;
`EntropixAttentionMetrics` is produced by the attention code and read by the Entropix sampler, which does
not import the attention package. Nothing here imports Triton.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = ["AttentionStats", "EntropixAttentionMetrics"]


@dataclass(frozen=True)
class AttentionStats:
    """Per-query statistics of one attention call; every field has shape ``(B, H, Nq)``.

    Entropy, varentropy and log-partition describe the **softmax** of the scores over the keys the query
    can see (masked and future keys never count), whatever α the attention used: they are the signals
    a schedule reads. Support and sparsity describe the attention distribution actually applied. Rows
    that see no key hold 0 in every field but `alpha`. Statistics are detached from the autograd graph.

    Attributes
    ----------
    entropy : Tensor
        ``H = -Σ_j p_j log p_j`` of ``p = softmax(s)`` over visible keys (nats), in ``[0, log n_visible]``.
    varentropy : Tensor
        ``Σ_j p_j (log p_j + H)²`` (nats²).
    log_partition : Tensor
        ``log Σ_j exp(s_j)`` over visible keys (nats).
    support : Tensor
        int64, number of keys with non-zero weight in the applied attention (α-entmax) distribution.
    sparsity : Tensor
        ``1 - support / n_visible``: the fraction of visible keys the attention ignores.
    n_visible : Tensor
        int64, number of keys the query sees.
    alpha : Tensor
        The α applied to each query.
    block_sparsity : Tensor or None
        0-dim: the fraction of (query block, key block) tiles holding a visible pair in which every
        weight is zero, i.e. the tiles the block-sparse Triton kernel skips. Tiles are those of that
        kernel (`attention_tiles`): the kernel reports the tiles it skipped (smaller ones on float32
        inputs), the reference the tiles the half-precision kernel would skip. None from the dense
        softmax kernel, which skips nothing.
    """

    entropy: Tensor
    varentropy: Tensor
    log_partition: Tensor
    support: Tensor
    sparsity: Tensor
    n_visible: Tensor
    alpha: Tensor
    block_sparsity: Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Means of the per-query fields over the queries that see a key; the block sparsity if known."""
        live = self.n_visible > 0
        n = max(int(live.sum()), 1)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "block_sparsity":
                out[f.name] = float(value.double()[live].sum() / n)
            elif value is not None:
                out[f.name] = float(value)
        return out


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

"""`EntropicAttention`: multi-head self-attention with fixed, learned or entropy-scheduled α-entmax.

Five ways to set ``alpha``:

- a number in [1, 2]: every head and query uses it (1 = softmax, 1.5 = entmax15, 2 = sparsemax);
- a ``(H,)`` tensor: one fixed α per head (a buffer, not trained);
- ``"learned"``: one α per head, ``α_h = 1 + sigmoid(z_h)`` with ``z_h`` a parameter (Correia et al.,
  2019), so α stays in [1, 2] and is never NaN whatever ``z``; ``z = 0`` starts at α = 1.5. The
  α-gradient at α exactly 1 is 0 (`entmax_attention`), so a head whose α reaches 1 (``z`` below about
  -17 in float32, where the sigmoid underflows) stays there;
- an `EntropySchedule`: α per query from the normalised entropy of that query's softmax scores (or
  its entropy in nats, ``absolute=True``), computed in the same forward. α is a *detached* function of
  the scores: the schedule is a rule, not a path for gradients, so the scores are trained only through
  the attention they produce (the schedule's thresholds are piecewise and would otherwise feed gradients
  that push entropies across them);
- a sparse-softmax baseline, `TopKSoftmax` or `ThresholdSoftmax` (softmax over a kept subset of each
  query's keys, for comparisons at matched sparsity).

α-entmax is not invariant to the scale of the scores: ``score_scale`` (a number or one factor per head,
as fitted by `entropic.calibrate_attention`) multiplies each head's scores ``q·k / sqrt(D)``.

The module validates α and its options once, at construction, into an `AttentionPlan`; each forward
calls the trusted op `attend` (no checks, no host sync; ``entropic.attention.check_values`` turns value
checks on for debugging). Statistics go to a *sink*, a callable taking the `AttentionStats` of each
forward (``stats_sink``); `collect_attention_stats` installs sinks on every `EntropicAttention` inside a
model; without one nothing is computed. A positional encoding that rotates queries and keys (RoPE) is a
hook of the module (``rotary``), so that models built on it keep one attention path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from entropic._validation import check_param
from entropic.attention.trusted import (
    AttentionPlan,
    ThresholdSoftmax,
    TopKSoftmax,
    attend,
    check_attention_kind,
    check_score_scale,
    last_query_metrics,
)
from entropic.ops.entmax_attention.certify import Certify, extend_key_bounds
from entropic.ops.entmax_attention.schedule import EntropySchedule
from entropic.types import AttentionStats, EntropixAttentionMetrics

__all__ = ["EntropicAttention", "KVCache", "Rotary", "StatsSink", "collect_attention_stats"]

# Receives the statistics of each forward.
StatsSink = Callable[[AttentionStats], None]
# ``rotary(q, k, position_ids) -> (q, k)``: rotates ``(B, H, N, D)`` queries and ``(B, Hkv, N, D)`` keys of
# the N new positions at ``(B, N)`` positions, before they enter the cache.
Rotary = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class KVCache:
    """Keys and values of the positions one attention layer has seen, ``(B, Hkv, N, D)`` each.

    Pass the same cache to successive `EntropicAttention` calls while decoding; each call appends its
    new keys and values. Start a fresh cache for a new sequence.
    """

    k: Tensor | None = None
    v: Tensor | None = None
    # per-block (kmin, kmax) of k for certified skipping (`key_bounds`): block size, keys covered
    bounds: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    block: int = 0
    bounded: int = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``(B, Hkv, n, D)`` keys and values; return all keys and values so far."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
        return self.k, self.v

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def key_bounds(self, block: int) -> tuple[Tensor, Tensor]:
        """Per-block, per-channel ``(kmin, kmax)`` ``(B, Hkv, ceil(N / block), D)`` of the cached keys,
        kept beside them: each call bounds only the keys appended since the last (and the last block,
        which they may have completed), O(new keys · D) per decoding step."""
        if block != self.block:
            self.bounds, self.block, self.bounded = None, block, 0
        if self.bounded != len(self):
            self.bounds, self.bounded = extend_key_bounds(self.bounds, self.k, block), len(self)
        return self.bounds


class EntropicAttention(nn.Module):
    """Multi-head self-attention ``(B, N, C) → (B, N, C)`` with α-entmax attention weights.

    Parameters
    ----------
    dim : int
        Model width C; a multiple of `n_heads` (head dim ``D = C / n_heads``).
    n_heads : int
        Query heads H.
    n_kv_heads : int, optional
        Key/value heads (grouped-query attention); a divisor of `n_heads`; `n_heads` by default.
    alpha : float, Tensor, EntropySchedule, "learned", TopKSoftmax or ThresholdSoftmax
        A number in [1, 2], a ``(H,)`` tensor of per-head α, an `EntropySchedule`, ``"learned"`` or a
        sparse-softmax baseline (see the module docstring).
    causal : bool
        Causal self-attention (bottom-right aligned when a KV cache makes keys outnumber queries).
    dropout : float
        Dropout on the attention weights during training.
    bias : bool
        Biases in the four projections.
    impl : {"auto", "torch", "triton"}
        Which backends may run (the dispatch rule of `attend`): "auto" runs SDPA for α = 1 without
        statistics, the Triton kernels on CUDA when they apply (no `attn_mask`, no dropout; a schedule
        is then evaluated inside the kernel) and the PyTorch path otherwise; "torch" never runs the
        Triton kernels, "triton" always does.
    rotary : callable, optional
        ``rotary(q, k, position_ids) -> (q, k)``, applied to the new queries and keys before the cache
        (e.g. RoPE); an `nn.Module` is registered as a submodule. Forward's `position_ids` default to
        the positions after the cache.
    certify : Certify, optional
        Certified block skipping on the PyTorch α-entmax path (`AttentionPlan.certify`): key blocks whose
        weights are provably zero are never scored; a `KVCache` keeps their bounds as it grows.
    score_scale : float or Tensor, optional
        A factor (> 0) on every head's scores, or a ``(H,)`` tensor of one per head (a buffer, saved in
        the state dict); None (the default) leaves the scores as they are.

    Examples
    --------
    >>> attn = EntropicAttention(64, n_heads=4, n_kv_heads=2, alpha="learned")
    >>> attn.alpha  # one α per head, 1 + sigmoid(0)
    tensor([1.5000, 1.5000, 1.5000, 1.5000], grad_fn=<AddBackward0>)
    >>> attn(torch.randn(2, 10, 64)).shape
    torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        alpha: float | Tensor | EntropySchedule | Literal["learned"] = 1.5,
        causal: bool = True,
        dropout: float = 0.0,
        bias: bool = False,
        impl: Literal["auto", "torch", "triton"] = "auto",
        rotary: Rotary | None = None,
        certify: Certify | None = None,
        score_scale: float | Tensor | None = None,
    ) -> None:
        super().__init__()
        check_param(dim, "dim", 1, float("inf"), integer=True)
        check_param(n_heads, "n_heads", 1, float("inf"), integer=True)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        check_param(n_kv_heads, "n_kv_heads", 1, float("inf"), integer=True)
        if dim % n_heads:
            raise ValueError(f"dim must be a multiple of n_heads, got dim={dim}, n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(
                f"n_heads must be a multiple of n_kv_heads, got n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        check_param(dropout, "dropout", 0.0, 1.0, high_open=True)
        if impl not in ("auto", "torch", "triton"):
            raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {impl!r}")
        alpha = check_attention_kind(alpha, allow_learned=True)
        score_scale = check_score_scale(score_scale, ((n_heads,),))
        if isinstance(alpha, Tensor) and alpha.shape != (n_heads,):
            raise ValueError(
                f"alpha must be a number, a (H,) = ({n_heads},) tensor, an EntropySchedule or 'learned', "
                f"got a tensor of shape {tuple(alpha.shape)}"
            )

        self.dim, self.n_heads, self.n_kv_heads = dim, n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.causal, self.dropout, self.impl = causal, dropout, impl
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        # α as configured: a number, an EntropySchedule or "learned" (then the parameter `alpha_logit`
        # holds it); a per-head tensor is a buffer, so that it follows the module's device and dtype.
        if isinstance(alpha, Tensor):
            self.register_buffer("_alpha", alpha.detach().clone(), persistent=False)
        else:
            self._alpha = alpha
        learned = isinstance(alpha, str)
        self.alpha_logit = nn.Parameter(torch.zeros(n_heads)) if learned else None
        self.register_buffer("score_scale", score_scale)  # (H,) or None
        # What every forward runs; a tensor α (fixed or learned) is given to each call.
        per_call = learned or isinstance(alpha, Tensor)
        self.plan = AttentionPlan(None if per_call else alpha, causal=causal, impl=impl, certify=certify)
        self.rotary = rotary
        # Set by `collect_attention_stats`; None means no statistics are computed.
        self.stats_sink: StatsSink | None = None

    @property
    def alpha(self) -> float | Tensor | EntropySchedule | TopKSoftmax | ThresholdSoftmax:
        """What the forward passes as α: a number, the ``(H,)`` fixed or learned α, or the schedule."""
        if self.alpha_logit is not None:
            return 1.0 + torch.sigmoid(self.alpha_logit)
        return self._alpha

    def forward(
        self,
        x: Tensor,
        *,
        attn_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        with_metrics: bool = False,
    ) -> Tensor | tuple[Tensor, EntropixAttentionMetrics]:
        """Attend over `x` (and the cached positions).

        Parameters
        ----------
        x : Tensor
            ``(B, N, C)``; with a cache, the N new positions.
        attn_mask : Tensor, optional
            Broadcastable to ``(B, H, N, Nk)`` (Nk = cached + N): boolean (True = keep) or additive; a
            key-padding mask is ``(B, 1, 1, Nk)``. Not checked (see ``entropic.attention.check_values``).
        kv_cache : KVCache, optional
            Appended with this call's keys and values, which attend together with the cached ones.
        position_ids : Tensor, optional
            ``(B, N)`` positions given to the `rotary` hook; ``cached, cached + 1, ...`` by default.
        with_metrics : bool
            Also return the Entropix signals of the last query (`entropix_attention_metrics` of the
            queries and keys attended, after the rotary hook).

        Returns
        -------
        Tensor or (Tensor, EntropixAttentionMetrics)
            ``(B, N, C)``, and the ``(B,)`` metrics when asked.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        k = self.k_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, N, D)
        v = self.v_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            if position_ids is None:
                past = 0 if kv_cache is None else len(kv_cache)
                position_ids = torch.arange(past, past + n, device=x.device).expand(b, n)
            q, k = self.rotary(q, k, position_ids)
        bounds = None
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, Hkv, Nk, D)
            if self.plan.certify is not None:
                bounds = kv_cache.key_bounds(self.plan.certify.block)
        sink = self.stats_sink
        plan = self.plan if sink is None else replace(self.plan, stats=True)
        result = attend(
            q,
            k,
            v,
            plan,
            alpha=self.alpha if plan.alpha is None else None,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            key_bounds=bounds,
            score_scale=self.score_scale,
        )
        if sink is not None:
            result, stats = result
            sink(stats)
        out = self.out_proj(result.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim))
        if with_metrics:
            return out, last_query_metrics(q, k, attn_mask=attn_mask)
        return out

    def extra_repr(self) -> str:
        alpha = self._alpha.tolist() if isinstance(self._alpha, Tensor) else self._alpha
        return (
            f"dim={self.dim}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"head_dim={self.head_dim}, alpha={alpha!r}, causal={self.causal}, dropout={self.dropout}, "
            f"impl={self.impl!r}" + (f", certify={self.plan.certify}" if self.plan.certify else "")
        ) + ("" if self.score_scale is None else f", score_scale={self.score_scale.tolist()}")


@contextmanager
def collect_attention_stats(model: nn.Module) -> Iterator[dict[str, AttentionStats]]:
    """Record the `AttentionStats` of every `EntropicAttention` in `model` while the block runs.

    Yields a dict from each attention module's qualified name to the statistics of its latest forward
    (with a KV cache: of the latest decoding step). On exit the modules stop recording; the dict keeps
    what was collected.

    Examples
    --------
    >>> model = nn.Sequential(EntropicAttention(32, 4), EntropicAttention(32, 4, alpha=EntropySchedule()))
    >>> with collect_attention_stats(model) as stats:
    ...     _ = model(torch.randn(1, 6, 32))
    >>> sorted(stats), stats["1"].alpha.shape
    (['0', '1'], torch.Size([1, 4, 6]))
    """
    collected: dict[str, AttentionStats] = {}
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, EntropicAttention)]

    def sink(name: str) -> StatsSink:
        def store(stats: AttentionStats) -> None:
            collected[name] = stats

        return store

    previous = [m.stats_sink for _, m in modules]
    for name, m in modules:
        m.stats_sink = sink(name)
    try:
        yield collected
    finally:
        for (_, m), restored in zip(modules, previous, strict=True):
            m.stats_sink = restored

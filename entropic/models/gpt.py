"""A small pre-norm GPT with rotary positions whose attention is a swappable `EntropicAttention`.

Byte-level by default (vocabulary 256: one token per UTF-8 byte, no tokenizer to download). Every block
is ``x + Attn(Norm(x))`` then ``x + MLP(Norm(x))``; queries and keys are rotated by RoPE from explicit
``position_ids``, so left-padded rows see the positions they would see alone. The attention of every
layer is chosen by `AttentionConfig`: a `kind` and the ``alpha`` that kind runs (each can be inferred
from the other):

========== ================ ==========================================================================
kind       alpha            attention
========== ================ ==========================================================================
softmax    1                ``scaled_dot_product_attention`` (the flash kernel or the PyTorch path while
                            statistics are collected)
entmax     a number in      fixed α (1.5 = entmax15, the default), exact zeros below a per-query
           (1, 2)           threshold
sparsemax  2
learned    "learned"        one α per head, ``α_h = 1 + sigmoid(z_h)``, trained with the model
scheduled  EntropySchedule  α per query from the normalised entropy of its softmax scores (or the
                            entropy in nats), with an optional varentropy gate that keeps settled
                            queries at a fixed α
========== ================ ==========================================================================

Every block's attention is an `EntropicAttention` with RoPE as its ``rotary`` hook: one attention path
and one dispatch rule (`entropic.attention.attend`) for every kind.

The forward pass follows the calling convention of `entropic.sampling.generate` (that of Hugging Face
causal LMs), so `generate` decodes with a KV cache on it. Checkpoints hold the resolved `GPTConfig` next
to the weights; `GPT.from_checkpoint` rebuilds the model from the file alone.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropic._validation import check_param
from entropic.attention import (
    EntropicAttention,
    EntropixAttentionMetrics,
    EntropySchedule,
    KVCache,
)
from entropic.ops.entmax_attention.schedule import check_alpha

__all__ = [
    "ATTENTION_KINDS",
    "CHECKPOINT_FORMAT",
    "GPT",
    "AttentionConfig",
    "GPTConfig",
    "GPTOutput",
    "atomic_save",
    "load_checkpoint",
]

ATTENTION_KINDS: tuple[str, ...] = ("softmax", "entmax", "sparsemax", "learned", "scheduled")
CHECKPOINT_FORMAT = "entropic.gpt/1"


# The flat format of checkpoints written before `AttentionConfig.alpha` held the schedule: its fields
# sat next to `kind`, the shape under the name "schedule".
_FLAT_SCHEDULE_KEYS = (
    "schedule",
    "low",
    "high",
    "alpha_min",
    "alpha_max",
    "varentropy_threshold",
    "fixed_alpha",
)
_DEFAULT_ALPHA: dict[str, float | str] = {
    "softmax": 1.0,
    "entmax": 1.5,
    "sparsemax": 2.0,
    "learned": "learned",
}


def _kind_of(alpha: float | EntropySchedule | str) -> str:
    if isinstance(alpha, EntropySchedule):
        return "scheduled"
    if isinstance(alpha, str):
        return alpha
    return {1.0: "softmax", 2.0: "sparsemax"}.get(alpha, "entmax")


@dataclass
class AttentionConfig:
    """Which attention every layer uses (see the module docstring): a kind and the α it runs.

    Give either or both; the one left out follows from the other (softmax when neither is given).

    Attributes
    ----------
    kind : {"softmax", "entmax", "sparsemax", "learned", "scheduled"}
    alpha : float, EntropySchedule or "learned"
        What every layer passes as ``alpha`` to `EntropicAttention`: 1 for softmax, a number in (1, 2)
        for entmax (1.5 by default), 2 for sparsemax, "learned", or the `EntropySchedule` of
        ``kind="scheduled"`` (``EntropySchedule()`` by default). Hydra configs build the schedule with
        ``_target_: entropic.attention.EntropySchedule`` (``configs/attention/scheduled.yaml``).

    Examples
    --------
    >>> AttentionConfig(alpha=EntropySchedule("cosine")).kind
    'scheduled'
    >>> AttentionConfig(kind="entmax").alpha
    1.5
    """

    kind: Literal["softmax", "entmax", "sparsemax", "learned", "scheduled"] | None = None
    alpha: float | EntropySchedule | Literal["learned"] | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {self.kind!r}")
        if self.alpha is None:
            self.kind = self.kind or "softmax"
            self.alpha = EntropySchedule() if self.kind == "scheduled" else _DEFAULT_ALPHA[self.kind]
            return
        alpha = check_alpha(
            self.alpha, allow_tensor=False, allow_learned=True, open_ends=self.kind == "entmax"
        )
        self.kind = self.kind or _kind_of(alpha)
        if _kind_of(alpha) != self.kind:
            raise ValueError(
                f"attention kind {self.kind!r} does not run alpha={alpha!r} (a {_kind_of(alpha)} α)"
            )
        self.alpha = alpha

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AttentionConfig:
        """Rebuild from a mapping: `dataclasses.asdict` output (a checkpoint's ``config["attention"]``,
        the schedule as a dict), a resolved hydra config (``_target_`` keys are dropped), or the flat
        format of older checkpoints and run configs (the schedule's fields next to `kind`, the shape under
        ``schedule``).
        """
        values = {k: v for k, v in values.items() if k != "_target_"}
        alpha = values.get("alpha")
        if isinstance(alpha, Mapping):
            values["alpha"] = EntropySchedule(**{k: v for k, v in alpha.items() if k != "_target_"})
        flat = {k: values.pop(k) for k in _FLAT_SCHEDULE_KEYS if k in values}
        if flat:
            flat["shape"] = flat.pop("schedule", "linear")
            schedule = EntropySchedule(**flat)  # validated whatever the kind, as the flat format was
            if values.get("kind") == "scheduled":
                values["alpha"] = schedule
            elif values.get("kind") != "entmax":
                values.pop("alpha", None)  # the flat format stored an unused alpha for every kind
        return cls(**values)


@dataclass
class GPTConfig:
    """Shape of a `GPT`.

    Attributes
    ----------
    vocab_size : int
        256 for bytes.
    n_layer, n_head : int
        Blocks and query heads per block.
    n_kv_head : int, optional
        Key/value heads (grouped-query attention), a divisor of `n_head`; `n_head` when None.
    d_model : int
        Width, a multiple of `n_head` with an even head dim (RoPE rotates pairs).
    mlp_ratio : float
        Hidden width of the MLP over `d_model`.
    norm : {"rmsnorm", "layernorm"}
        The pre-norm (and final norm).
    rope_base : float
        RoPE base θ: dimension pair i rotates at frequency ``θ^(-2i/D)``.
    dropout : float
        Dropout on attention weights and residual branches during training.
    tie_embeddings : bool
        Share the input embedding with the output projection.
    attention : AttentionConfig
        The attention of every layer (a mapping is converted by `AttentionConfig.from_dict`).
    """

    vocab_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    d_model: int = 128
    mlp_ratio: float = 4.0
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    rope_base: float = 10000.0
    dropout: float = 0.0
    tie_embeddings: bool = True
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.attention, AttentionConfig):
            self.attention = AttentionConfig.from_dict(self.attention)
        for name in ("vocab_size", "n_layer", "n_head", "d_model"):
            check_param(getattr(self, name), name, 1, math.inf, integer=True)
        if self.n_kv_head is not None:
            check_param(self.n_kv_head, "n_kv_head", 1, math.inf, integer=True)
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(
                "d_model must be a multiple of n_head with an even head dim (RoPE), "
                f"got d_model={self.d_model}, n_head={self.n_head}"
            )
        check_param(self.mlp_ratio, "mlp_ratio", 0.0, math.inf, low_open=True)
        check_param(self.rope_base, "rope_base", 1.0, math.inf, low_open=True)
        check_param(self.dropout, "dropout", 0.0, 1.0, high_open=True)
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {self.norm!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Rebuild from `dataclasses.asdict` output (a checkpoint's ``config``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"GPTConfig got unknown fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)


@dataclass
class GPTOutput:
    """What `GPT.forward` returns (the attribute names `generate` reads).

    Attributes
    ----------
    logits : Tensor
        ``(B, n, V)`` next-token logits of the n input positions.
    past_key_values : list of KVCache or None
        One cache per layer when ``use_cache``, holding every position seen so far.
    attention_metrics : EntropixAttentionMetrics or None
        Entropix's attention signals of the last layer at the last position, ``(B,)`` each, when asked
        (by default in eval mode): `EntropixSampler` reads them during `generate`.
    """

    logits: Tensor
    past_key_values: list[KVCache] | None = None
    attention_metrics: EntropixAttentionMetrics | None = None


def rope_cos_sin(position_ids: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """``cos``/``sin`` of the rotation angles ``pos · θ^(-2i/D)``, each ``(B, 1, n, D/2)`` float32."""
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    )
    angles = position_ids.float()[:, None, :, None] * inv_freq  # (B, 1, n, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs ``(x_i, x_{i+D/2})`` of ``x`` ``(B, H, n, D)`` by the angles of `cos`/`sin`."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE as a hook of `EntropicAttention`: ``(q, k, position_ids) -> (q, k)`` rotated (no parameters)."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base

    def forward(self, q: Tensor, k: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = rope_cos_sin(position_ids, self.head_dim, self.base)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"


class MLP(nn.Module):
    """``W2 · GELU(W1 x)`` with hidden width ``mlp_ratio · d_model``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.d_model)
        self.fc = nn.Linear(config.d_model, hidden, bias=False)
        self.proj = nn.Linear(hidden, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


def _norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model)
    return nn.LayerNorm(config.d_model, bias=False)


class Block(nn.Module):
    """Pre-norm residual block: ``x + Attn(Norm x)``, then ``x + MLP(Norm x)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attn_norm, self.mlp_norm = _norm(config), _norm(config)
        self.attn = EntropicAttention(
            config.d_model,
            config.n_head,
            config.n_kv_head,
            alpha=config.attention.alpha,
            causal=True,
            dropout=config.dropout,
            rotary=RotaryEmbedding(config.d_model // config.n_head, config.rope_base),
        )
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        position_ids: Tensor,
        key_mask: Tensor | None,
        kv_cache: KVCache | None,
        with_metrics: bool,
    ) -> tuple[Tensor, EntropixAttentionMetrics | None]:
        """`key_mask` is the ``(B, 1, 1, past + n)`` boolean key-padding mask (True = real), or None."""
        h = self.attn(
            self.attn_norm(x),
            attn_mask=key_mask,
            kv_cache=kv_cache,
            position_ids=position_ids,
            with_metrics=with_metrics,
        )
        h, metrics = h if with_metrics else (h, None)
        x = x + self.dropout(h)
        return x + self.mlp(self.mlp_norm(x)), metrics


class GPT(nn.Module):
    """Decoder-only transformer ``(B, n)`` token ids → ``(B, n, V)`` next-token logits.

    Parameters
    ----------
    config : GPTConfig

    Examples
    --------
    >>> model = GPT(GPTConfig(n_layer=2, d_model=32, attention=AttentionConfig(alpha=EntropySchedule())))
    >>> out = model(input_ids=torch.randint(0, 256, (2, 7)), use_cache=True)
    >>> out.logits.shape, len(out.past_key_values), len(out.past_key_values[0])
    (torch.Size([2, 7, 256]), 2, 7)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = _norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 · n_layer) so the residual stream keeps its scale.
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def n_params(self) -> int:
        """Number of parameters (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
        output_attention_metrics: bool | None = None,
    ) -> GPTOutput:
        """Logits of every input position (and the updated cache).

        Parameters
        ----------
        input_ids : Tensor
            ``(B, n)`` int64 token ids; with a cache, the n new positions.
        attention_mask : Tensor, optional
            ``(B, past + n)``: 1 for real tokens, 0 for (left) padding; all ones when omitted. Omit it
            when no row is padded: the Triton kernels take no mask, so a mask (even of ones) sends the
            attention of every layer to SDPA with a mask or to the PyTorch path.
        position_ids : Tensor, optional
            ``(B, n)`` RoPE positions; by default the number of real tokens before each position
            (``cumsum(attention_mask) - 1``), or ``past, past + 1, ...`` without a mask.
        past_key_values : list of KVCache, optional
            The cache a previous call returned; it is extended in place.
        use_cache : bool
            Return the per-layer caches (a fresh one when `past_key_values` is None).
        output_attention_metrics : bool, optional
            Compute `GPTOutput.attention_metrics`; by default when the model is in eval mode.

        Returns
        -------
        GPTOutput
        """
        if input_ids.dim() != 2 or input_ids.dtype != torch.long:
            raise ValueError(
                f"input_ids must be a (B, n) int64 tensor, got shape {tuple(input_ids.shape)} "
                f"and dtype {input_ids.dtype}"
            )
        b, n = input_ids.shape
        if past_key_values is not None and len(past_key_values) != self.config.n_layer:
            raise ValueError(
                f"past_key_values must hold one KVCache per layer ({self.config.n_layer}), "
                f"got {len(past_key_values)}"
            )
        past = 0 if past_key_values is None else len(past_key_values[0])
        key_mask = None
        if attention_mask is not None:
            if attention_mask.shape != (b, past + n):
                raise ValueError(
                    f"attention_mask must have shape (B, past + n) = {(b, past + n)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, past + n): never read here
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(past, past + n, device=input_ids.device).expand(b, n)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past:]
        elif position_ids.shape != (b, n):
            raise ValueError(
                f"position_ids must have shape (B, n) = {(b, n)}, got {tuple(position_ids.shape)}"
            )
        if use_cache and past_key_values is None:
            past_key_values = [KVCache() for _ in self.blocks]
        caches = past_key_values if use_cache else [None] * len(self.blocks)
        with_metrics = (not self.training) if output_attention_metrics is None else output_attention_metrics
        x = self.embed(input_ids)
        metrics = None
        for i, (block, cache) in enumerate(zip(self.blocks, caches, strict=True)):
            x, metrics = block(x, position_ids, key_mask, cache, with_metrics and i == len(self.blocks) - 1)
        logits = self.lm_head(self.norm(x))
        return GPTOutput(logits, past_key_values if use_cache else None, metrics)

    # ------------------------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint payload: format tag, resolved config (plain types) and weights."""
        return {"format": CHECKPOINT_FORMAT, "config": asdict(self.config), "model": self.state_dict()}

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write `checkpoint` (plus `extra` entries, e.g. optimizer state) to `path` atomically."""
        atomic_save({**self.checkpoint(), **extra}, path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
        """Rebuild a model from a checkpoint written by `save` (or by ``experiments.train``)."""
        payload = load_checkpoint(path, map_location)
        model = cls(GPTConfig.from_dict(payload["config"]))
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as err:  # missing, unexpected or mis-shaped weights, one per line after a header
            problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(
                f"'{path}': the weights do not match the checkpoint's config: {problems[0]}{more}"
            ) from err
        return model


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an entropic GPT checkpoint; raise ``ValueError`` saying why a file is not one."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise ValueError(f"cannot read '{path}': {err}") from err
    # What the unpickler raises on bytes that are not a pickle: a text file ends in KeyError, a cut one in
    # IndexError or EOFError.
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError) as err:
        raise ValueError(f"'{path}' is not a torch checkpoint file ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"'{path}' is not an entropic GPT checkpoint (format {CHECKPOINT_FORMAT!r}), got {found!r}"
        )
    missing = [key for key in ("config", "model") if not isinstance(payload.get(key), dict)]
    if missing:
        raise ValueError(f"'{path}' is an entropic GPT checkpoint without a dict under {missing}")
    return payload

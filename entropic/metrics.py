"""Information theory on logits.

Every function takes **logits** (unnormalised log-probabilities; any leading batch shape; the
distribution runs along ``dim``, the last dimension by default) unless its name says otherwise, and
computes in float32 (float64 for float64 input) whatever the input dtype, returning that dtype.

Units follow ``scipy.stats.entropy``: ``base=None`` gives nats, ``base=2`` bits, any finite base > 0,
base != 1.

Masks: ``-inf`` entries are legal as long as a row keeps one finite entry, and every result equals the
result of dropping those entries. NaN, ``+inf`` and rows with no finite entry raise ``ValueError``.

Probability-space inputs go through `logits_from_probs` (``log p``, zeros become ``-inf``), never by
guessing what a tensor holds.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from entropic._validation import (
    check_base,
    check_dim,
    check_logits,
    check_logits_layout,
    check_param,
    compute_dtype,
    in_base,
    overflows,
)
from entropic.ops.entropy import dispatch

__all__ = [
    "bits_per_byte",
    "bits_to_nats",
    "cross_entropy",
    "entropy",
    "entropy_varentropy",
    "free_energy",
    "js_divergence",
    "kl_divergence",
    "log_partition",
    "logits_from_probs",
    "mutual_information",
    "nats_to_bits",
    "perplexity",
    "varentropy",
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------- helpers


def _upcast(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x.dtype))


def _log_probs(logits: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(log p with masked entries set to 0, p, mask of -inf entries), gradient-safe at the masks."""
    x = _upcast(logits)
    masked = x == -math.inf
    # Not torch.log_softmax: on CPU it accumulates float32 sums with a relative error of ~1e-4 at V = 131072
    # (benchmarks/entropy_accuracy.py). Shifting by the max first keeps log p exact near the top token.
    y = x - x.amax(dim=dim, keepdim=True).detach()
    logp = y - torch.log(torch.exp(y).sum(dim=dim, keepdim=True))
    p = logp.exp()  # exactly 0 at masked entries, gradient 0 there
    return logp.masked_fill(masked, 0.0), p, masked


def _prob_atol(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-8, torch.float32: 1e-4}.get(dtype, 1e-2)


def _check_probs(probs: Tensor, fn: str, name: str, dims: tuple[int, ...], normalize: bool) -> Tensor:
    """Check a probability tensor (finite, >= 0, summing to 1 over `dims`); normalise it when asked."""
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point torch.Tensor")
    if probs.dim() == 0:
        raise ValueError(f"{fn}: {name} must have at least one dimension, got a scalar")
    for d in dims:
        check_dim(probs, d, fn, tensor=name)
    if probs.numel() == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {tuple(probs.shape)})")
    bad = ~torch.isfinite(probs) | (probs < 0)
    n_bad = int(bad.sum())
    if n_bad:
        raise ValueError(f"{fn}: {name} must be finite and >= 0, got {n_bad} entries that are not")
    total = probs.sum(dim=dims, keepdim=True)
    if normalize:
        n_zero = int((total <= 0).sum())
        if n_zero:
            raise ValueError(f"{fn}: {name} has {n_zero} rows that sum to 0 and cannot be normalised")
        return probs / total
    err = (total - 1).abs()
    n_off = int((err > _prob_atol(probs.dtype)).sum())
    if n_off:
        raise ValueError(
            f"{fn}: {name} must sum to 1 over dim {dims if len(dims) > 1 else dims[0]}; {n_off} rows do not "
            f"(largest |sum - 1| = {err.max().item():.3g}); pass normalize=True to divide by the sum"
        )
    return probs


def _reduce(loss: Tensor, count: Tensor, reduction: str, fn: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    n = count.sum()
    if int(n) == 0:
        raise ValueError(f"{fn}: no target is counted (all equal ignore_index); the mean is undefined")
    return loss.sum() / n


# ---------------------------------------------------------------------------------- entropy family


def _entropy_stats(
    logits: Tensor, dim: int, fn: str, impl: str = "torch", variance: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """``(H, V, log Z)`` in nats (`entropic.ops.entropy`), checked as `check_logits` checks, from the op's
    own log Z: it is finite exactly when the row is valid, so the values are read once, by the op."""
    dim = check_logits_layout(logits, fn, dim)
    x = logits if dim == logits.dim() - 1 else logits.movedim(dim, -1)
    stats = dispatch.entropy_stats(x, variance=variance, impl=impl, fn=fn)
    # One host sync, as in check_logits. The sum is finite when every log Z is (a false alarm, from an
    # overflow of the sum, only costs the full check, which then passes).
    if not math.isfinite(stats[2].detach().sum()):
        check_logits(logits, fn, dim)  # raises, naming what is wrong
    return stats


def entropy(logits: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Shannon entropy of ``p = softmax(logits)``: ``H = -Σ p log p`` (nats unless `base`).

    Parameters
    ----------
    logits : Tensor
        ``(..., V, ...)`` unnormalised log-probabilities; ``-inf`` entries are masked out.
    dim : int
        The dimension holding the distribution.
    base : float, optional
        Logarithm base of the result: None for nats, 2 for bits.

    Returns
    -------
    Tensor
        ``logits.shape`` without `dim`; ``0 <= H <= log V``.

    Examples
    --------
    >>> entropy(torch.zeros(2), base=2)  # a fair coin
    tensor(1.)
    """
    log_base = check_base(base)
    h, _, _ = _entropy_stats(logits, dim, "entropy", variance=False)
    return in_base(h, log_base)


def varentropy(logits: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Varentropy ``V = Var_p[-log p] = Σ p (log p + H)^2`` (nats² unless `base`, then base-units²).

    The variance of the surprisal: how much the information content differs between likely and unlikely
    tokens (Entropix's "varentropy"). Computed centred on the mean (see `entropy_varentropy`), so it is never
    negative.

    Examples
    --------
    >>> varentropy(logits_from_probs(torch.tensor([0.9, 0.1])), base=2)  # 0.09 (log2 9)^2
    tensor(0.9044)
    """
    log_base = check_base(base)
    _, v, _ = _entropy_stats(logits, dim, "varentropy")
    return v if log_base is None else v / log_base**2


def entropy_varentropy(
    logits: Tensor,
    dim: int = -1,
    base: float | None = None,
    *,
    impl: Literal["auto", "torch", "triton"] = "auto",
) -> tuple[Tensor, Tensor]:
    """Entropy and varentropy together: ``H = log S - μ`` and ``V = Σe·(z - μ)² / S``.

    Here ``z = x - max``, ``e = exp(z)``, ``S = Σe`` and ``μ = Σe·z / S`` (so ``p = e / S``). The PyTorch
    path (`entropic.ops.entropy.torch`, which works in base 2, the same quantities scaled) reads each row
    twice, once for ``(S, Σe·z)`` and once centred on μ, a block of rows at a time in cached float32
    buffers; no raw second moment is formed, so nothing cancels. The Triton kernel (``impl="triton"``,
    and ``impl="auto"`` for CUDA tensors) reads the logits once, merging vocabulary chunks by the online
    (max, Σe, mean, M2) recurrence.

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits (any float dtype; computed in float32 or float64).
    dim : int
        Dimension of the distribution.
    base : float, optional
        None for nats, 2 for bits (varentropy in squared units).
    impl : {"auto", "torch", "triton"}
        "auto" uses the Triton kernel (differentiable) for CUDA tensors of a half or float32 dtype when Triton
        is installed, PyTorch otherwise.

    Returns
    -------
    (Tensor, Tensor)
        ``H`` and ``V``, each of shape ``logits.shape`` without `dim`.

    Examples
    --------
    >>> h, v = entropy_varentropy(torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]]))
    >>> h  # the second row is uniform: log 3
    tensor([0.8467, 1.0986])
    """
    log_base = check_base(base)
    h, v, _ = _entropy_stats(logits, dim, "entropy_varentropy", impl)
    if log_base is None:
        return h, v
    return h / log_base, v / log_base**2


def log_partition(logits: Tensor, temperature: float | Tensor = 1.0, dim: int = -1) -> Tensor:
    """Log-partition function ``log Z(T) = log Σ exp(x / T)`` (nats).

    With energies ``E = -x`` and ``β = 1/T``, ``p = exp(-βE) / Z`` and ``log Z`` is the (negated, scaled)
    free energy: see `free_energy`. `temperature` is a number or a tensor of the batch shape.

    Examples
    --------
    >>> log_partition(torch.zeros(4))  # log 4
    tensor(1.3863)
    """
    return _log_partition(logits, temperature, dim, "log_partition")


def _log_partition(logits: Tensor, temperature: float | Tensor, dim: int, fn: str) -> Tensor:
    row_max = check_logits(logits, fn, dim)
    check_param(temperature, "temperature", 0.0, math.inf, low_open=True, high_open=True)
    x = _upcast(logits)
    t = temperature.to(x) if isinstance(temperature, Tensor) else temperature
    n_bad = int(overflows(row_max.to(x.dtype), t).sum())  # `entropic._validation.overflows`: one host sync
    if n_bad:
        raise ValueError(
            f"{fn}: temperature is too small for these logits: logits / temperature overflows {x.dtype} in "
            f"{n_bad} of {row_max.numel()} rows"
        )
    return torch.logsumexp(x / (t.unsqueeze(dim) if isinstance(t, Tensor) else t), dim)


def free_energy(logits: Tensor, temperature: float | Tensor = 1.0, dim: int = -1) -> Tensor:
    """Helmholtz free energy ``F = -T log Z(T)`` of the Boltzmann distribution with energies ``E = -x``.

    It ties the seed's energy view to entropy: ``H(softmax(x / T)) = (<E> - F) / T`` (nats).

    Examples
    --------
    >>> free_energy(torch.zeros(4), temperature=2.0)  # -2 log 4
    tensor(-2.7726)
    """
    log_z = _log_partition(logits, temperature, dim, "free_energy")
    t = temperature.to(log_z) if isinstance(temperature, Tensor) else temperature
    return -t * log_z


# ------------------------------------------------------------------------ divergences and losses


def _check_pair(p_logits: Tensor, q_logits: Tensor, fn: str, dim: int) -> None:
    check_logits(p_logits, fn, dim, "p_logits")
    check_logits(q_logits, fn, dim, "q_logits")
    if p_logits.shape[dim] != q_logits.shape[dim]:
        raise ValueError(
            f"{fn}: p_logits and q_logits must have the same size along dim {dim}, "
            f"got {p_logits.shape[dim]} and {q_logits.shape[dim]}"
        )
    try:
        torch.broadcast_shapes(p_logits.shape, q_logits.shape)
    except RuntimeError:
        raise ValueError(
            f"{fn}: shapes {tuple(p_logits.shape)} and {tuple(q_logits.shape)} do not broadcast"
        ) from None


def kl_divergence(p_logits: Tensor, q_logits: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Kullback-Leibler divergence ``KL(p‖q) = Σ p (log p - log q)`` (nats unless `base`).

    Forward KL (data or reference as `p`) is mode-covering: `q` pays without bound wherever it misses
    mass of `p`. The reverse KL, ``kl_divergence(q_logits, p_logits)``, is mode-seeking: `q` may drop
    modes of `p` at little cost. Infinite where `p` has mass on a token masked in `q`.

    Examples
    --------
    >>> p, q = logits_from_probs(torch.tensor([0.5, 0.5])), logits_from_probs(torch.tensor([0.6, 0.4]))
    >>> kl_divergence(p, q)
    tensor(0.0204)
    """
    _check_pair(p_logits, q_logits, "kl_divergence", dim)
    log_base = check_base(base)
    logp, p, p_masked = _log_probs(p_logits, dim)
    logq, _, q_masked = _log_probs(q_logits, dim)
    kl = (p * (logp - logq)).sum(dim)
    kl = kl.masked_fill((~p_masked & q_masked).any(dim), math.inf)
    return in_base(kl, log_base)


def js_divergence(p_logits: Tensor, q_logits: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Jensen-Shannon divergence ``½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p + q) / 2``.

    Symmetric, finite for any supports, and bounded by ``log 2`` (1 bit).

    Examples
    --------
    >>> js_divergence(torch.tensor([0.0, -math.inf]), torch.tensor([-math.inf, 0.0]), base=2)
    tensor(1.)
    """
    _check_pair(p_logits, q_logits, "js_divergence", dim)
    log_base = check_base(base)
    logp, p, p_masked = _log_probs(p_logits, dim)
    logq, q, q_masked = _log_probs(q_logits, dim)
    # log m = logaddexp(log p, log q) - log 2, with the -inf masks restored so that logaddexp never sees
    # two -inf (its gradient would be NaN there).
    lp = logp.masked_fill(p_masked, -math.inf)
    lq = logq.masked_fill(q_masked, -math.inf)
    both = p_masked & q_masked
    logm = torch.logaddexp(lp.masked_fill(both, 0.0), lq.masked_fill(both, 0.0)) - _LN2
    logm = logm.masked_fill(both, 0.0)
    jsd = 0.5 * (p * (logp - logm)).sum(dim) + 0.5 * (q * (logq - logm)).sum(dim)
    return in_base(jsd, log_base)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    dim: int = -1,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    base: float | None = None,
) -> Tensor:
    """Cross-entropy ``H(t, q) = -Σ t log q`` of targets `t` under ``q = softmax(logits)``.

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` model logits.
    target : Tensor
        Hard targets: an integer tensor of the batch shape ``logits.shape`` without `dim`, entries in
        ``[0, V)`` or `ignore_index`. Soft targets: a float tensor of the logits' shape whose rows are
        probability distributions.
    label_smoothing : float
        ε in [0, 1): the target becomes ``(1 - ε) t + ε u`` with ``u`` uniform over the unmasked tokens
        (over all V tokens when nothing is masked, as in ``torch.nn.functional.cross_entropy``).
    ignore_index : int
        Hard targets equal to it contribute nothing and are not counted by the mean.
    reduction : {"mean", "sum", "none"}
        "mean" averages over the counted targets.
    base : float, optional
        None for nats, 2 for bits.

    Returns
    -------
    Tensor
        A scalar, or the batch shape with ``reduction="none"`` (0 at ignored positions). Infinite where
        the target puts mass on a masked (-inf) logit.

    Examples
    --------
    >>> cross_entropy(logits_from_probs(torch.tensor([[0.7, 0.2, 0.1]])), torch.tensor([0]))
    tensor(0.3567)
    """
    return _cross_entropy(
        logits, target, dim, label_smoothing, ignore_index, reduction, base, "cross_entropy"
    )


def _cross_entropy(
    logits: Tensor,
    target: Tensor,
    dim: int,
    label_smoothing: float,
    ignore_index: int,
    reduction: str,
    base: float | None,
    fn: str,
) -> Tensor:
    """`cross_entropy`, its errors naming the public function `fn` that was called."""
    check_logits(logits, fn, dim)
    check_param(label_smoothing, "label_smoothing", 0.0, 1.0, high_open=True)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    log_base = check_base(base)
    if not isinstance(target, Tensor):
        raise TypeError(f"{fn}: target must be a torch.Tensor, got {type(target).__name__}")
    logq, _, masked = _log_probs(logits.movedim(dim, -1), -1)
    n_visible = (~masked).sum(-1).to(logq.dtype)  # (...)

    if target.is_floating_point():
        t = target.movedim(dim, -1)
        if t.shape != logq.shape:
            raise ValueError(
                f"{fn}: soft targets must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(target.shape)}"
            )
        t = _check_probs(t.to(logq.dtype), fn, "target", (-1,), normalize=False)
        if label_smoothing > 0:
            uniform = (~masked).to(logq.dtype) / n_visible.unsqueeze(-1)
            t = (1 - label_smoothing) * t + label_smoothing * uniform
        loss = -(t * logq).sum(-1)
        loss = loss.masked_fill(((t > 0) & masked).any(-1), math.inf)
        counted = torch.ones_like(loss, dtype=torch.bool)
    else:
        if target.shape != logq.shape[:-1]:
            raise ValueError(
                f"{fn}: hard targets must have the batch shape {tuple(logq.shape[:-1])}, "
                f"got {tuple(target.shape)}"
            )
        vocab = logq.shape[-1]
        target = target.to(logq.device)
        counted = target != ignore_index
        out_of_range = counted & ((target < 0) | (target >= vocab))
        n_bad = int(out_of_range.sum())
        if n_bad:
            first = int(target[out_of_range][0])
            raise ValueError(
                f"{fn}: targets must be in [0, {vocab}) or ignore_index={ignore_index}; "
                f"{n_bad} are not (first: {first})"
            )
        # Ignored positions read the top token (always finite) and are zeroed below.
        index = torch.where(counted, target, logq.argmax(-1)).unsqueeze(-1)
        loss = -logq.gather(-1, index).squeeze(-1)
        loss = loss.masked_fill(masked.gather(-1, index).squeeze(-1), math.inf)
        if label_smoothing > 0:
            smooth = -logq.sum(-1) / n_visible
            loss = (1 - label_smoothing) * loss + label_smoothing * smooth
        loss = loss.masked_fill(~counted, 0.0)
    return in_base(_reduce(loss, counted, reduction, fn), log_base)


def perplexity(
    logits: Tensor,
    target: Tensor,
    *,
    dim: int = -1,
    ignore_index: int = -100,
    per_sequence: bool = False,
) -> Tensor:
    """Perplexity ``exp(mean cross-entropy in nats)``: the effective number of equally likely choices.

    Unit-free (``e^{H_nats} = 2^{H_bits}``), so it takes no `base`. Targets as in `cross_entropy`.

    Parameters
    ----------
    per_sequence : bool
        False: one number over every counted target. True: logits are ``(..., T, V)`` and the mean runs
        over the sequence dimension ``T`` only, giving one perplexity per sequence, shape ``(...)``.

    Examples
    --------
    >>> logits = logits_from_probs(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]]))
    >>> perplexity(logits, torch.tensor([0, 1]))  # exp(-ln 0.7) = 1 / 0.7
    tensor(1.4286)
    """
    fn = "perplexity"
    ce = _cross_entropy(logits, target, dim, 0.0, ignore_index, "none", None, fn)
    counted = torch.ones_like(ce) if target.is_floating_point() else (target != ignore_index).to(ce.dtype)
    if not per_sequence:
        return torch.exp(_reduce(ce, counted, "mean", fn))
    if ce.dim() < 1:
        raise ValueError(
            f"{fn}: per_sequence=True needs logits of shape (..., T, V), got {tuple(logits.shape)}"
        )
    n = counted.sum(-1)
    n_empty = int((n == 0).sum())
    if n_empty:
        raise ValueError(f"{fn}: {n_empty} sequences have no counted target; their perplexity is undefined")
    return torch.exp(ce.sum(-1) / n)


def nats_to_bits(x: Tensor | float) -> Tensor | float:
    """Convert an information quantity from nats to bits (divide by ln 2)."""
    return x / _LN2


def bits_to_nats(x: Tensor | float) -> Tensor | float:
    """Convert an information quantity from bits to nats (multiply by ln 2)."""
    return x * _LN2


def bits_per_byte(nll_nats: Tensor | float, n_bytes: int | float | Tensor) -> Tensor | float:
    """Bits per byte ``Σ NLL_nats / (n_bytes · ln 2)`` from a summed negative log-likelihood in nats.

    For a byte-level model (one token per byte) this is the mean cross-entropy in bits; for a tokenised
    model pass the NLL summed over tokens and the number of UTF-8 bytes of the text they encode.

    Examples
    --------
    >>> bits_per_byte(torch.tensor(693.1472), 1000)  # 0.6931 nats per byte = 1 bit
    tensor(1.0000)
    """
    check_param(n_bytes, "n_bytes", 0.0, math.inf, low_open=True)
    return nats_to_bits(nll_nats / n_bytes)


def logits_from_probs(probs: Tensor, dim: int = -1, *, normalize: bool = False) -> Tensor:
    """Turn probabilities into logits ``log p`` (zeros become ``-inf`` masks) for every function here.

    `probs` must be finite, >= 0 and sum to 1 along `dim` (within a dtype-dependent tolerance); with
    ``normalize=True`` any non-negative weights (counts) are divided by their sum first.

    Examples
    --------
    >>> entropy(logits_from_probs(torch.tensor([0.9, 0.1])), base=2)
    tensor(0.4690)
    """
    p = _check_probs(probs, "logits_from_probs", "probs", (dim,), normalize)
    return torch.log(p)


def mutual_information(joint_probs: Tensor, *, base: float | None = None, normalize: bool = False) -> Tensor:
    """Mutual information ``I(X;Y) = Σ p(x,y) log[p(x,y) / (p(x) p(y))]`` of a joint probability table.

    Parameters
    ----------
    joint_probs : Tensor
        ``(..., |X|, |Y|)`` probabilities summing to 1 over the last two dimensions (or non-negative
        weights with ``normalize=True``).
    base : float, optional
        None for nats, 2 for bits.

    Returns
    -------
    Tensor
        ``(...)``; 0 exactly when X and Y are independent, at most ``min(H(X), H(Y))``.

    Examples
    --------
    >>> mutual_information(torch.tensor([[0.5, 0.0], [0.0, 0.5]]), base=2)  # Y copies a fair bit
    tensor(1.)
    """
    fn = "mutual_information"
    if not isinstance(joint_probs, Tensor) or joint_probs.dim() < 2:
        shape = tuple(joint_probs.shape) if isinstance(joint_probs, Tensor) else type(joint_probs).__name__
        raise ValueError(f"{fn}: joint_probs must be a tensor of shape (..., |X|, |Y|), got {shape}")
    log_base = check_base(base)
    pxy = _check_probs(_upcast(joint_probs), fn, "joint_probs", (-2, -1), normalize)
    px = pxy.sum(-1, keepdim=True)
    py = pxy.sum(-2, keepdim=True)
    live = pxy > 0
    one = torch.ones_like(pxy)
    ratio = torch.where(live, pxy, one) / torch.where(live, px * py, one)
    return in_base((pxy * torch.log(ratio)).sum((-2, -1)), log_base)

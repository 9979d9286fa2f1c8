"""Logit filters: pure ``logits -> logits`` functions; removed tokens are set to -inf.

Every parameter is a Python number (the same for every row) or a tensor with one value per row, of the
logits' batch shape ``logits.shape[:-1]`` (``(B,)`` for ``(B, V)`` logits). The vocabulary is the last
dimension. Outputs are float32 (float64 for float64 inputs) whatever the input dtype, so that a
temperature applied to bf16 logits does not round them a second time.

Order of application (`apply_filters`), as in Hugging Face ``generate`` (``_get_logits_processor``) for
the filters it has: temperature, top-nσ, top-k, top-p, min-p, typical, epsilon, eta, p-less, then XTC
(llama.cpp's default chain puts top-nσ before top-k and XTC after min-p). Every truncation after the
temperature sees the tempered distribution, already truncated by the filters before it. With a dynamic
temperature (`dynamic_temperature`, llama.cpp's ``temp_ext``) the temperature step moves to the end instead,
as ``temp_ext`` sits last in llama.cpp's chain: the truncations see the untempered logits, then the
temperature is chosen from the entropy of the candidates they left. The most probable token is never
removed. Ties at a cut-off are kept: top-k keeps every token whose logit equals the k-th largest.
Mass-based cuts (top-p, typical) add probabilities computed in float64: a float32 running sum drifts
by more than a token's probability at large vocabularies.

Every public filter, and `apply_filters` once for the whole chain, rejects NaN, +inf and rows with no
finite entry (`entropic._validation.check_logits`) with a ValueError naming the function.

References: nucleus (top-p) Holtzman et al. 2020; min-p Nguyen et al. 2024; locally typical sampling
Meister et al. 2023; epsilon and eta sampling Hewitt et al. 2022; top-nσ Tang et al. 2024; p-less sampling
Tan et al. 2025; XTC and dynamic temperature as llama.cpp defines them (``src/llama-sampling.cpp``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, fields

import torch
from torch import Tensor

from entropic._ranges import RANGES
from entropic._validation import check_logits, check_param, compute_dtype, overflows
from entropic.ops.dispatch import cpu_scalar
from entropic.ops.entropy.torch import entropy_stats


def _upcast(logits: Tensor) -> Tensor:
    return logits.to(compute_dtype(logits.dtype))


def _per_row(value: float | Tensor, logits: Tensor, name: str) -> float | Tensor:
    """A number stays a number; a tensor is checked against the batch shape and given a trailing vocab dim."""
    if not isinstance(value, Tensor):
        return value
    batch = logits.shape[:-1]
    try:
        ok = torch.broadcast_shapes(value.shape, batch) == batch
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must be a number or a tensor of the logits' batch shape {tuple(batch)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.to(logits.device).unsqueeze(-1)


def _check_range(name: str, value: float | Tensor | bool) -> None:
    if name == "p_less":  # a switch, per row or for every row
        if not (isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool)):
            raise TypeError(
                f"p_less must be True, False or a bool tensor, got {getattr(value, 'dtype', value)!r}"
            )
        return
    low, high, options = RANGES[name]
    check_param(value, name, low, high, **options)


def _checks_logits(filter_fn: Callable[..., Tensor], range_name: str | None = None) -> Callable[..., Tensor]:
    """The public filter: checks its logits (`check_logits`, naming the filter) and its parameter (`RANGES`
    under the filter's name), then filters. The unchecked body stays reachable as ``.unchecked`` for
    callers that checked already (`apply_filters` once for the chain, the samplers)."""
    name = filter_fn.__name__
    param = list(inspect.signature(filter_fn).parameters)[1]

    @functools.wraps(filter_fn)
    def checked(logits: Tensor, *args: object, **kwargs: object) -> Tensor:
        check_logits(logits, name)
        _check_range(range_name or name, args[0] if args else kwargs[param])
        return filter_fn(logits, *args, **kwargs)

    checked.unchecked = filter_fn
    return checked


def _overflows(
    logits: Tensor, temperature: float | Tensor, top: Tensor | None = None
) -> tuple[Tensor, Tensor] | None:
    """``(rows, top)``: the rows where ``max(logits) / T`` overflows (`entropic._validation.overflows`: so
    small a T is greedy decoding in effect), and each row's largest logit (`top` when the caller has it);
    None when T is a Python number that cannot overflow (``T >= 1`` or 0). Computed in float32 (float64
    for float64 logits), as every filter divides; no host sync."""
    if not isinstance(temperature, Tensor) and (temperature >= 1.0 or temperature == 0):
        return None
    dtype = compute_dtype(logits.dtype)
    top = (logits.detach().amax(dim=-1) if top is None else top).to(dtype)  # (...,), finite when checked
    t = temperature
    if isinstance(t, Tensor):  # checked against the batch shape, (...,)
        t = _per_row(t, logits, "temperature").squeeze(-1).to(dtype)
    return overflows(top, t), top


def check_temperature_range(logits: Tensor, temperature: float | Tensor, fn: str) -> None:
    """Raise if ``max(logits) / T`` overflows: so small a T is greedy decoding in effect.

    Rows with T = 0 (greedy, handled by the caller) are not checked. The quotient is computed in float32
    (float64 for float64 logits), as every filter computes it. A Python number T >= 1 (or 0) cannot
    overflow and costs nothing; otherwise one host sync (the trusted draw makes such rows greedy instead).
    """
    found = _overflows(logits, temperature)
    if found is None:
        return
    overflow, top = found
    n_bad = int(overflow.sum())
    if n_bad:
        dtype = compute_dtype(logits.dtype)
        raise ValueError(
            f"{fn}: temperature is too small for these logits: logits / temperature overflows {dtype} in "
            f"{n_bad} of {overflow.numel()} rows "
            f"(largest |max logit| {float(top[overflow].abs().max()):.3g}); "
            "use temperature=0 for greedy decoding"
        )


def _tempered(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """``logits / T`` upcast, for a T whose range the caller checked (`check_temperature_range`)."""
    x = _upcast(logits)
    t = _per_row(temperature, x, "temperature")
    return x / (t.to(x.dtype) if isinstance(t, Tensor) else t)


@_checks_logits
def temperature(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """Divide logits by the temperature T > 0: ``softmax(x / T)``; T < 1 sharpens, T > 1 flattens."""
    check_temperature_range(logits, temperature, "temperature")
    return _tempered(logits, temperature)


@_checks_logits
def top_n_sigma(logits: Tensor, n: float | Tensor) -> Tensor:
    """Top-nσ (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need", §3): keep ``x_i >= max(x) - n·σ(x)``.

    ``σ`` is the population standard deviation of the finite logits of the row (masked ``-inf`` entries
    are left out of the mean and of ``σ``), as in llama.cpp (``src/llama-sampling.cpp``,
    ``llama_sampler_top_n_sigma_apply``). Temperature-invariant: dividing the logits by ``T`` divides
    ``max``, ``σ`` and every logit alike, so the kept set is the same at every ``T > 0``. n > 0 (llama.cpp
    reads n <= 0 as "off": pass None); the most probable token is always kept. The mean, ``σ`` and the
    threshold are float64 (n too), as the fused kernel computes them: a float32 sum of many logits errs by
    more than the spacing of the logits near the cut.
    """
    x = _upcast(logits)
    nn = _per_row(n, x, "top_n_sigma")
    xd = x.double()
    finite = torch.isfinite(xd)
    count = finite.sum(-1, keepdim=True)
    mean = torch.where(finite, xd, 0.0).sum(-1, keepdim=True) / count
    var = torch.where(finite, xd - mean, 0.0).square().sum(-1, keepdim=True) / count
    threshold = xd.amax(dim=-1, keepdim=True) - (nn.double() if isinstance(nn, Tensor) else nn) * var.sqrt()
    return x.masked_fill(xd < threshold, -math.inf)


@_checks_logits
def top_k(logits: Tensor, k: int | Tensor, k_max: int | None = None) -> Tensor:
    """Keep the k largest logits of each row (k >= 1; k >= V keeps everything).

    `k_max` bounds a per-row k when the caller knows a bound (its largest value is then not read from the
    device: no host sync); rows with a larger k keep `k_max` tokens (and their ties).
    """
    x = _upcast(logits)
    vocab = x.shape[-1]
    if not isinstance(k, Tensor):
        k_max = int(k)
    elif k_max is None:
        k_max = int(k.max())
    k_max = min(k_max, vocab)
    largest = torch.topk(x, k_max, dim=-1).values  # (..., k_max), descending
    if isinstance(k, Tensor):
        kk = _per_row(k, x, "top_k").clamp(max=k_max).long().expand(*x.shape[:-1], 1)
        kth = largest.gather(-1, kk - 1)
    else:
        kth = largest[..., k_max - 1 : k_max]
    return x.masked_fill(x < kth, -math.inf)


def _keep_mass(x: Tensor, key: Tensor, pp: float | Tensor) -> Tensor:
    """Keep the tokens of highest `key` until their probability ``softmax(x)`` first reaches `pp`.

    `pp` is a number or a per-row ``(..., 1)`` tensor (from `_per_row`). The probabilities and their
    running sum are float64 (the sort stays in the key's dtype): the kept prefix is the shortest whose
    float64 mass is >= pp. Tokens whose key ties the last kept one are kept too; pp >= 1 keeps every
    token. The token of largest logit is always kept (it may be missing from the prefix when `key` is not
    the logit).
    """
    p = torch.softmax(x.double(), dim=-1)
    threshold = _mass_threshold_of_top(x, p, pp) if key is x and x.device.type == "cpu" else None
    if threshold is None:
        sorted_key, order = torch.sort(key, dim=-1, descending=True)
        mass = torch.cumsum(p.gather(-1, order), dim=-1)  # (..., V) mass of the first i + 1 tokens
        n_keep = ((mass < pp).sum(-1, keepdim=True) + 1).clamp(max=x.shape[-1])
        threshold = sorted_key.gather(-1, n_keep - 1)
    keep = (key >= threshold) | (torch.as_tensor(pp, device=x.device) >= 1.0) | _is_top1(x)
    return x.masked_fill(~keep, -math.inf)


# The CPU's nucleus cut first looks among the most probable tokens only (`_mass_threshold_of_top`).
_TOP_FIRST = 1024


def _mass_threshold_of_top(x: Tensor, p: Tensor, pp: float | Tensor) -> Tensor | None:
    """`_keep_mass`'s threshold when the key is the logit, from the `_TOP_FIRST` largest logits instead of a
    sort of the whole row, or None when that is not enough for some row (their mass stays below `pp`, or the
    cut ties the smallest of them: the whole sort decides then). The prefix sums are those of the sorted
    row's first tokens, so the cut is the same. CPU logits only: it reads one flag back (`cpu_scalar`)."""
    width = min(_TOP_FIRST, x.shape[-1])
    if width == x.shape[-1]:
        return None
    top, order = torch.topk(x, width, dim=-1)  # sorted, descending
    mass = torch.cumsum(p.gather(-1, order), dim=-1)
    count = (mass < pp).sum(-1, keepdim=True)
    n_keep = (count + 1).clamp(max=width)
    threshold = top.gather(-1, n_keep - 1)
    if cpu_scalar(((count >= width) | (threshold == top[..., -1:])).any()):
        return None
    return threshold


def _is_top1(x: Tensor) -> Tensor:
    return x == x.amax(dim=-1, keepdim=True)


@_checks_logits
def top_p(logits: Tensor, p: float | Tensor) -> Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability sums to >= p.

    p in (0, 1]; p = 1 keeps everything. The probabilities are ``softmax`` of the logits in float64 and are
    summed in float64 from the most probable down. The cut is applied as a threshold on the logits, so
    tokens tied with the last kept one are kept too.
    """
    x = _upcast(logits)
    return _keep_mass(x, x, _per_row(p, x, "top_p"))


@_checks_logits
def min_p(logits: Tensor, p: float | Tensor) -> Tensor:
    """Keep tokens with probability >= p * (probability of the top token), i.e. x >= max(x) + log p.

    p in [0, 1]; p = 0 keeps everything, p = 1 keeps only the top token (and its ties).
    """
    x = _upcast(logits)
    pp = _per_row(p, x, "min_p")
    log_p = torch.log(pp.to(x.dtype)) if isinstance(pp, Tensor) else (math.log(pp) if pp > 0 else -math.inf)
    threshold = x.amax(dim=-1, keepdim=True) + log_p
    return x.masked_fill(x < threshold, -math.inf)


@_checks_logits
def typical(logits: Tensor, mass: float | Tensor) -> Tensor:
    """Locally typical filter (Meister et al. 2023): keep the tokens whose surprisal is closest to H.

    Tokens are ranked by ``|-log p_i - H(p)|`` (ascending) and kept until their probability (float64,
    summed in float64) reaches `mass` in (0, 1]; mass = 1 keeps everything. The most probable token is
    kept even when it is not typical (a peaked distribution puts its top token far below the mean
    surprisal of the rest).

    When it keeps what `top_p` keeps: the kept tokens are a band of surprisals ``|-log p - H| <= ε``,
    the narrowest holding `mass`, while top-p keeps the most probable tokens. Once the band reaches the
    top token (``ε >= H + log p_max``) it grows in probability order, like top-p; so the two keep the
    same tokens (ties at a cut aside) whenever the tokens of surprisal below ``2H + log p_max`` hold less
    than `mass`. Language-model next-token rows are mostly of that kind (a dominant top token and a small
    H leave that band nearly empty), which is why typical and top-p at the same mass so often agree. They
    differ on flat-topped rows: one token clearly above a broad plateau (typical also keeps the plateau's
    tail, which top-p cuts), or many near-equal candidates (typical drops some of the most probable).
    """
    x = _upcast(logits)
    logp = torch.log_softmax(x, dim=-1)
    h = entropy_stats(x, variance=False)[0].unsqueeze(-1)
    deviation = torch.where(torch.isfinite(logp), (-logp - h).abs(), torch.full_like(logp, math.inf))
    return _keep_mass(x, -deviation, _per_row(mass, x, "typical"))


def _keep_above(x: Tensor, log_threshold: Tensor | float) -> Tensor:
    """Keep tokens with ``log p >= log_threshold`` and always the most probable one."""
    keep = (torch.log_softmax(x, dim=-1) >= log_threshold) | _is_top1(x)
    return x.masked_fill(~keep, -math.inf)


def _log_param(value: float | Tensor, x: Tensor, name: str) -> float | Tensor:
    v = _per_row(value, x, name)
    if isinstance(v, Tensor):
        return torch.log(v.to(x.dtype))
    return math.log(v) if v > 0 else -math.inf


@_checks_logits
def epsilon(logits: Tensor, eps: float | Tensor) -> Tensor:
    """Epsilon truncation (Hewitt et al. 2022): keep tokens with ``p_i >= ε``; ε in [0, 1).

    ε = 0 keeps everything; the most probable token is always kept.
    """
    x = _upcast(logits)
    return _keep_above(x, _log_param(eps, x, "epsilon"))


@_checks_logits
def eta(logits: Tensor, eta: float | Tensor) -> Tensor:
    """Eta truncation (Hewitt et al. 2022): keep tokens with ``p_i >= min(η, √η · exp(-H(p)))``; η in [0, 1).

    The threshold falls as the entropy rises, so flat distributions keep more of their tail than peaked
    ones. η = 0 keeps everything; the most probable token is always kept.
    """
    x = _upcast(logits)
    log_eta = _log_param(eta, x, "eta")
    h = entropy_stats(x, variance=False)[0].unsqueeze(-1)
    log_eta = torch.as_tensor(log_eta, dtype=x.dtype, device=x.device)
    return _keep_above(x, torch.minimum(log_eta, 0.5 * log_eta - h))


@_checks_logits
def p_less(logits: Tensor, p_less: bool | Tensor) -> Tensor:
    """p-less sampling (Tan et al. 2025): keep tokens with ``p_i >= Σ_j p_j²`` (no hyper-parameter).

    ``Σ_j p_j²`` is the probability that two independent draws agree: it is near 1 on a peaked row (one
    token kept) and ``1/n`` on a uniform row of ``n`` tokens (every token kept). Probabilities are float64.
    `p_less` switches it on (True) or off (False), for every row or per row (a bool tensor); the most
    probable token is always kept.
    """
    x = _upcast(logits)
    p = torch.softmax(x.double(), dim=-1)
    keep = (p >= p.square().sum(-1, keepdim=True)) | _is_top1(x)
    on = _per_row(p_less, x, "p_less")
    if isinstance(on, Tensor):
        keep = keep | ~on
    elif not on:
        return x
    return x.masked_fill(~keep, -math.inf)


@functools.partial(_checks_logits, range_name="xtc_threshold")
def xtc(logits: Tensor, xtc_threshold: float | Tensor, coin: bool | Tensor = True) -> Tensor:
    """Exclude top choices (XTC, llama.cpp ``src/llama-sampling.cpp``, ``llama_sampler_xtc_apply``).

    On the rows where `coin` is True, remove every token with ``p_i >= xtc_threshold`` except the least
    probable of them (and its ties); a row with fewer than two such tokens is unchanged (so a threshold
    above 0.5 never acts). The coin is the sampler's: ``u <= xtc_probability`` with ``u`` uniform from the
    row's randomness (`entropic.sampling.draw.draw` flips it); this function is deterministic.
    Probabilities are ``softmax`` of the logits in float64.
    """
    x = _upcast(logits)
    p = torch.softmax(x.double(), dim=-1)
    thr = _per_row(xtc_threshold, x, "xtc_threshold")
    above = p >= (thr.double() if isinstance(thr, Tensor) else thr)
    # the least probable token above the threshold, per row (p of the others is > it)
    p_last = torch.where(above, p, torch.full_like(p, math.inf)).amin(-1, keepdim=True)
    act = above.sum(-1, keepdim=True) >= 2
    c = _per_row(coin, x, "coin")
    if isinstance(c, Tensor):
        act = act & c
    elif not c:
        return x
    return x.masked_fill(act & above & (p > p_last), -math.inf)


def _dynatemp(
    x: Tensor, temperature: float | Tensor, delta: float | Tensor, exponent: float | Tensor
) -> tuple[Tensor, Tensor]:
    """``(x / T_dyn, T_dyn)`` for upcast logits x, without checks (see `dynamic_temperature`)."""
    t, d, e = (
        _per_row(v, x, name)
        for v, name in (
            (temperature, "temperature"),
            (delta, "dynatemp_range"),
            (exponent, "dynatemp_exponent"),
        )
    )
    t, d, e = (torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in (t, d, e))
    h = entropy_stats(x.double(), variance=False)[0].unsqueeze(-1)  # the one row-entropy algorithm
    n = torch.isfinite(x).sum(-1, keepdim=True).double()
    normalized = torch.where(n > 1, h / n.log(), 0.0)
    t_min, t_max = (t - d).clamp_min(0.0), t + d
    t_dyn = (t_min + (t_max - t_min) * normalized.pow(e)).expand(*x.shape[:-1], 1)
    single = n <= 1  # llama.cpp leaves a single candidate untouched
    greedy = (t_dyn == 0) & ~single  # T = 0: the most probable token
    divisor = torch.where(single | greedy, 1.0, t_dyn).to(x.dtype)
    out = torch.where(greedy & ~_is_top1(x), -math.inf, x / divisor)
    return out, t_dyn.squeeze(-1)


def dynamic_temperature(
    logits: Tensor, temperature: float | Tensor, delta: float | Tensor, exponent: float | Tensor = 1.0
) -> Tensor:
    """Entropy-scaled temperature (llama.cpp ``temp_ext``, ``src/llama-sampling.cpp``,
    ``llama_sampler_temp_ext_apply``): ``logits / T_dyn`` with

        T_dyn = T_min + (T_max - T_min) · (H / ln N)^exponent,  T_min = max(0, T - δ),  T_max = T + δ,

    where ``H`` is the entropy (nats) of ``softmax(logits)`` over the ``N`` finite candidates. Flat rows
    (``H`` near ``ln N``) are sampled near ``T_max``, peaked ones near ``T_min``. A row with one candidate is
    unchanged (as in llama.cpp); a row whose ``T_dyn`` is 0 keeps its most probable token only.

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits (the candidates: ``-inf`` entries are not counted in ``N``).
    temperature : float or Tensor
        ``T > 0``, the centre of the range; per row allowed.
    delta : float or Tensor
        ``δ >= 0`` (llama.cpp's ``dynatemp_range``); δ = 0 is the plain temperature ``T``.
    exponent : float or Tensor
        ``>= 0`` (llama.cpp's ``dynatemp_exponent``, default 1).

    Returns
    -------
    Tensor
        ``(..., V)`` float32 (float64 for float64 input) tempered logits.
    """
    check_logits(logits, "dynamic_temperature")
    _check_range("temperature", temperature)
    _check_range("dynatemp_range", delta)
    _check_range("dynatemp_exponent", exponent)
    return _dynatemp(_upcast(logits), temperature, delta, exponent)[0]


# String-keyed registry, so that a config can name a filter. Insertion order is the order of application.
FILTERS = {
    "temperature": temperature,
    "top_n_sigma": top_n_sigma,
    "top_k": top_k,
    "top_p": top_p,
    "min_p": min_p,
    "typical": typical,
    "epsilon": epsilon,
    "eta": eta,
    "p_less": p_less,
}
# The same filters without the logits check, for `apply_filters` (one check for the chain) and the samplers.
_UNCHECKED = {name: f.unchecked for name, f in FILTERS.items()}
# Every parameter after the temperature, in the order of application.
_MULTI = ("xtc_threshold", "xtc_probability", "dynatemp_range", "dynatemp_exponent")
_PIPELINE = (*list(FILTERS)[1:], *_MULTI)


@dataclass(frozen=True)
class SamplingParams:
    """The sampling parameters of one draw, validated once at construction.

    Every field is a Python number or a tensor with one value per row (the logits' batch shape, checked
    when the filters meet the logits); None switches a filter off. Ranges are the filters' (`RANGES`),
    except that the temperature may be 0 (greedy decoding) unless ``greedy=False``. `trusted` builds one
    without the checks, for parameters valid by construction (a sampler's own per-row tensors).

    Attributes
    ----------
    temperature : float or Tensor
        ``T >= 0`` (``T > 0`` with ``greedy=False``).
    top_k, top_p, min_p, typical, epsilon, eta : optional
        Truncations applied after the temperature, in this order (`apply_filters`).
    top_n_sigma, p_less : optional
        Top-nσ (before top-k) and p-less (after eta), see the filters of those names.
    xtc_threshold, xtc_probability : optional
        XTC (`xtc`), last of the truncations: on with `xtc_threshold`; each row excludes its top choices
        with probability `xtc_probability` (1 when None), a coin drawn from the row's randomness by `draw`.
    dynatemp_range, dynatemp_exponent : optional
        Dynamic temperature (`dynamic_temperature`): with `dynatemp_range` (δ) the temperature is the
        centre of ``[T - δ, T + δ]`` and is applied last, after the truncations; `dynatemp_exponent`
        defaults to 1.
    top_k_max : int, optional
        An upper bound of a per-row `top_k` tensor, so that the top-k filter need not read its maximum
        from the device (see `top_k`).
    """

    temperature: float | Tensor = 1.0
    top_k: int | Tensor | None = None
    top_p: float | Tensor | None = None
    min_p: float | Tensor | None = None
    typical: float | Tensor | None = None
    epsilon: float | Tensor | None = None
    eta: float | Tensor | None = None
    top_k_max: int | None = None
    greedy: InitVar[bool] = True
    top_n_sigma: float | Tensor | None = None
    p_less: bool | Tensor | None = None
    xtc_threshold: float | Tensor | None = None
    xtc_probability: float | Tensor | None = None
    dynatemp_range: float | Tensor | None = None
    dynatemp_exponent: float | Tensor | None = None

    def __post_init__(self, greedy: bool) -> None:
        if greedy:
            check_param(self.temperature, "temperature", 0.0, math.inf, high_open=True)
        else:
            _check_range("temperature", self.temperature)
        for name, value in self.truncations().items():
            _check_range(name, value)
        for name, on in (("xtc_probability", "xtc_threshold"), ("dynatemp_exponent", "dynatemp_range")):
            if getattr(self, name) is not None and getattr(self, on) is None:
                raise ValueError(f"{name} needs {on}: pass {on}= too")
        if self.top_k_max is not None:
            check_param(self.top_k_max, "top_k_max", 1, math.inf, integer=True)
            if isinstance(self.top_k, Tensor) and bool((self.top_k > self.top_k_max).any()):
                largest = int(self.top_k.max())
                raise ValueError(f"top_k must be <= top_k_max = {self.top_k_max}, got {largest}")

    @classmethod
    def trusted(cls, **values: float | Tensor | None) -> SamplingParams:
        """Parameters valid by construction, stored without a check (no host sync): the samplers' path."""
        params = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(params, f.name, values.pop(f.name, f.default))
        if values:
            raise TypeError(f"SamplingParams.trusted: unknown parameters {sorted(values)}")
        return params

    def truncations(self) -> dict[str, float | Tensor]:
        """The filters in effect (not None) after the temperature, in the order of application (the
        dynamic temperature's two parameters last)."""
        return {name: getattr(self, name) for name in _PIPELINE if getattr(self, name) is not None}

    def apply(self, logits: Tensor, fn: str = "apply_filters") -> Tensor:
        """``filter(logits / T)`` for checked logits and ``T > 0``; `fn` names the caller in errors."""
        check_temperature_range(logits, self.temperature, fn)
        return _apply_filters(logits, self.temperature, self.truncations(), fn, self.top_k_max)


def apply_filters(
    logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    top_k: int | Tensor | None = None,
    top_p: float | Tensor | None = None,
    min_p: float | Tensor | None = None,
    typical: float | Tensor | None = None,
    epsilon: float | Tensor | None = None,
    eta: float | Tensor | None = None,
    top_n_sigma: float | Tensor | None = None,
    p_less: bool | Tensor | None = None,
    xtc_threshold: float | Tensor | None = None,
    dynatemp_range: float | Tensor | None = None,
    dynatemp_exponent: float | Tensor | None = None,
) -> Tensor:
    """Temperature, then top-nσ, top-k, top-p, min-p, typical, epsilon, eta, p-less and XTC (those not
    None), in that order; with `dynatemp_range` the (dynamic) temperature comes last instead.

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits.
    temperature, top_k, top_p, min_p, typical, epsilon, eta, top_n_sigma, p_less, xtc_threshold
        A number, or a tensor of the batch shape ``logits.shape[:-1]`` with one value per row; see the
        filter of the same name (`SamplingParams` holds them, validated). XTC acts on every row here
        (its coin is the samplers').
    dynatemp_range, dynatemp_exponent
        The dynamic temperature's δ and exponent (`dynamic_temperature`).

    Returns
    -------
    Tensor
        ``(..., V)`` float32 (float64 for float64 input) logits, removed tokens at -inf.

    Raises
    ------
    ValueError
        NaN or +inf in `logits`, or a row with no finite entry (checked once for the whole chain), or a
        parameter out of its filter's range.

    Examples
    --------
    >>> apply_filters(torch.tensor([2.0, 1.0, 0.0, -3.0]), temperature=0.5, top_k=2)
    tensor([4., 2., -inf, -inf])
    """
    check_logits(logits, "apply_filters")
    more = {"top_n_sigma": top_n_sigma, "p_less": p_less, "xtc_threshold": xtc_threshold}
    more |= {"dynatemp_range": dynatemp_range, "dynatemp_exponent": dynatemp_exponent}
    params = SamplingParams(temperature, top_k, top_p, min_p, typical, epsilon, eta, greedy=False, **more)
    return params.apply(logits)


def _apply_filters(
    logits: Tensor,
    temperature: float | Tensor,
    filters: Mapping[str, object],
    fn: str = "apply_filters",
    top_k_max: int | None = None,
    xtc_coin: Tensor | None = None,
) -> Tensor:
    """`apply_filters` for callers that checked the logits, the parameters and the temperature's range
    already (no check, no host sync); `filters` maps names to values or None, `top_k_max` bounds a per-row
    top-k, `xtc_coin` says which rows XTC acts on (every row when None). `fn` names the public caller in
    errors."""
    truncations = list(_UNCHECKED)[1:]  # after the temperature, in the registry's order
    unknown = sorted(set(filters) - set(_PIPELINE))
    if unknown:
        raise ValueError(f"{fn}: unknown filters {unknown}; known: {list(_PIPELINE)}")
    delta = filters.get("dynatemp_range")
    x = _upcast(logits) if delta is not None else _tempered(logits, temperature)
    for name in truncations:
        if filters.get(name) is not None:
            extra = (top_k_max,) if name == "top_k" else ()
            x = _UNCHECKED[name](x, filters[name], *extra)
    if filters.get("xtc_threshold") is not None:
        x = xtc.unchecked(x, filters["xtc_threshold"], True if xtc_coin is None else xtc_coin)
    if delta is not None:
        exponent = filters.get("dynatemp_exponent")
        x = _dynatemp(x, temperature, delta, 1.0 if exponent is None else exponent)[0]
    return x

"""The PyTorch path of `entmax_attention`: exact α-entmax, chunked over queries, analytic backward.

Root finding. For one query row with visible scores s, row max m, ``e = 1/(α-1)`` and
``x_j = (α-1)(s_j - m) <= 0``, α-entmax is ``p_j = [x_j - δ]_+^e`` with δ in ``[-1, -n^{1-α}]`` the root
of ``h(δ) = ||[x - δ]_+||_e - 1``. h is convex (a monotone norm of functions convex in δ) and
decreasing, so Newton's method started at the left end δ = -1 rises monotonically to the root, with no
safeguard: its tangent never crosses the root. On a fixed support h is the e-norm of an affine map, close
to linear (exactly linear at α = 2, where Newton is Michelot's algorithm and ends exactly, and whenever
the support's terms are equal), so a handful of steps reach rounding. With ``t = -δ`` (the largest term,
since max x = 0) and ``r = [1 + x / t]_+ <= 1``, nothing overflows even near α = 1::

    h = t R0^{1/e} - 1,    dh/dδ = -R0^{1/e - 1} R1,    R0 = Σ r^e,    R1 = Σ_{r > 0} r^{e-1},

and ``p = r^e / R0`` sums to one. At α = 2 (e = 1) h is piecewise linear in t, Newton is Michelot's
algorithm (``t ← (1 - Σ_S x) / |S|`` on the support S at t), and it starts at t = 1/2 instead: from any
t in (0, 1] one step lands in ``[t*, 1]`` (a convex function lies above its tangents, and the top key
alone gives h(1) >= 0), so the start costs at most one step, and it saves about one on attention rows
whose top weight t* is at most 1/2 (their support at 1/2 is smaller than at 1).
A row stops once its Newton step is below ``eps^{3/4} t`` (the next would change nothing at this
precision); rows never wait for one another (converged rows leave the
iteration), so a row's weights depend on its own scores only (bitwise at α = 1.5 and 2; at other α CPU
exp and log may round an element differently in their vector loop and in its scalar tail), and the same
inputs give bitwise the same outputs.
Rows with α = 1 are softmax, ``p = exp(s - m) / Σ exp(s - m)``.

Memory. Queries are processed in chunks of at most `_CHUNK_ELEMENTS` scores (whole multiples of 64
queries, so that chunks never split a tile of `block_sparsity`), so no more than one chunk of scores is
alive at a time. For the backward the forward saves per query ``(m, t, L, α)``, and the weights
themselves only while all of them fit in `_SAVED_ELEMENTS`; otherwise the backward recomputes the
weights of each chunk from the row state (as the flash kernels do, bitwise the forward's): saved memory
O(B·H·Nq), not O(Nq·Nk).

Backward. On the support the entmax Jacobian is ``diag(g) - g gᵀ / Σg`` with ``g = p^{2-α}``, so with
``dp_j = dO·v_j``: ``ds_j = g_j (dp_j - r)``, ``r = Σ g dp / Σ g``, and (Correia et al., 2019)
``∂L/∂α = (Σ dp p - r) / (α-1)² - (Σ dp p log p - r Σ p log p) / (α-1)``, 0 at α = 1.

Host syncs. Softmax rows (α = 1) read nothing from the device. Rows with α > 1 do: the Newton loop
tests convergence and gathers the rows still iterating (`_newton`), and a per-row α is split into its
softmax, 1.5, 2 and other rows (`_probs`), each a read of the device. This path runs where such a read
is nearly free (the CPU), and on a GPU only where the Triton kernel cannot (a mask, dropout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from entropic.ops.entmax_attention.certify import (
    Certify,
    block_max,
    certified_zero,
    key_bounds,
    score_bounds,
    subset_blocks,
    tile_blocks,
)
from entropic.ops.entmax_attention.schedule import EntropySchedule, weights_entropy
from entropic.ops.entropy.torch import entropy_stats

# Scores per chunk (the (B, H, queries, Nk) block one step holds): 2 MiB in float32.
_CHUNK_ELEMENTS = 1 << 19
# Weights a training forward keeps for its backward (p and p^{2-α}, counted together) when they fit in
# this many elements (64 MiB in float32); above it the backward recomputes them chunk by chunk.
_SAVED_ELEMENTS = 1 << 24
# Newton steps per row at most (rows stop on their own after a handful).
_MAX_STEPS = 40
# Where Newton starts at α = 2 (t, the top weight; see the module docstring).
_SPARSEMAX_START = 0.5


class Chunk(NamedTuple):
    """Batch rows, queries and the keys they can see (all, or the causal prefix) of one step."""

    b: slice
    q: slice
    k: slice


def chunks(b: int, h: int, nq: int, nk: int, causal: bool, queries: int = 64) -> list[Chunk]:
    """Chunks covering ``(B, Nq)``, a function of the shapes only: `queries` queries (all of them for
    decoding) and as many batch rows as keep a chunk within `_CHUNK_ELEMENTS` scores (at least one).
    Causal chunks stop at the last key their last query sees, so causal attention computes about half
    the scores."""
    c = max(1, min(nq, queries))
    bb = max(1, min(b, _CHUNK_ELEMENTS // max(h * c * nk, 1)))
    out = []
    for j in range(0, nq, c):
        end = min(nk, max(1, j + c + nk - nq)) if causal else nk
        out += [Chunk(slice(i, i + bb), slice(j, j + c), slice(0, end)) for i in range(0, b, bb)]
    return out


def scores(
    q: Tensor,
    k: Tensor,
    bias: Tensor | None,
    *,
    scale: float,
    causal: bool,
    q_start: int,
    n_q: int,
    n_k: int,
    keys: Tensor | None = None,
) -> Tensor:
    """Scaled, masked scores ``(B, H, c, n)`` of the queries ``q_start .. q_start + c`` of `n_q` against
    the first n of `n_k` keys, or against the keys at positions `keys`.

    q is ``(B, H, c, D)`` and k ``(B, Hkv, n, D)`` in the compute dtype; `bias` is the chunk of a
    boolean keep mask or of a float bias with -inf at hidden keys; hidden keys get -inf. `keys`
    ``(B, Hkv, n)`` (int64) gives the positions of k's rows (gathered key blocks, `certify`): the bias
    ``(.., c or 1, n_k)`` is read there and positions ``>= n_k`` (a ragged last block's padding) are hidden.
    """
    b, h, c, _ = q.shape
    hkv, n = k.shape[1], k.shape[2]
    s = (_grouped(q * scale, hkv) @ k.transpose(-1, -2)).view(b, h, c, n)
    cols = torch.arange(n, device=s.device)
    if keys is not None:
        cols = keys.repeat_interleave(h // hkv, 1).unsqueeze(2)  # (B, H, 1, n)
        if bias is not None:
            index = cols.clamp(max=n_k - 1).expand(b, h, bias.shape[2], n)
            bias = bias.expand(b, h, bias.shape[2], n_k).gather(3, index)
        s = s.masked_fill_(cols >= n_k, -math.inf)
    if bias is not None:
        s = s.masked_fill_(~bias, -math.inf) if bias.dtype == torch.bool else s.add_(bias)
    if causal:
        rows = torch.arange(q_start, q_start + c, device=s.device).unsqueeze(-1) + (n_k - n_q)
        s = s.masked_fill_(cols > rows, -math.inf)
    return s


def softmax_stats(s: Tensor, row_max: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Detached (entropy, varentropy, log Z, n_visible, dead) of softmax over the finite scores ``(..., n)``
    (`entropic.ops.entropy.torch`, given `row_max` = ``s.amax(-1)`` when the caller has it); a row that
    sees no key has 0 everywhere and ``dead`` True."""
    s = s.detach()
    ent, var, log_z = entropy_stats(s, row_max)
    n_visible = (s > -math.inf).sum(-1)
    dead = n_visible == 0
    return ent, var, log_z.masked_fill(dead, 0.0), n_visible, dead


# ------------------------------------------------------------------------------------ root finding


def _floor(dtype: torch.dtype) -> tuple[float, float]:
    """(smallest r fed to log, smallest exponent fed to exp): both keep every value a normal number
    (subnormals and exp underflow are slow on CPU) and change sums only far below rounding."""
    return (1e-30, -80.0) if dtype != torch.float64 else (1e-300, -690.0)


def _weights(x: Tensor, t: Tensor, e: float | Tensor, full: bool) -> tuple[Tensor | None, ...]:
    """``(w, w1, S, S1)`` for rows of x ``(..., Nk)`` at t ``(...)``: ``w = u^e``, ``w1 = u^{e-1}`` (0 off
    the support), ``S = Σ w``, ``S1 = Σ w1``, with ``u = [x + t]_+`` when e is 1 or 2 (no powers, no
    overflow) and ``u = [1 + x / t]_+`` otherwise (``u <= 1``, nothing overflows near α = 1). w and w1
    are None unless `full`. e is a number or ``(..., 1)``."""
    if isinstance(e, float) and e in (1.0, 2.0):
        u = (x + t.unsqueeze(-1)).clamp_(min=0.0)
        if e == 1.0:
            total = u.sum(-1)
            w1 = u.sign() if full else u.sign_()  # u >= 0: the support indicator
            return (u if full else None, w1 if full else None, total, w1.sum(-1))
        norm = torch.linalg.vector_norm(u, 2, -1)  # one pass, no (.., Nk) temporary
        return (u * u if full else None, u if full else None, norm * norm, u.sum(-1))
    tiny, low = _floor(x.dtype)
    r = (x * t.reciprocal().unsqueeze(-1)).add_(1.0).clamp_(min=0.0)
    w1 = r.clamp(min=tiny).log_().mul_(e - 1.0).clamp_(min=low).exp_().mul_(r.sign())  # r^{e-1}
    w = w1 * r
    return (w if full else None, w1 if full else None, w.sum(-1), w1.sum(-1))


def _newton(x: Tensor, e: float | Tensor, live: Tensor) -> Tensor:
    """t = -δ of α-entmax on the `live` rows of ``x = (α-1)(s - m)`` (1 on the others); `e` = 1/(α-1),
    a number or a tensor of ``x.shape[:-1]``. See the module docstring.

    Rows that have converged leave the iteration: their t is frozen, and once at most half of the
    block still iterates, those rows are gathered into a smaller block (gathering whenever a row
    stops would copy the block at almost every step). The cost follows the average number of steps,
    not the slowest row, and a row's result never depends on the other rows.

    The convergence test and the gathering read the device (``int(still.sum())``, ``nonzero``) at
    every step: the only host syncs of the attention hot path, kept on purpose. This path serves the
    CPU, where such a read is nearly free, and a GPU only where the Triton kernel cannot (a mask,
    dropout); a fixed step count would cost every row the slowest row's steps.
    """
    tol = torch.finfo(x.dtype).eps ** 0.75
    n = x.shape[-1]
    t = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device).view(-1)
    u_form = isinstance(e, float) and e in (1.0, 2.0)
    rows = live.reshape(-1).nonzero().squeeze(1)  # the rows of the block
    xa, ea, ta = x.reshape(-1, n), e if isinstance(e, float) else e.reshape(-1), t
    if rows.numel() < t.numel():
        xa, ta = xa.index_select(0, rows), ta.index_select(0, rows)
        ea = ea if isinstance(ea, float) else ea.index_select(0, rows)
    if isinstance(ea, float) and ea == 1.0:
        ta = torch.full_like(ta, _SPARSEMAX_START)
    going = None  # the rows of the block still iterating (None: all of them)
    for _ in range(_MAX_STEPS):
        if rows.numel() == 0:
            break
        _, _, total, total1 = _weights(xa, ta, ea if isinstance(ea, float) else ea.unsqueeze(-1), full=False)
        if isinstance(ea, float) and ea == 1.0:  # α = 2: the norm is the sum (Michelot's step)
            step = (total - 1.0) / total1
        else:
            norm = total.pow(1.0 / ea)
            step = ((norm if u_form else ta * norm) - 1.0) * total / (norm * total1)
        if isinstance(ea, float):
            t_new = (ta - step).clamp_(min=n ** (-1.0 / ea))
        else:
            t_new = torch.maximum(ta - step, torch.pow(float(n), -1.0 / ea))
        still = step.abs() > tol * t_new
        if going is not None:  # converged rows keep their t
            t_new = torch.where(going, t_new, ta)
            still &= going
        ta, going = t_new, still
        if 2 * int(still.sum()) <= rows.numel():
            t.index_copy_(0, rows, ta)
            keep = still.nonzero().squeeze(1)
            rows, xa, ta = rows[keep], xa.index_select(0, keep), ta[keep]
            ea = ea if isinstance(ea, float) else ea[keep]
            going = None
    t.index_copy_(0, rows, ta)  # the rows still iterating after _MAX_STEPS (none as a rule)
    return t.view(x.shape[:-1])


# -------------------------------------------------------------------------------------- one chunk


def _chunk_alpha(
    alpha: float | Tensor | EntropySchedule, stats: tuple[Tensor, ...] | None, ch: Chunk
) -> float | Tensor:
    """α of a chunk's rows: a number, the chunk's slice of a tensor, or a softmax-entropy schedule of the
    chunk's softmax `stats` (`softmax_stats`)."""
    if isinstance(alpha, EntropySchedule):
        ent, var, _, n_visible, _ = stats
        return alpha(ent, n_visible, var)
    if isinstance(alpha, Tensor):
        return alpha[ch.b, :, ch.q]
    return alpha


def _reads_sparsemax(alpha: float | Tensor | EntropySchedule) -> bool:
    """α is a schedule on the sparsemax entropy (`EntropySchedule.source`)."""
    return isinstance(alpha, EntropySchedule) and alpha.source == "sparsemax"


def _sparsemax_alpha(schedule: EntropySchedule, z: Tensor, live: Tensor) -> Tensor:
    """α ``(...)`` of `schedule` from the sparsemax weights of centred score rows z ``(..., n)`` (left as
    they are); rows that see nothing take the schedule's α at entropy 0 (they have no weights)."""
    p, _, _ = _probs(z.clone(), live, 2.0, None)
    ent, var = weights_entropy(p)
    return schedule(ent, 1, var)


def _probs(
    z: Tensor, live: Tensor, a: float | Tensor, state: tuple[Tensor, Tensor] | None, grad: bool = False
) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
    """``(p, g, (t, L))`` of centred scores ``z = s - m`` ``(..., Nk)`` at α `a` (a number or per row).

    `live` marks the rows that see a key. The row state ``(t, L)`` (L = 0 on rows that see nothing) is
    solved when `state` is None, else read from it: the weights are then bitwise those of the forward.
    ``g = p^{2-α}`` when `grad`, else None. z is overwritten. A per-row α is split into the rows at
    α = 1 (softmax), 1.5 and 2 (no powers) and the others, each computed on its own rows only (when
    most rows are softmax, on all rows, and the others on top).
    """
    if isinstance(a, float):
        return _probs_rows(z, live, a, state, grad)
    n = z.shape[-1]
    rows_shape = z.shape[:-1]
    x, a, live = z.reshape(-1, n), a.reshape(-1), live.reshape(-1)
    if state is not None:
        state = (state[0].reshape(-1), state[1].reshape(-1))
    soft = a <= 1.0
    groups = [(a == 1.5, 1.5), (a == 2.0, 2.0), (~(soft | (a == 1.5) | (a == 2.0)), None)]
    if 2 * int(soft.sum()) >= a.numel():
        # mostly softmax rows (a schedule on diffuse scores): softmax of every row, the others on top
        p, g, (t, total) = _probs_rows(x, live, 1.0, state, grad)
        if state is not None:  # the saved state itself: written below
            t, total = t.clone(), total.clone()
        p = p.clone() if grad else p  # g is p: the entmax rows below must not write into it
    else:
        groups.insert(0, (soft, 1.0))
        p = torch.empty_like(x)
        g = torch.empty_like(x) if grad else None
        t, total = torch.ones_like(a), torch.zeros_like(a)
    for rows, alpha in groups:
        idx = rows.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        whole = idx.numel() == a.numel()

        def pick(y: Tensor, idx: Tensor = idx, whole: bool = whole) -> Tensor:
            return y if whole else y.index_select(0, idx)

        sub_state = None if state is None else (pick(state[0]), pick(state[1]))
        ps, gs, (ts, totals) = _probs_rows(
            pick(x), pick(live), pick(a) if alpha is None else alpha, sub_state, grad
        )
        if whole:
            p, g, t, total = ps, gs, ts, totals
            break
        p.index_copy_(0, idx, ps)
        if grad:
            g.index_copy_(0, idx, gs)
        t.index_copy_(0, idx, ts)
        total.index_copy_(0, idx, totals)
    return (
        p.view(*rows_shape, n),
        g.view(*rows_shape, n) if grad else None,
        (t.view(rows_shape), total.view(rows_shape)),
    )


def _probs_rows(
    x: Tensor, live: Tensor, a: float | Tensor, state: tuple[Tensor, Tensor] | None, grad: bool
) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
    """`_probs` of rows that are all softmax (α a number <= 1) or all entmax (α > 1, number or per row)."""
    if isinstance(a, float) and a <= 1.0:
        p = torch.softmax(x, -1).masked_fill_(~live.unsqueeze(-1), 0.0)  # a row with no key gives NaN
        t, total = (torch.ones_like(x[..., 0]), live.to(x.dtype)) if state is None else state
        return p, p if grad else None, (t, total)
    am1 = a - 1.0
    e = 1.0 / am1
    if not (isinstance(am1, float) and am1 == 1.0):
        x = x.mul_(am1 if isinstance(am1, float) else am1.unsqueeze(-1))  # x = (α - 1)(s - m)
    t = _newton(x, e, live) if state is None else state[0]
    w, w1, total, _ = _weights(x, t, e if isinstance(e, float) else e.unsqueeze(-1), full=True)
    if state is not None:
        total = state[1]
    safe = torch.where(total > 0, total, 1.0)
    p = w.div_(safe.unsqueeze(-1))
    # p^{2-α} = w1 / L^{2-α}: the weights' own power, no pow on the (.., Nk) block (at α = 2, the support)
    if grad and not (isinstance(a, float) and a == 2.0):
        w1 = w1.mul_(safe.pow(a - 2.0).unsqueeze(-1))
    g = w1 if grad else None
    return p, g, (t, total)


def _dropout_keep(shape: torch.Size, p: float, seed: int, like: Tensor) -> Tensor:
    """The scaled keep mask ``1[u >= p] / (1 - p)`` of one chunk, from its own seeded generator."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    u = torch.rand(shape, generator=gen, dtype=like.dtype, device=like.device)
    return (u >= p).to(like.dtype) / (1.0 - p)


def _tile_counts(p: Tensor, visible: Tensor, tiles: tuple[int, int]) -> Tensor:
    """``[tiles holding a visible pair, of which with a non-zero weight]`` (float64) of one chunk."""
    b, h, nq, nk = p.shape
    tq, tk = tiles
    pad = (0, -nk % tk, 0, -nq % tq)
    shape = (b, h, -1, tq, (nk + pad[1]) // tk, tk)

    def any_in_tile(mask: Tensor) -> Tensor:
        return torch.nn.functional.pad(mask.to(torch.uint8), pad).view(shape).amax((3, 5)).bool()

    live = any_in_tile(visible)
    used = any_in_tile(p > 0) & live
    return torch.stack([live.sum(), used.sum()]).double()


# ----------------------------------------------------------------------------------- the function


class ChunkedEntmaxAttention(torch.autograd.Function):
    """o = α-entmax(scale·q kᵀ + bias) v chunk by chunk; differentiable in q, k, v, a tensor α, a bias.

    ``forward(q, k, v, alpha_tensor, bias, spec, bounds)`` with q, k, v in the compute dtype,
    `alpha_tensor` ``(B, H, Nq)`` or None, `bias` 4-D or None, `spec` a `Spec` and `bounds` the
    ``(kmin, kmax)`` of k's blocks (`certify.key_bounds`, kept beside a KV cache) or None. Returns ``(out,
    alpha, stats, tiles)``: the α applied ``(B, H, Nq)``, and when ``spec.stats`` the ``(5, B, H, Nq)``
    entropy, varentropy, log Z, visible keys and support, and the ``(2,)`` live and used tile counts.

    With ``spec.certify`` (and `certifies`), each chunk scores only the key blocks that the certificate
    leaves (`_certified_blocks`), and the backward reads the same blocks.
    """

    @staticmethod
    def forward(ctx, q, k, v, alpha_tensor, bias, spec, bounds=None):
        b, h, nq, _ = q.shape
        hkv, nk, dv = v.shape[1:]
        alpha = alpha_tensor if alpha_tensor is not None else spec.alpha
        sparse_source = _reads_sparsemax(alpha)
        need_stats = spec.stats or (isinstance(alpha, EntropySchedule) and not sparse_source)
        certify = certifies(spec, alpha)
        out = q.new_empty(b, h, nq, dv)
        row = q.new_empty(4, b, h, nq)  # m, t, L, α
        stats = q.new_zeros(5, b, h, nq) if spec.stats else q.new_empty(0)
        tiles = torch.zeros(2, dtype=torch.float64, device=q.device)
        plan = chunks(b, h, nq, nk, spec.causal, spec.certify.queries if certify else 64)
        kept = []  # (p, p^{2-α}) per chunk, when they fit
        keep = (
            any(ctx.needs_input_grad[:5])
            and 2 * sum(len(range(b)[ch.b]) * h * len(range(nq)[ch.q]) * len(range(nk)[ch.k]) for ch in plan)
            <= _SAVED_ELEMENTS
        )
        blocks = []  # the key blocks each chunk scored, when certified
        if certify:
            bounds = key_bounds(k, spec.certify.block) if bounds is None else bounds
            kp, vp = _pad_keys(k, spec.certify.block), _pad_keys(v, spec.certify.block)
        for ch in plan:
            vc = v[ch.b, :, ch.k]
            a = None  # the chunk's α, once known
            if certify:  # S's scores, and those of the blocks the certificate leaves besides S
                if sparse_source:  # first the sparsemax rows, certified at α = 2, for the schedule's α
                    a, _ = _certified_sparsemax_alpha(alpha, q, kp, bias, bounds, ch, spec, nk)
                a_cert = _chunk_alpha(alpha, None, ch) if a is None else a
                s, vc, ids = _certified_scores(q, kp, vp, bias, bounds, ch, spec, a_cert, nk)
                blocks.append(ids)
            else:
                s = _chunk_scores(q, k, bias, ch, spec)
            m = s.amax(-1)
            st = softmax_stats(s, m) if need_stats else None  # before s is shifted in place
            live = m > -math.inf
            m = torch.where(live, m, 0.0)  # rows that see nothing: any finite shift, their weights are 0
            z = s.sub_(m.unsqueeze(-1))
            if a is None:
                a = _sparsemax_alpha(alpha, z, live) if sparse_source else _chunk_alpha(alpha, st, ch)
            p, g_p, (t, total) = _probs(z, live, a if isinstance(a, float) else a.detach(), None, grad=keep)
            if keep:
                kept += [p, g_p]
            a_rows = torch.full_like(m, a) if isinstance(a, float) else a.to(q.dtype)
            row[:, ch.b, :, ch.q] = torch.stack([m, t, total, a_rows])
            pw = p  # the weights applied: p, or p with dropout (the statistics describe p)
            if spec.dropout > 0:
                pw = p * _dropout_keep(p.shape, spec.dropout, spec.chunk_seed(ch, nq), p)
            bb, c = p.shape[0], p.shape[2]
            out[ch.b, :, ch.q] = (_grouped(pw, hkv) @ vc).view(bb, h, c, dv)
            if spec.stats:
                ent, var, log_z, n_visible, _ = st
                fields = (ent, var, log_z, n_visible, (p > 0).sum(-1))
                stats[:, ch.b, :, ch.q] = torch.stack([f.to(q.dtype) for f in fields])
                tiles += _tile_counts(p, z > -math.inf, spec.tiles)
        ctx.spec, ctx.certify, ctx.n_kept = spec, certify, len(kept)
        ctx.save_for_backward(q, k, v, bias, row, *kept, *blocks)
        alpha_used = row[3].clone()
        ctx.mark_non_differentiable(alpha_used, stats, tiles)
        return out, alpha_used, stats, tiles

    @staticmethod
    def backward(ctx, d_out, _d_alpha, _d_stats, _d_tiles):
        q, k, v, bias, row, *rest = ctx.saved_tensors
        kept, blocks = rest[: ctx.n_kept], rest[ctx.n_kept :]
        spec = ctx.spec
        b, h, nq, _ = q.shape
        hkv, nk = k.shape[1:3]
        want_alpha, want_bias = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        if ctx.certify:  # gradients of the padded keys, cut to Nk at the end
            k, v = _pad_keys(k, spec.certify.block), _pad_keys(v, spec.certify.block)
        dq, dk, dv_ = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        d_alpha = torch.zeros_like(row[3]) if want_alpha else None
        d_bias = torch.zeros_like(bias) if want_bias else None
        d_out = d_out.to(q.dtype)
        queries = spec.certify.queries if ctx.certify else 64
        for i, ch in enumerate(chunks(b, h, nq, nk, spec.causal, queries)):
            qc, doc = q[ch.b, :, ch.q], d_out[ch.b, :, ch.q]
            bb, c = qc.shape[0], qc.shape[2]
            m, t, total, a = row[:, ch.b, :, ch.q]
            keys = None
            if ctx.certify:
                keys = _block_keys(blocks[i], spec.certify.block)
                kc, vc = _gather_keys(k[ch.b], keys), _gather_keys(v[ch.b], keys)
            else:
                kc, vc = k[ch.b, :, ch.k], v[ch.b, :, ch.k]
            if kept:
                p, gp = kept[2 * i], kept[2 * i + 1]
            else:
                if ctx.certify:
                    s = scores(
                        qc, kc, _bias_chunk(bias, ch, nq, nk, all_keys=True), scale=spec.scale,
                        causal=spec.causal, q_start=ch.q.start, n_q=nq, n_k=nk, keys=keys,
                    )  # fmt: skip
                else:
                    s = _chunk_scores(q, k, bias, ch, spec)
                a_rows = spec.alpha if isinstance(spec.alpha, float) else a
                p, gp, _ = _probs(s.sub_(m.unsqueeze(-1)), total > 0, a_rows, (t, total), grad=True)
            dog = _grouped(doc, hkv)
            dp = (dog @ vc.transpose(-1, -2)).view(bb, h, c, -1)
            pw = p
            if spec.dropout > 0:
                keep = _dropout_keep(p.shape, spec.dropout, spec.chunk_seed(ch, nq), p)
                pw, dp = p * keep, dp * keep
            d_vc = _grouped(pw, hkv).transpose(-1, -2) @ dog
            sum_g = gp.sum(-1)
            r = (gp * dp).sum(-1) / torch.where(sum_g > 0, sum_g, 1.0)
            ds = dp.sub_(r.unsqueeze(-1)).mul_(gp) if not want_alpha else gp * (dp - r.unsqueeze(-1))
            if want_alpha:
                pos = p > 0
                plogp = torch.where(pos, p * torch.log(torch.where(pos, p, 1.0)), 0.0)
                soft = a <= 1.0
                am1 = torch.where(soft, 1.0, a - 1.0)
                da = ((p * dp).sum(-1) - r) / am1.square() - ((plogp * dp).sum(-1) - r * plogp.sum(-1)) / am1
                d_alpha[ch.b, :, ch.q] = torch.where(soft, 0.0, da)
            if want_bias:
                target = _bias_chunk(d_bias, ch, nq, nk, all_keys=ctx.certify)
                if ctx.certify:  # the gathered keys' gradients, in place in the chunk's rows
                    index = keys.repeat_interleave(h // hkv, 1).unsqueeze(2).expand(bb, h, c, -1)
                    full = ds.new_zeros(bb, h, c, k.shape[2]).scatter_(3, index, ds)
                    target.add_(full[..., :nk].sum_to_size(target.shape))
                else:
                    target.add_(ds.sum_to_size(target.shape))
            dsg = _grouped(ds, hkv)
            dq[ch.b, :, ch.q] = (dsg @ kc).view(bb, h, c, -1) * spec.scale
            d_kc = dsg.transpose(-1, -2) @ _grouped(qc * spec.scale, hkv)
            if ctx.certify:
                index = keys.unsqueeze(-1)
                dv_[ch.b].scatter_add_(2, index.expand(-1, -1, -1, d_vc.shape[-1]), d_vc)
                dk[ch.b].scatter_add_(2, index.expand(-1, -1, -1, d_kc.shape[-1]), d_kc)
            else:
                dv_[ch.b, :, ch.k] += d_vc
                dk[ch.b, :, ch.k] += d_kc
        if ctx.certify:
            dk, dv_ = dk[:, :, :nk], dv_[:, :, :nk]
        return dq, dk, dv_, d_alpha, d_bias, None, None


def _grouped(x: Tensor, hkv: int) -> Tensor:
    """``(B, H, c, ·)`` as ``(B, Hkv, G·c, ·)``: query head h = kv·G + g reads key/value head kv."""
    b, h, c, n = x.shape
    return x.reshape(b, hkv, h // hkv * c, n)


def _bias_chunk(bias: Tensor | None, ch: Chunk, n_q: int, n_k: int, all_keys: bool = False) -> Tensor | None:
    """The part of a 4-D (broadcastable) bias that a chunk reads (a view): its keys, or all of them."""
    if bias is None:
        return None
    rows = ch.q if bias.shape[2] == n_q and n_q > 1 else slice(None)
    keys = ch.k if bias.shape[3] == n_k and n_k > 1 and not all_keys else slice(None)
    return bias[ch.b if bias.shape[0] > 1 else slice(None), :, rows, keys]


def _chunk_scores(q: Tensor, k: Tensor, bias: Tensor | None, ch: Chunk, spec: Spec) -> Tensor:
    nq, nk = q.shape[2], k.shape[2]
    return scores(
        q[ch.b, :, ch.q], k[ch.b, :, ch.k], _bias_chunk(bias, ch, nq, nk), scale=spec.scale,
        causal=spec.causal, q_start=ch.q.start, n_q=nq, n_k=nk,
    )  # fmt: skip


# ------------------------------------------------------------------------------- certified skipping


def certifies(spec: Spec, alpha: float | Tensor | EntropySchedule) -> bool:
    """Whether a call skips certified blocks: ``spec.certify`` set, α not the number 1 (softmax rows
    certify nothing), no statistics and no softmax-entropy `EntropySchedule` (both read every score: the
    softmax entropy of the whole row; a schedule on the sparsemax entropy is certified), no dropout
    (drawn per dense chunk). The other calls run dense."""
    return (
        spec.certify is not None
        and not spec.stats
        and spec.dropout == 0
        and (_reads_sparsemax(alpha) or not isinstance(alpha, EntropySchedule))
        and not (isinstance(alpha, float) and alpha <= 1.0)
    )


def _pad_keys(k: Tensor, block: int) -> Tensor:
    """``(B, Hkv, N, ·)`` padded with zeros to whole blocks (the padding is hidden when scored)."""
    return torch.nn.functional.pad(k, (0, 0, 0, -k.shape[2] % block))


def _block_keys(ids: Tensor, block: int) -> Tensor:
    """Key positions ``(B, Hkv, n·block)`` of the blocks ``ids`` ``(B, Hkv, n)``."""
    return (ids.unsqueeze(-1) * block + torch.arange(block, device=ids.device)).flatten(-2)


def _gather_keys(k: Tensor, keys: Tensor) -> Tensor:
    """Rows ``keys`` ``(B, Hkv, n)`` of ``(B, Hkv, N, ·)``."""
    return k.gather(2, keys.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1]))


def _block_scores(
    q: Tensor, kp: Tensor, bias: Tensor | None, ch: Chunk, spec: Spec, ids: Tensor, n_k: int
) -> Tensor:
    """Scores ``(b, H, c, n·block)`` of a chunk's queries against the key blocks `ids` ``(b, Hkv, n)`` of
    the `n_k` keys (padded to whole blocks in kp)."""
    nq = q.shape[2]
    keys = _block_keys(ids, spec.certify.block)
    return scores(
        q[ch.b, :, ch.q], _gather_keys(kp[ch.b], keys), _bias_chunk(bias, ch, nq, n_k, all_keys=True),
        scale=spec.scale, causal=spec.causal, q_start=ch.q.start, n_q=nq, n_k=n_k, keys=keys,
    )  # fmt: skip


def _certified_scores(
    q: Tensor,
    kp: Tensor,
    vp: Tensor | None,
    bias: Tensor | None,
    bounds: tuple[Tensor, Tensor],
    ch: Chunk,
    spec: Spec,
    a: float | Tensor,
    n_k: int,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """The scores ``(b, H, c, n·block)`` of every key block the certificate at the chunk's α `a` leaves
    (S first, then the rest), their values ``(b, Hkv, n·block, Dv)`` (None without `vp`), and the block
    ids ``(b, Hkv, n)``."""
    ids_s, s_s, ids = _certified_blocks(q, kp, bias, bounds, ch, spec, a, n_k)
    s = _block_scores(q, kp, bias, ch, spec, ids, n_k)
    ids = torch.cat([ids_s, ids], -1)
    values = None if vp is None else _gather_keys(vp[ch.b], _block_keys(ids, spec.certify.block))
    return torch.cat([s_s, s], -1), values, ids


def _certified_sparsemax_alpha(
    schedule: EntropySchedule,
    q: Tensor,
    kp: Tensor,
    bias: Tensor | None,
    bounds: tuple[Tensor, Tensor],
    ch: Chunk,
    spec: Spec,
    n_k: int,
) -> tuple[Tensor, int]:
    """α ``(b, H, c)`` of a sparsemax-entropy `schedule` for a chunk, from the key blocks the certificate
    leaves at α = 2 (exact: the other keys have sparsemax weight 0), and how many blocks were scored."""
    s, _, ids = _certified_scores(q, kp, None, bias, bounds, ch, spec, 2.0, n_k)
    m = s.amax(-1)
    live = m > -math.inf
    return _sparsemax_alpha(schedule, s.sub_(torch.where(live, m, 0.0).unsqueeze(-1)), live), ids.shape[-1]


def _certified_blocks(
    q: Tensor,
    kp: Tensor,
    bias: Tensor | None,
    bounds: tuple[Tensor, Tensor],
    ch: Chunk,
    spec: Spec,
    a: float | Tensor,
    n_k: int,
    detail: bool = False,
) -> tuple[Tensor, ...]:
    """``(S's block ids, S's scores, the other blocks to score)``: block ids ``(b, Hkv, ·)``, S's scores
    ``(b, H, c, ·)``; a block outside S is scored when some query of the chunk (in some head of its key
    head) may weigh it (`certify.tile_blocks`, which pads the tile with blocks no query needs).

    Bounds of every block (`certify.score_bounds`, plus the bias's block maximum, -inf past a causal
    query's last key), exact scores of S (`certify.subset_blocks`: the sinks, the chunk's diagonal and
    the `top` blocks with the highest bounds), S's threshold by `_probs` at the chunk's α `a` (a number
    or ``(b, H, c)``), then `certify.certified_zero`. With `detail`, also the ``(b, H, c, NB)``
    certified-zero and visible masks.
    """
    cfg = spec.certify
    nq = q.shape[2]
    qc = q[ch.b, :, ch.q]
    bb, h, c, _ = qc.shape
    hkv = kp.shape[1]
    kmin, kmax = bounds[0][ch.b], bounds[1][ch.b]
    nb = kmin.shape[2]
    u = score_bounds(_grouped(qc * spec.scale, hkv), kmin, kmax).view(bb, h, c, nb)
    bc = _bias_chunk(bias, ch, nq, n_k, all_keys=True)
    if bc is not None:
        u = u + block_max(bc, cfg.block).to(u.dtype)
    last = torch.arange(ch.q.start, ch.q.start + c, device=q.device) + (n_k - nq)  # each query's last key
    if spec.causal:
        starts = torch.arange(nb, device=q.device) * cfg.block
        u = u.masked_fill(starts > last.unsqueeze(-1), -math.inf)
    must = torch.zeros(nb, dtype=torch.bool, device=q.device)
    must[: cfg.sink] = True
    first, final = (min(max(i + n_k - nq, 0), n_k - 1) // cfg.block for i in (ch.q.start, ch.q.start + c - 1))
    must[first : final + 1] = True  # the chunk's diagonal blocks
    ids = subset_blocks(u.view(bb, hkv, -1, nb), must, cfg.top)
    s_s = _block_scores(q, kp, bias, ch, spec, ids, n_k)
    m = s_s.amax(-1)
    live = m > -math.inf
    a = a.detach() if isinstance(a, Tensor) else a
    _, _, (t, _) = _probs(s_s - torch.where(live, m, 0.0).unsqueeze(-1), live, a, None)
    am1 = (torch.full_like(m, a) if isinstance(a, float) else a.to(m.dtype)) - 1.0
    zero = certified_zero(u, m, t, am1)
    in_s = torch.zeros(bb, hkv, nb, dtype=torch.bool, device=q.device).scatter_(2, ids, True)
    rest = tile_blocks((~zero).view(bb, hkv, -1, nb).any(2) & ~in_s, in_s)
    return (ids, s_s, rest, zero, u > -math.inf) if detail else (ids, s_s, rest)


def certified_work(
    q: Tensor,
    k: Tensor,
    alpha: float | Tensor | EntropySchedule,
    *,
    causal: bool,
    scale: float,
    certify: Certify,
) -> Tensor:
    """What certified skipping does on one call, per ``(B, H)``, as float64 ``(7, B, H)`` counts:
    visible (query, key block) pairs; of them, certified zero; truly zero (every dense weight 0: the
    most any exact method can skip); visible scores (the dense work); scores computed (S and the tiles
    left, padded to the widest tile of the chunk); block bounds (each ``2·D`` multiply-adds, the
    work of two scores); and certified pairs with a non-zero dense weight (0 when the certificate is sound).

    q ``(B, H, Nq, D)``, k ``(B, Hkv, Nk, D)`` in the compute dtype, α a number > 1, ``(B, H, Nq)`` or an
    `EntropySchedule`. A schedule on the sparsemax entropy counts both certified passes (α = 2 for the
    schedule, then its α: scores and bounds of each); one on the softmax entropy scores every visible
    key before α is known, and α = 1 never certifies (`certifies`), so for those the scores computed are
    the visible ones and no bounds are computed (the certified and truly-zero counts are those at the α
    applied: none certified at α = 1). Runs the certificate of
    `ChunkedEntmaxAttention` and, for the truly-zero count, the dense weights.
    """
    b, h, nq, _ = q.shape
    nk = k.shape[2]
    spec = Spec(None, causal, scale, dropout=0.0, stats=False, tiles=(1, 1), certify=certify)
    bounds = key_bounds(k, certify.block)
    kp = _pad_keys(k, certify.block)
    counts = torch.zeros(7, b, h, dtype=torch.float64)
    sparse_source = _reads_sparsemax(alpha)
    for ch in chunks(b, h, nq, nk, causal, certify.queries):
        s = _chunk_scores(q, k, None, ch, spec)
        m = s.amax(-1)
        live = m > -math.inf
        n_visible = (s > -math.inf).double().sum(-1)  # (b, H, c)
        st = softmax_stats(s, m) if isinstance(alpha, EntropySchedule) and not sparse_source else None
        dense = st is not None or (isinstance(alpha, float) and alpha <= 1.0)  # calls that never certify
        c = s.shape[2]
        if sparse_source:  # the schedule's own certified pass at α = 2: its scores, per query head
            a, n_blocks = _certified_sparsemax_alpha(alpha, q, kp, None, bounds, ch, spec, nk)
            extra = float(n_blocks * certify.block * c)
        else:
            a, extra = _chunk_alpha(alpha, st, ch), 0.0
        ids, _, blocks, zero, visible = _certified_blocks(q, kp, None, bounds, ch, spec, a, nk, detail=True)
        p, _, _ = _probs(s.sub_(torch.where(live, m, 0.0).unsqueeze(-1)), live, a, None)
        pad = -p.shape[-1] % certify.block
        nonzero = torch.nn.functional.pad(p > 0, (0, pad)).unflatten(-1, (-1, certify.block)).any(-1)
        nb_chunk = nonzero.shape[-1]
        vis = visible[..., :nb_chunk]
        if dense:  # softmax, or a schedule that read every score: the dense work, and no bound
            scored, n_bounds = n_visible.sum(-1), 0.0
        else:  # per query head: S and the tiles left (and the schedule's pass), padded to the widest tile
            tile_scores = extra + (blocks.shape[-1] + ids.shape[-1]) * certify.block * c
            scored = torch.full_like(n_visible[..., 0], tile_scores)
            n_bounds = float(c * visible.shape[-1]) * (2 if sparse_source else 1)
        row = torch.stack(
            [
                visible.double().sum((-1, -2)),
                (zero & visible).double().sum((-1, -2)),
                (vis & ~nonzero).double().sum((-1, -2)),
                n_visible.sum(-1),
                scored,
                torch.full_like(n_visible[..., 0], n_bounds),
                (zero[..., :nb_chunk] & nonzero).double().sum((-1, -2)),
            ]
        )
        counts[:, ch.b] += row
    return counts


@dataclass(frozen=True)
class Spec:
    """What `ChunkedEntmaxAttention` needs besides tensors: a number α or a schedule (None for a
    tensor α), the masking and scale, the dropout rate and the seed its chunks derive theirs from, and
    whether to return statistics (with the tile shape of `block_sparsity`), and the options of
    certified block skipping (None: dense)."""

    alpha: float | EntropySchedule | None
    causal: bool
    scale: float
    dropout: float
    stats: bool
    tiles: tuple[int, int]
    seed: int = 0
    certify: Certify | None = None

    def chunk_seed(self, ch: Chunk, n_q: int) -> int:
        return self.seed + ch.b.start * n_q + ch.q.start


@torch.compiler.disable
def chunked_entmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha_tensor: Tensor | None,
    bias: Tensor | None,
    spec: Spec,
    bounds: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`ChunkedEntmaxAttention` (see there), run eagerly inside a ``torch.compile``-d model.

    Its Newton loop gathers the rows still iterating: data-dependent shapes that would break the graph
    at every step and recompile per shape, for no gain over these already one-pass chunk operations.
    """
    return ChunkedEntmaxAttention.apply(q, k, v, alpha_tensor, bias, spec, bounds)

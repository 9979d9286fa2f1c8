"""The online softmax-statistics state, shared by the entropy and attention kernels.

A set of values x (a chunk of logits, a tile of attention scores) is summarised by the state
(max m, Σe, mean μ of x - m under e, centred M2 = Σ e (x - m - μ)²) with e = exp(x - m). Two states merge
by rescaling both to the common max and Chan's update of M2, so no raw second moment E[x²] is ever
formed (no cancellation). From the final state, in nats,
    log Z = m + log Σe,   H = log Σe - μ,   V = M2 / Σe.
-inf entries are masks; a state with no live entry is (-inf, 0, 0, 0).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def shifted_state(x, shift, AXIS: tl.constexpr, MOMENTS: tl.constexpr):
    """(e, Σe, μ, M2) of float32 `x` along AXIS with e = exp(x - shift), 0 at -inf entries.

    μ and M2 (the mean of x - shift and the centred second moment under e) only when MOMENTS, else 0.
    """
    if MOMENTS:
        finite = x > float("-inf")
        z = tl.where(finite, x - tl.expand_dims(shift, AXIS), 0.0)
        e = tl.where(finite, tl.exp(z), 0.0)
        s0 = tl.sum(e, AXIS)
        mu = tl.sum(e * z, AXIS) / tl.where(s0 > 0, s0, 1.0)
        d = tl.where(finite, z - tl.expand_dims(mu, AXIS), 0.0)
        m2 = tl.sum(e * d * d, AXIS)
    else:
        e = tl.exp(x - tl.expand_dims(shift, AXIS))  # exp(-inf) = 0: shift is finite
        s0 = tl.sum(e, AXIS)
        mu = tl.zeros_like(s0)
        m2 = tl.zeros_like(s0)
    return e, s0, mu, m2


@triton.jit
def chunk_state(x, AXIS: tl.constexpr):
    """The state (m, Σe, μ, M2) of float32 `x` along AXIS, relative to its own max."""
    m = tl.max(x, AXIS)
    _, s0, mu, m2 = shifted_state(x, tl.where(m > float("-inf"), m, 0.0), AXIS, True)
    return m, s0, mu, m2


@triton.jit
def merge_state(m, s0, mu, m2, m_c, s0_c, mu_c, m2_c):
    """Merge two states (m, Σe, μ, M2): rescale both to the common max, Chan's update of M2."""
    live = m > float("-inf")
    live_c = m_c > float("-inf")
    m_new = tl.maximum(m, m_c)
    ref = tl.where(m_new > float("-inf"), m_new, 0.0)
    a = tl.where(live, tl.exp(m - ref), 0.0)
    b = tl.where(live_c, tl.exp(m_c - ref), 0.0)
    w_a = s0 * a
    w_b = s0_c * b
    mu_a = mu + (tl.where(live, m, 0.0) - ref)
    mu_b = mu_c + (tl.where(live_c, m_c, 0.0) - ref)
    s0_new = w_a + w_b
    mu_new = (w_a * mu_a + w_b * mu_b) / tl.where(s0_new > 0, s0_new, 1.0)
    m2_new = (
        m2 * a + m2_c * b + w_a * (mu_a - mu_new) * (mu_a - mu_new) + w_b * (mu_b - mu_new) * (mu_b - mu_new)
    )
    return m_new, s0_new, mu_new, m2_new


@triton.jit
def empty_state(ROWS: tl.constexpr):
    """The state of no value, for ROWS rows: (-inf, 0, 0, 0)."""
    zero = tl.zeros((ROWS,), tl.float32)
    return zero + float("-inf"), zero, zero, zero


@triton.jit
def finalize_state(m, s0, mu, m2, live):
    """(log Z, H, V) of a state, nats; 0 in rows that are not `live` (no key, or past the end)."""
    s_safe = tl.where(live & (s0 > 0), s0, 1.0)  # keep log and division quiet where nothing was seen
    log_s = tl.log(s_safe)
    return tl.where(live, m + log_s, 0.0), tl.where(live, log_s - mu, 0.0), tl.where(live, m2 / s_safe, 0.0)

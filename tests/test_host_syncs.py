"""The trusted attention path reads no device value: 0 host syncs per forward and backward.

`CountSyncs` (tests/_syncs.py) counts what makes a GPU's host wait: ``aten._local_scalar_dense``
(``.item()``, ``int(t)``, ``bool(t)``), ``aten.nonzero`` (boolean indexing), ``.tolist()`` and copies to
the host. Every path of `EntropicAttention` that runs on a GPU is counted, forward and backward: α = 1
through SDPA, α = 1 with statistics through the flash kernel, and α-entmax through the block-sparse
kernel (a fixed, per-head and learned α, each schedule shape and the gated schedule, statistics on and
off); then a GPT forward and a Hugging Face forward through the registered adapter.

Without a GPU the Triton kernels run in the interpreter (``TRITON_INTERPRET=1``), unstubbed: the
interpreter moves tensors through their storage and dispatches none of the counted ops (the counter
would see them), so the launches are counted whole, host code and kernel. On a GPU the same tests run
the compiled kernels on CUDA tensors. The PyTorch α-entmax path (the CPU's) keeps its per-iteration
convergence test on purpose and is not counted here, except to show that the counter sees reads.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from _syncs import CountSyncs

from entropic.attention import (
    EntropicAttention,
    EntropySchedule,
    attend,
    check_values,
    collect_attention_stats,
    entmax_attention,
)
from entropic.attention.trusted import AttentionPlan
from entropic.models import GPT
from entropic.models.gpt import AttentionConfig, GPTConfig

pytest.importorskip("triton")

DIM, HEADS, KV_HEADS = 64, 4, 2  # head dim 16, the smallest the kernels take

ALPHAS = {
    "fixed": 1.5,
    "sparsemax": 2.0,
    "per-head": torch.tensor([1.0, 1.3, 1.6, 2.0]),
    "learned": "learned",
    "linear": EntropySchedule(),
    "cosine": EntropySchedule("cosine", low=0.1, high=0.9),
    "sigmoid": EntropySchedule("sigmoid", alpha_min=1.2),
    "gated": EntropySchedule(varentropy_threshold=0.5, fixed_alpha=1.6),
}


def forward_backward(module: torch.nn.Module, x: torch.Tensor, stats: bool) -> tuple[CountSyncs, CountSyncs]:
    """Syncs of one forward and of its backward (with statistics collected when `stats`)."""
    collecting = collect_attention_stats(module) if stats else nullcontext({})
    with collecting as collected, CountSyncs() as fwd:
        out = module(x)
    if stats:
        assert collected, "the sink received no statistics"
    with CountSyncs() as bwd:
        out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return fwd, bwd


@pytest.mark.parametrize("stats", [False, True])
@pytest.mark.parametrize("alpha", list(ALPHAS))
def test_entmax_kernel_path_reads_nothing(device, alpha, stats):
    attn = EntropicAttention(DIM, HEADS, KV_HEADS, alpha=ALPHAS[alpha], impl="triton").to(device)
    x = torch.randn(1, 18, DIM, device=device, requires_grad=True)  # two query blocks of the interpreter
    fwd, bwd = forward_backward(attn, x, stats)
    assert fwd.total == 0, f"forward: {dict(fwd.counts)}"
    assert bwd.total == 0, f"backward: {dict(bwd.counts)}"


@pytest.mark.parametrize(("impl", "stats"), [("auto", False), ("triton", True), ("triton", False)])
def test_softmax_paths_read_nothing(device, impl, stats):
    """α = 1: SDPA without statistics; the flash kernel with them (or when impl='triton')."""
    attn = EntropicAttention(DIM, HEADS, KV_HEADS, alpha=1.0, impl=impl).to(device)
    x = torch.randn(2, 20, DIM, device=device, requires_grad=True)
    fwd, bwd = forward_backward(attn, x, stats)
    assert fwd.total == 0 and bwd.total == 0, (dict(fwd.counts), dict(bwd.counts))


def test_sdpa_with_masks_and_a_cache_reads_nothing(device):
    """A key-padding mask (a left-padded row sees no key at first) and decoding steps with a cache."""
    from entropic.attention import KVCache

    attn = EntropicAttention(DIM, HEADS, KV_HEADS, alpha=1.0).to(device).eval()
    x = torch.randn(2, 6, DIM, device=device)
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool, device=device)
    keep[1, ..., :3] = False
    cache = KVCache()
    with CountSyncs() as syncs:
        out = attn(x, attn_mask=keep, kv_cache=cache)
        for _ in range(3):
            attn(torch.randn(2, 1, DIM, device=device), kv_cache=cache)
    assert syncs.total == 0, dict(syncs.counts)
    assert out[1, :3].eq(out[1, 0]).all()  # rows that see no key: attention output 0, then out_proj


def test_gpt_forward_reads_nothing(device):
    """Softmax (SDPA, with a padding mask too) and an entmax GPT on the kernel, Entropix metrics included."""
    ids = torch.randint(0, 256, (2, 12), device=device)
    softmax = GPT(GPTConfig(n_layer=2, d_model=64)).to(device).eval()
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    entmax = GPT(GPTConfig(n_layer=2, d_model=64, attention=AttentionConfig(kind="entmax"))).to(device).eval()
    for block in entmax.blocks:  # the kernel also on the CPU (the interpreter)
        block.attn.plan = replace(block.attn.plan, impl="triton")
    with CountSyncs() as syncs:
        a = softmax(input_ids=ids)
        b = softmax(input_ids=ids, attention_mask=mask)
        c = entmax(input_ids=ids, use_cache=True)
    assert syncs.total == 0, dict(syncs.counts)
    for out in (a, b, c):
        assert out.attention_metrics is not None and torch.isfinite(out.logits).all()


def test_hf_registered_forward_reads_nothing(make_llama):
    """A tiny, left-padded Llama through the registered adapter at α = 1: SDPA in every layer but the
    last, which records its statistics (the PyTorch softmax path: the mask is materialised) and its
    Entropix metrics; a sink receives every layer's statistics. Counted over the whole forward."""
    pytest.importorskip("transformers", reason="the Hugging Face adapter needs the `hf` extra")
    from entropic.integrations.hf import register

    seen = []
    attention = register("entropic-syncs", alpha=1.0, sink=lambda layer, stats, query: seen.append(layer))
    model = make_llama(vocab_size=97)
    model.set_attn_implementation("entropic-syncs")
    ids = torch.randint(0, 97, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad(), CountSyncs() as syncs:
        model(ids, attention_mask=mask)
    assert syncs.total == 0, dict(syncs.counts)
    assert seen == [0, 1] and attention.last_metrics is not None
    assert attention.last_stats.n_visible[1, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6]


def test_the_counter_sees_reads_and_the_switch_checks_values(device):
    """The public function reads the device (its NaN check); `check_values` makes `attend` read it too."""
    q = torch.randn(1, 2, 8, 16, device=device)
    with CountSyncs() as public:
        entmax_attention(q, q, q, 1.0)
    assert public.total >= 1
    plan = AttentionPlan(1.5, causal=True)
    with CountSyncs() as trusted:
        attend(q, q, q, plan, attn_mask=torch.ones(8, 8, dtype=torch.bool, device=device))
    bad = q.clone()
    bad[0, 1, 3, 2] = float("nan")
    with check_values():
        with CountSyncs() as checked:
            attend(q, q, q, AttentionPlan(1.0))
        with pytest.raises(ValueError, match="attend: q contains NaN or inf"):
            attend(bad, q, q, AttentionPlan(1.0))
    assert checked.total >= 1
    attend(bad, q, q, AttentionPlan(1.0))  # off again: no check
    assert trusted.counts["nonzero"] >= 1  # the PyTorch α-entmax path keeps its convergence test


def test_only_cpu_scalar_reads_are_exempt_and_it_refuses_other_devices():
    from entropic.ops.dispatch import cpu_scalar

    t = torch.tensor([3.0]).sum()
    with CountSyncs() as syncs:
        assert cpu_scalar(t) == 3.0
    assert (syncs.total, syncs.cpu_reads) == (0, 1)
    with CountSyncs() as syncs:
        t.item()
    assert (syncs.total, syncs.cpu_reads) == (1, 0)
    with pytest.raises(ValueError, match="CPU tensors only, got one on meta"):
        cpu_scalar(torch.empty((), device="meta"))

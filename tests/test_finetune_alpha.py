"""experiments.finetune_alpha: its data order, one fine-tune step per arm on a tiny Llama, its figure."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from experiments import finetune_alpha as ft


def test_training_windows_are_a_seeded_draw_shared_by_both_arms():
    tokens = torch.arange(1000)
    a = ft.train_windows(tokens, 16, 3, 5, seed=0)
    assert a.shape == (5, 3, 16)
    assert torch.equal(a, ft.train_windows(tokens, 16, 3, 5, seed=0))
    assert not torch.equal(a, ft.train_windows(tokens, 16, 3, 5, seed=1))
    assert bool((a[..., 1:] - a[..., :-1] == 1).all())  # contiguous windows of the text
    assert int(a.max()) < 1000


def test_only_the_norms_train_besides_the_attention(make_llama):
    model = make_llama(50)
    norms = ft.norm_parameters(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("norm" in n for n in trainable)
    assert len(norms) == len(trainable) == 2 * 2 + 1  # two per layer and the final norm


@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_fine_tune_lowers_the_loss_and_returns_its_state(make_llama, alpha):
    model = make_llama(50, seed=2, initializer_range=0.2)
    tokens = torch.randint(0, 50, (400,), generator=torch.Generator().manual_seed(0))
    batches = ft.train_windows(tokens, 12, 2, 1, seed=0).expand(25, 2, 12)  # one batch, 25 times
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state, losses, seconds = ft.fine_tune(model, alpha, None, batches, 0.05, 1e-2, "test")
    assert len(losses) == 25 and losses[-1] < losses[0] and seconds > 0
    assert state["alpha"].shape == state["scales"].shape == (2, 4)
    if alpha == 1.0:
        assert bool((state["alpha"] == 1.0).all())
    else:
        assert not torch.allclose(state["alpha"], torch.full((2, 4), 1.5))
    assert set(state["norms"]) == {n for n in before if "norm" in n}
    for n, p in model.named_parameters():  # frozen weights did not move
        if "norm" not in n:
            assert torch.equal(p, before[n]), n
    assert not model.training


def test_plot_draws_the_learned_alpha_and_both_curves(tmp_path):
    heads = [{"arm": "alpha learned", "layer": i // 3, "head": i % 3, "alpha": 1 + i / 10} for i in range(6)]
    curves = [{"arm": arm, "step": s, "loss": 3 - math.log1p(s)} for arm in ft.ARMS for s in range(30)]
    path = tmp_path / "finetune.png"
    ft.plot(heads, curves, path)
    assert path.stat().st_size > 1000

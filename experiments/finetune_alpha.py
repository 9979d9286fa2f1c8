"""A learned α on SmolLM2-135M: a short CPU fine-tune of per-head α and score scale, against softmax.

``python -m experiments.finetune_alpha --out results/finetune_alpha.csv``

Two arms start from the same model (SmolLM2-135M, de-quantised from its Q4_1 GGUF) and see the same
training text in the same order (``--steps`` batches of ``--batch`` windows of ``--n`` tokens, drawn with
one seeded generator from the "train" split of the standard-library corpus, `entropic.data.split_of`):

* ``softmax fine-tuned``: softmax attention; the per-head score scale (a temperature) and the RMSNorm
  weights are trained. The control for "it just saw more text".
* ``alpha learned``: α-entmax with one α per (layer, head), α = 1 + sigmoid(z), starting at α = 1.5 with
  the score scales `entropic.calibrate_attention` fits for it on the "val" split; α, the scale and the
  same RMSNorm weights are trained (`entropic.integrations.hf.trainable_attention`).

Everything else in the model is frozen. Adam, learning rate ``--lr`` for the logits of α and scale and
``--lr-norms`` for the norms, linear warm-up over the first 10 steps. Both arms, their starting points
(softmax and calibrated α = 1.5 untrained) and the fine-tuned arms are then evaluated on the "test" split,
windows never trained or calibrated on, at every ``--lengths`` (``--windows`` windows each): mean NLL per
predicted token, ΔNLL against the untrained softmax model with a 95 % bootstrap interval over windows,
the fraction of attention weights exactly 0 and the mean α.

Outputs: ``--out`` (one row per (arm, length)), ``_heads.csv`` (the learned α and scale of every head
for both arms), ``_curve.csv`` (training loss per step) and ``.png`` (α per head and the loss curves).
The trained parameters are kept in ``--work`` (one file per arm) so that a rerun skips the trained arms.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import entropic
from entropic.integrations.hf import calibrate_attention, trainable_attention
from experiments.attention_calibration import run
from experiments.attention_swap import stdlib_tokens
from experiments.paired import cluster_interval
from experiments.results import print_summary, progress_bar, write_csv

COLUMNS = (
    "arm",
    "n",
    "windows",
    "tokens",
    "nll",
    "delta_nll",
    "delta_low",
    "delta_high",
    "vs_softmax_finetuned",
    "vs_low",
    "vs_high",
    "zero_fraction",
    "mean_alpha",
    "steps",
    "train_tokens",
    "train_seconds",
    "device",
    "torch",
    "entropic",
    "timestamp",
)
HEAD_COLUMNS = ("arm", "layer", "head", "alpha", "scale", "alpha_start", "scale_start")
CURVE_COLUMNS = ("arm", "step", "loss")
ARMS = ("softmax fine-tuned", "alpha learned")
START = {"softmax fine-tuned": "softmax", "alpha learned": "alpha=1.5 calibrated (head)"}
WARMUP = 10


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The RMSNorm weights (every parameter whose name contains "norm"); everything else is frozen."""
    norms = []
    for name, p in model.named_parameters():
        p.requires_grad_("norm" in name)
        if "norm" in name:
            norms.append(p)
    return norms


def train_windows(tokens: Tensor, n: int, batch: int, steps: int, seed: int) -> Tensor:
    """``(steps, batch, n)`` windows of `tokens` at start offsets drawn with one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - n, (steps, batch), generator=g)
    return tokens[starts[..., None] + torch.arange(n)]


def fine_tune(
    model: nn.Module,
    alpha: float,
    scales: Tensor | None,
    batches: Tensor,
    lr: float,
    lr_norms: float,
    label: str,
) -> tuple[dict[str, Tensor], list[float], float]:
    """Train α (unless 1), scale and norms on `batches`; return the trained state, losses and seconds."""
    attention = trainable_attention(model, alpha=alpha, score_scale=scales)
    norms = norm_parameters(model)
    opt = torch.optim.Adam(
        [{"params": list(attention.parameters()), "lr": lr}, {"params": norms, "lr": lr_norms}]
    )
    base = [g["lr"] for g in opt.param_groups]
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    bar = progress_bar(len(batches), label)
    for step, ids in enumerate(batches):
        for g, lr0 in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr0 * min(1.0, (step + 1) / WARMUP)
        loss = model(ids, labels=ids).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{label}: the training loss is {float(loss.detach())} at step {step}")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix_str(
            f"loss={np.mean(losses[-20:]):.3f} α={float(attention.alpha().detach().mean()):.3f}"
        )
    bar.close()
    model.eval()
    a, s = attention.frozen()
    state = {
        "alpha": torch.as_tensor(a).expand_as(s).clone(),
        "scales": s,
        "norms": {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n},
    }
    return state, losses, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--n", type=int, default=256, help="training window length")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's rate for the logits of α and scale")
    parser.add_argument("--lr-norms", type=float, default=1e-4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=int, default=256, help="calibration tokens (val split)")
    parser.add_argument("--out", type=Path, default=Path("results/finetune_alpha.csv"))
    parser.add_argument("--work", type=Path, default=Path("runs/finetune_alpha"))
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "windows", "calibration"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.n < 2 or min(args.lengths) < 2:
        parser.error("--n and --lengths must be >= 2")
    if not (args.lr > 0 and args.lr_norms >= 0):
        parser.error("--lr must be > 0 and --lr-norms >= 0")
    from entropic.pretrained import load_pretrained

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tokenizer = load_pretrained(args.model)
    model.eval()
    initial_norms = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n}
    longest = max(args.lengths)
    test = stdlib_tokens(tokenizer, "test", args.windows * longest)
    windows = {n: test[: args.windows * n].view(args.windows, n) for n in args.lengths}
    calibration = stdlib_tokens(tokenizer, "val", args.calibration)[None]
    train_tokens = stdlib_tokens(tokenizer, "train", 4_000_000 // 4)
    batches = train_windows(train_tokens, args.n, args.batch, args.steps, args.seed)
    args.work.mkdir(parents=True, exist_ok=True)

    cal_path = args.work / "calibration_alpha1.5.pt"
    if cal_path.exists():
        scales = torch.load(cal_path, weights_only=True)
    else:
        scales = calibrate_attention(model, calibration, 1.5, granularity="head").scales
        torch.save(scales, cal_path)
    starts = {"softmax fine-tuned": (1.0, None), "alpha learned": (1.5, scales)}
    states, curves = {}, []
    for arm in ARMS:
        path = args.work / f"{arm.replace(' ', '_')}_{args.steps}x{args.batch}x{args.n}_seed{args.seed}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
        else:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "norm" in n:
                        p.copy_(initial_norms[n])
            alpha, start_scales = starts[arm]
            state, losses, seconds = fine_tune(
                model, alpha, start_scales, batches, args.lr, args.lr_norms, f"fine-tune {arm}"
            )
            saved = {**state, "losses": torch.tensor(losses), "seconds": torch.tensor(seconds)}
            torch.save(saved, path)
        states[arm] = saved
        curves += [{"arm": arm, "step": i, "loss": float(v)} for i, v in enumerate(saved["losses"])]

    def evaluate(alpha: float | Tensor, scales_: Tensor | None, norms: dict[str, Tensor]) -> dict[int, dict]:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.copy_(norms[n])
        out = {}
        for n, w in windows.items():
            out[n] = run(model, alpha, w, scales_)
        return out

    results = {
        "softmax": evaluate(1.0, None, initial_norms),
        START["alpha learned"]: evaluate(1.5, scales, initial_norms),
    }
    for arm in ARMS:
        s = states[arm]
        alpha = 1.0 if arm == "softmax fine-tuned" else s["alpha"]
        results[arm] = evaluate(alpha, s["scales"], s["norms"])

    stamp = {
        "device": f"cpu ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "entropic": entropic.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    rows = []
    for arm, by_n in results.items():
        trained = arm in states
        for n, r in by_n.items():
            per = np.asarray(r["window_nll"])[:, None]
            base = np.asarray(results["softmax"][n]["window_nll"])[:, None]
            ft = np.asarray(results["softmax fine-tuned"][n]["window_nll"])[:, None]
            d = cluster_interval(per, base)
            v = cluster_interval(per, ft)
            rows.append(
                {
                    "arm": arm,
                    "n": n,
                    "windows": args.windows,
                    "tokens": r["tokens"],
                    "nll": r["nll"],
                    "delta_nll": d.difference,
                    "delta_low": d.bootstrap_low,
                    "delta_high": d.bootstrap_high,
                    "vs_softmax_finetuned": v.difference,
                    "vs_low": v.bootstrap_low,
                    "vs_high": v.bootstrap_high,
                    "zero_fraction": r["zero_fraction"],
                    "mean_alpha": r["mean_alpha"],
                    "steps": args.steps if trained else 0,
                    "train_tokens": args.steps * args.batch * args.n if trained else 0,
                    "train_seconds": float(states[arm]["seconds"]) if trained else 0.0,
                    **stamp,
                }
            )
    heads = []
    for arm in ARMS:
        s = states[arm]
        a0, s0 = starts[arm]
        s0 = torch.ones_like(s["scales"]) if s0 is None else s0
        for layer in range(s["alpha"].shape[0]):
            for head in range(s["alpha"].shape[1]):
                heads.append(
                    {
                        "arm": arm,
                        "layer": layer,
                        "head": head,
                        "alpha": float(s["alpha"][layer, head]),
                        "scale": float(s["scales"][layer, head]),
                        "alpha_start": a0,
                        "scale_start": float(s0[layer, head]),
                    }
                )
    module = "experiments.finetune_alpha"
    write_csv(args.out, rows, COLUMNS, module, argv)
    write_csv(args.out.with_name(args.out.stem + "_heads.csv"), heads, HEAD_COLUMNS, module, argv)
    write_csv(args.out.with_name(args.out.stem + "_curve.csv"), curves, CURVE_COLUMNS, module, argv)
    plot(heads, curves, args.out.with_suffix(".png"))
    for r in rows:
        print(
            f"{r['arm']:>28} n={r['n']:<5} dNLL={r['delta_nll']:+.4f} [{r['delta_low']:+.4f}, "
            f"{r['delta_high']:+.4f}] vs ft-softmax={r['vs_softmax_finetuned']:+.4f} "
            f"zero={r['zero_fraction']:.3f} alpha={r['mean_alpha']:.3f}"
        )
    learned = torch.tensor([h["alpha"] for h in heads if h["arm"] == "alpha learned"])
    print_summary(
        "finetune_alpha",
        f"learned α mean {float(learned.mean()):.3f} (range {float(learned.min()):.3f}-"
        f"{float(learned.max()):.3f})",
        started=started,
        out=args.out,
    )
    return rows


def plot(heads: list[dict[str, Any]], curves: list[dict[str, Any]], path: Path) -> None:
    """Learned α per (layer, head) and the training loss of both arms (a running mean over 20 steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learned = [h for h in heads if h["arm"] == "alpha learned"]
    n_layers = max(h["layer"] for h in learned) + 1
    n_heads = max(h["head"] for h in learned) + 1
    grid = np.full((n_layers, n_heads), math.nan)
    for h in learned:
        grid[h["layer"], h["head"]] = h["alpha"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.5, 3.0), gridspec_kw={"width_ratios": [1, 1.6]})
    im = ax0.imshow(grid, aspect="auto", cmap="viridis", vmin=1.0, vmax=2.0, origin="lower")
    ax0.set_xlabel("head", fontsize=8)
    ax0.set_ylabel("layer", fontsize=8)
    ax0.set_title("learned α", fontsize=8)
    ax0.tick_params(labelsize=7)
    bar = fig.colorbar(im, ax=ax0)
    bar.ax.tick_params(labelsize=7)
    for arm in ARMS:
        loss = np.array([c["loss"] for c in curves if c["arm"] == arm])
        k = min(20, len(loss))
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(np.arange(k - 1, len(loss)), smooth, label=arm)
    ax1.set_xlabel("step", fontsize=8)
    ax1.set_ylabel("training NLL (nats/token)", fontsize=8)
    ax1.tick_params(labelsize=7)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()

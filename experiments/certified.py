"""How much score work certified block skipping saves on SmolLM2-135M, against the most an exact method could.

``python -m experiments.certified [--lengths 1024 2048 4096] [--layers 0 7 15 22 29] [--block 64]``

For every length N: SmolLM2-135M (``entropic.pretrained``) with its attention swapped for α-entmax at
α = 1.5 (`entropic.integrations.hf.register`) reads the first N tokens of the held-out files of the
standard-library corpus (`entropic.data.stdlib_files`, split "test"; Python source the model may have
seen in pre-training); the queries and keys (after rotary) of the chosen layers are captured from that
forward. Then, per layer and head, `entropic.ops.entmax_attention.torch.certified_work` counts

* ``certified``: the fraction of visible (query, key block) pairs certified zero;
* ``truly_zero``: the fraction whose dense α-entmax weights are all zero (the best any exact method can skip);
* ``work``: the score work done (S, the tiles left, and the block bounds at two scores each) over the
  dense causal score count.

The same on random q, k (standard normal, the model's shapes) is the control. Rows go to ``--out``
(CSV, one per (source, N, layer, head)); a run that finds its rows there skips them (resumable). The
fit of the summed work ``∝ N^k`` (95% interval, `experiments.fit.power_law_fit`) goes to the same name
with ``_fit`` appended when three or more lengths were run. The entropy schedule is not measured here:
its α needs the softmax entropy of every visible key, so it scores every key whatever is certified.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import torch

from entropic.attention import Certify
from entropic.data import split_of, stdlib_files
from entropic.integrations._hf_attention import EntropicHFAttention
from entropic.ops.entmax_attention.torch import certified_work
from experiments.fit import power_law_fit
from experiments.results import print_summary, progress_bar

COLUMNS = ("source", "n", "layer", "head", "alpha", "block", "certified", "truly_zero", "work", "pairs")
NAME = "entropic_certified_capture"


class _Capture(EntropicHFAttention):
    """The registered attention, recording each chosen layer's (q, k, v) on its way through."""

    def __init__(self, alpha: float, layers: set[int]) -> None:
        super().__init__(alpha, record_stats=False)
        self.layers, self.captured = layers, {}

    def __call__(self, module, query, key, value, attention_mask, *args: Any, **kwargs: Any):
        layer = getattr(module, "layer_idx", None)
        if layer in self.layers:
            self.captured[layer] = (query.detach(), key.detach(), value.detach())
        return super().__call__(module, query, key, value, attention_mask, *args, **kwargs)


def text_ids(tokenizer: Any, n: int) -> torch.Tensor:
    """The first n tokens of the held-out ("test") standard-library files, ``(1, n)``."""
    root, files = stdlib_files()
    ids: list[int] = []
    for path in files:
        if split_of(str(path.relative_to(root))) != "test":
            continue
        ids += tokenizer(path.read_text(errors="replace"))["input_ids"]
        if len(ids) >= n:
            return torch.tensor(ids[:n]).unsqueeze(0)
    raise ValueError(f"the held-out standard library holds {len(ids)} tokens, fewer than {n}")


def capture(n: int, layers: list[int], alpha: float = 1.5) -> dict[int, tuple[torch.Tensor, ...]]:
    """``{layer: (q, k, v)}`` ``(1, H, n, D)``, ``(1, Hkv, n, D)`` of SmolLM2-135M at α on n tokens."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from entropic.integrations.hf import entropic_attention_mask
    from entropic.pretrained import load_pretrained

    hook = _Capture(alpha, set(layers))
    AttentionInterface.register(NAME, hook)
    AttentionMaskInterface.register(NAME, entropic_attention_mask)
    model, tokenizer = load_pretrained("smollm2-135m", attn_implementation=NAME)
    with torch.no_grad():
        model(input_ids=text_ids(tokenizer, n))
    return hook.captured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 7, 15, 22, 29])
    parser.add_argument("--alpha", type=float, default=1.5)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--out", default="results/certified.csv")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with out.open() as f:
            done = {(r["source"], int(r["n"]), int(r["block"])) for r in csv.DictReader(f)}
    certify = Certify(block=args.block, queries=args.queries)
    todo = [(s, n) for n in args.lengths for s in ("smollm2", "random") if (s, n, args.block) not in done]
    bar = progress_bar(len(todo) * len(args.layers), "certified")
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if not done:
            writer.writeheader()
        for source, n in todo:
            layers = capture(n, args.layers, args.alpha) if source == "smollm2" else {}
            for layer in args.layers:
                if source == "smollm2":
                    q, k, _ = layers[layer]
                else:
                    q, k = torch.randn(1, 9, n, 64), torch.randn(1, 3, n, 64)
                c = certified_work(q, k, args.alpha, causal=True, scale=q.shape[-1] ** -0.5, certify=certify)
                pairs, cert, truly, scores, scored, bounds, unsound = c[:, 0]
                assert unsound.sum() == 0, "a certified block holds a non-zero weight"
                for head in range(q.shape[1]):
                    writer.writerow({
                        "source": source, "n": n, "layer": layer, "head": head, "alpha": args.alpha,
                        "block": args.block, "certified": f"{cert[head] / pairs[head]:.4f}",
                        "truly_zero": f"{truly[head] / pairs[head]:.4f}",
                        "work": f"{(scored[head] + 2 * bounds[head]) / scores[head]:.4f}",
                        "pairs": int(pairs[head]),
                    })  # fmt: skip
                f.flush()
                bar.set_postfix_str(f"{source} N={n} L{layer} cert={float(cert.sum() / pairs.sum()):.2f}")
                bar.update()
    bar.close()
    summary = _fit(out, args.block)
    print_summary("certified", summary, started=started, out=out)


def _fit(out: Path, block: int) -> str:
    """Work summed over layers and heads per (source, N) (as dense-score counts), fitted ∝ N^k."""
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["block"]) == block]
    lines = []
    fits = []
    for source in ("smollm2", "random"):
        ns = sorted({int(r["n"]) for r in rows if r["source"] == source})
        work = []
        for n in ns:
            sel = [r for r in rows if r["source"] == source and int(r["n"]) == n]
            work.append(sum(float(r["work"]) for r in sel) / len(sel) * n * (n + 1) / 2)
            cert = sum(float(r["certified"]) for r in sel) / len(sel)
            truly = sum(float(r["truly_zero"]) for r in sel) / len(sel)
            density = work[-1] / (n * (n + 1) / 2)
            lines.append(f"{source} N={n}: certified {cert:.3f}, truly zero {truly:.3f}, work {density:.3f}")
        if len(ns) >= 3:
            fit = power_law_fit(ns, work)
            fits.append({"source": source, "block": block, "k": fit.k, "k_low": fit.k_low,
                         "k_high": fit.k_high, "r2": fit.r2, "lengths": " ".join(map(str, ns))})  # fmt: skip
            lines.append(f"{source}: work ∝ N^{fit.k:.2f} [{fit.k_low:.2f}, {fit.k_high:.2f}]")
    if fits:
        with out.with_name(out.stem + "_fit.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, list(fits[0]))
            writer.writeheader()
            writer.writerows(fits)
    print("\n".join(lines))
    return "; ".join(lines[-2:]) if lines else "nothing run"


if __name__ == "__main__":
    main()

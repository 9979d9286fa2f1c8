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

With ``--calibrated`` the source is ``smollm2-calibrated``: the model runs α-entmax with the per-head score
scales `entropic.calibrate_attention` fits at α on ``--calibration`` tokens of the standard library's "val"
split, and each head's queries are multiplied by its scale before counting (the scores α-entmax then sees).
Calibrated scales are below 1 (flatter scores, fewer zeros), so this is the setting that keeps the model's
quality (results/README.md, the calibrated frontier).

The same on random q, k (standard normal, the model's shapes, seeded per (N, layer)) is the control. Rows
go to ``--out`` (CSV, one per (source, N, layer, head), under the commands that wrote it); a run that finds
its rows there skips them (resumable). The fit of the summed work ``∝ N^k`` (95% interval,
`experiments.fit.power_law_fit`) goes to the same name with ``_fit`` appended, under the same command line,
when three or more lengths were run.

``--tiny VARIANT ...`` measures tiny trained byte models instead (``configs/attention/<VARIANT>.yaml``,
``configs/model/tiny.yaml``): one model per variant, trained at ``--train-n`` for ``--steps`` steps of
``--tokens-per-step`` tokens (`experiments.trained_lengths.train_at`; runs under ``--runs``, resumed or
reused), then read on the first N bytes of the standard library's held-out files, with q, k (after
rotary) and the α of each layer captured from that forward; lengths past ``--train-n`` extrapolate.
Rows (``results/certified_tiny.csv`` by default) name the model in ``source`` by
`experiments.variants.file_variant` of its file (``entmax`` -> ``entmax1.5``, ``scheduled_absolute`` ->
``scheduled-absolute-linear``), and add the mean α applied per head, the model's bits per byte
on the window and its last validation bits per byte in training (``train_val_bpb``), and
``certified_exact_tau``: the pairs the same block bounds would certify with the row's exact threshold τ
instead of τ_S (`exact_tau_certified`), the most a better subset S could give with these bounds; the gap
from there to ``truly_zero`` is the bound's. Each variant's work counts what it costs: softmax never
certifies, and the schedule on the softmax entropy (``scheduled_absolute``) needs every score for its α, so
theirs is the dense count (the schedule's certified and truly-zero fractions are those at the α it gives);
for the schedule on the sparsemax entropy (``scheduled_sparsemax``) both certified passes are counted.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from entropic.attention import Certify
from entropic.data import split_of, stdlib_files
from entropic.integrations._hf_attention import EntropicHFAttention
from entropic.ops.entmax_attention.torch import certified_work
from experiments.fit import power_law_fit
from experiments.results import RowFile, print_summary, progress_bar, read_csv, write_csv

COLUMNS = ("source", "n", "layer", "head", "alpha", "block", "certified", "truly_zero", "work", "pairs")
TINY_COLUMNS = ("source", "train_n", "train_steps", "n", "layer", "head", "alpha", "block", "certified",
                "certified_exact_tau", "truly_zero", "work", "pairs", "bits_per_byte",
                "train_val_bpb")  # fmt: skip
NAME = "entropic_certified_capture"


class _Capture(EntropicHFAttention):
    """The registered attention, recording each chosen layer's (q, k, v) on its way through."""

    def __init__(self, alpha: float, layers: set[int], score_scale: torch.Tensor | None = None) -> None:
        super().__init__(alpha, record_stats=False, score_scale=score_scale)
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


def load(alpha: float, calibrated: bool, calibration: int = 1024, rows: int = 64) -> tuple[Any, Any, Any]:
    """SmolLM2-135M, its tokenizer, and its per-head ``(L, H)`` score scales at `alpha` (None unless
    `calibrated`: fitted on `calibration` tokens of the standard library's "val" split)."""
    from entropic.integrations.hf import calibrate_attention
    from entropic.pretrained import load_pretrained
    from experiments.attention_swap import stdlib_tokens

    model, tokenizer = load_pretrained("smollm2-135m")
    model.eval()
    if not calibrated:
        return model, tokenizer, None
    ids = stdlib_tokens(tokenizer, "val", calibration)[None]
    return model, tokenizer, calibrate_attention(model, ids, alpha, granularity="head", rows=rows).scales


def capture(
    model: Any, tokenizer: Any, n: int, layers: list[int], alpha: float = 1.5, scales: Any = None
) -> dict[int, tuple[torch.Tensor, ...]]:
    """``{layer: (q, k, v)}`` ``(1, H, n, D)``, ``(1, Hkv, n, D)`` of `model` at α (with the ``(L, H)`` score
    `scales`, queries multiplied by them) on the first n held-out tokens."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from entropic.integrations.hf import entropic_attention_mask

    hook = _Capture(alpha, set(layers), scales)
    AttentionInterface.register(NAME, hook)
    AttentionMaskInterface.register(NAME, entropic_attention_mask)
    model.set_attn_implementation(NAME)
    with torch.no_grad():
        model(input_ids=text_ids(tokenizer, n))
    if scales is None:
        return hook.captured
    return {
        layer: (q * scales[layer].to(q.dtype).view(1, -1, 1, 1), k, v)
        for layer, (q, k, v) in hook.captured.items()
    }


def stdlib_bytes(n: int) -> torch.Tensor:
    """The first n bytes of the standard library's test split as the byte models train on it
    (`entropic.data.ByteCorpus.from_stdlib`), ``(1, n)`` (a byte model's `text_ids`)."""
    from entropic.data import ByteCorpus

    data = ByteCorpus.from_stdlib().splits["test"]
    if len(data) < n:
        raise ValueError(f"the standard library's test split holds {len(data)} bytes, fewer than {n}")
    return torch.from_numpy(data[:n].astype("int64")).unsqueeze(0)


def capture_gpt(model: Any, ids: torch.Tensor) -> tuple[list[tuple[Any, ...]], float]:
    """Per layer ``(q, k, α, scale)`` of an `entropic.models.GPT` forward on `ids` ``(1, n)`` (q, k after
    rotary; α as the layer passes it: a number, a schedule or a per-head tensor), and the model's bits
    per byte predicting ``ids[1:]``."""
    import entropic.attention.module as module

    calls: list[tuple[Any, ...]] = []
    attend = module.attend

    def record(q, k, v, plan, *, alpha=None, **kwargs):
        calls.append((q.detach(), k.detach(), plan.alpha if plan.alpha is not None else alpha, plan.scale))
        return attend(q, k, v, plan, alpha=alpha, **kwargs)

    module.attend = record
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, output_attention_metrics=False).logits
    finally:
        module.attend = attend
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:])
    return calls, float(nll) / math.log(2)


def exact_tau_certified(
    q: torch.Tensor, k: torch.Tensor, alpha: torch.Tensor, scale: float, block: int
) -> torch.Tensor:
    """Per head ``(H,)``: the fraction of causally visible (query, key block) pairs whose per-channel bound
    (`certify.score_bounds`) certifies zero against the row's exact threshold, ``τ = (α-1) m - p_max^{α-1}``
    (m the row max, p_max its largest weight), with `certify.certified_zero`'s margin. q ``(1, H, N, D)``,
    k ``(1, Hkv, N, D)``, α ``(1, H, N)`` the α applied per query."""
    from entropic.ops.entmax_attention.certify import certified_zero, key_bounds, score_bounds
    from entropic.ops.entmax_attention.rows import entmax_rows
    from entropic.ops.entmax_attention.torch import scores

    _, h, n, _ = q.shape
    kmin, kmax = key_bounds(k, block)
    hits, pairs = torch.zeros(h, dtype=torch.float64), torch.zeros(h, dtype=torch.float64)
    for start in range(0, n, 256):
        rows = torch.arange(start, min(start + 256, n))
        s = scores(q[:, :, rows], k, None, scale=scale, causal=True, q_start=start, n_q=n, n_k=n)
        a = alpha[:, :, rows].to(s.dtype)
        p = entmax_rows(s, a)
        t = torch.where(a > 1, p.amax(-1).pow(a - 1.0), 1.0)
        grouped = (q[:, :, rows] * scale).reshape(q.shape[0], k.shape[1], -1, q.shape[-1])  # by key head
        u = score_bounds(grouped, kmin, kmax).view(*s.shape[:3], -1)
        zero = certified_zero(u, s.amax(-1), t, a - 1.0)
        visible = torch.arange(kmin.shape[2]) * block <= rows.unsqueeze(-1)  # (c, NB)
        hits += (zero & visible).double().sum((0, 2, 3))
        pairs += visible.double().sum() * torch.ones(h, dtype=torch.float64)
    return hits / pairs


def run_tiny(args: argparse.Namespace, command: str, started: float) -> None:
    """The ``--tiny`` measurement (module docstring)."""
    from entropic.attention import AttentionPlan, attend
    from entropic.models import GPT
    from experiments.trained_lengths import train_at
    from experiments.variants import file_variant

    out = Path(args.out)
    store = RowFile(out, TINY_COLUMNS, command, every_command=True)
    done = {(r["source"], int(r["n"]), int(r["block"])) for r in store.rows}  # sources: variant names
    certify = Certify(block=args.block, queries=args.queries)
    names = {v: file_variant(v) for v in args.tiny}  # configs/attention/<v>.yaml -> the rows' source
    todo = [(v, n) for v in args.tiny for n in args.lengths if (names[v], n, args.block) not in done]
    bar = progress_bar(len(todo), "certified (tiny)")
    for variant, n in todo:
        bar.set_postfix_str(f"{variant} N={n}: training at {args.train_n}")
        torch.manual_seed(0)
        run = train_at(variant, args.train_n, 0, args.steps, args.tokens_per_step, Path(args.runs))
        model = GPT.from_checkpoint(run / "checkpoints" / "last.pt").eval()
        calls, bpb = capture_gpt(model, stdlib_bytes(n))
        val = [r["val_bpb"] for r in read_csv(run / "metrics.csv") if r.get("val_bpb")][-1]
        rows = []
        for layer, (q, k, alpha, scale) in enumerate(calls):
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            if isinstance(alpha, torch.Tensor) and alpha.dim() == 1:  # learned or per-head α
                alpha = alpha.view(1, -1, 1).expand(q.shape[0], -1, q.shape[2]).contiguous()
            plan = AttentionPlan(alpha if not isinstance(alpha, torch.Tensor) else None, causal=True,
                                 scale=scale, impl="torch", stats=True)  # fmt: skip
            _, stats = attend(q, k, k, plan, alpha=alpha if isinstance(alpha, torch.Tensor) else None)
            c = certified_work(q, k, alpha, causal=True, scale=scale, certify=certify)
            pairs, cert, truly, scores, scored, bounds, unsound = c[:, 0]
            assert unsound.sum() == 0, "a certified block holds a non-zero weight"
            exact = exact_tau_certified(q, k, stats.alpha, scale, args.block)
            rows += [{
                "source": names[variant], "train_n": args.train_n, "train_steps": args.steps, "n": n,
                "layer": layer, "head": head, "alpha": f"{float(stats.alpha[0, head].mean()):.4f}",
                "block": args.block, "certified": f"{cert[head] / pairs[head]:.4f}",
                "certified_exact_tau": f"{exact[head]:.4f}", "truly_zero": f"{truly[head] / pairs[head]:.4f}",
                "work": f"{(scored[head] + 2 * bounds[head]) / scores[head]:.4f}",
                "pairs": int(pairs[head]), "bits_per_byte": f"{bpb:.4f}", "train_val_bpb": val,
            } for head in range(q.shape[1])]  # fmt: skip
        store.add(rows)
        mean = sum(float(r["certified"]) for r in rows) / len(rows)
        bar.set_postfix_str(f"{variant} N={n} cert={mean:.2f} bpb={bpb:.3f}")
        bar.update()
    bar.close()
    summary = _fit(store.rows, out, args.block, store.commands)
    print_summary("certified (tiny)", summary, started=started, out=out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 7, 15, 22, 29])
    parser.add_argument("--alpha", type=float, default=1.5)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--calibrated", action="store_true", help="per-head score scales (module docstring)")
    parser.add_argument("--calibration", type=int, default=1024, help="calibration tokens (stdlib val split)")
    parser.add_argument("--out", default=None, help="results/certified.csv (results/certified_tiny.csv)")
    tiny = parser.add_argument_group("tiny trained models (module docstring)")
    tiny.add_argument("--tiny", nargs="+", metavar="VARIANT", help="configs/attention names, e.g. entmax")
    tiny.add_argument("--train-n", type=int, default=512, help="training length")
    tiny.add_argument("--steps", type=int, default=1000)
    tiny.add_argument("--tokens-per-step", type=int, default=8192)
    tiny.add_argument("--runs", default="outputs/certified_tiny", help="training runs (resumed)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    command = "python -m experiments.certified " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.tiny:
        args.out = args.out or "results/certified_tiny.csv"
        return run_tiny(args, command, started)
    out = Path(args.out or "results/certified.csv")
    store = RowFile(out, COLUMNS, command, every_command=True)
    done = {(r["source"], int(r["n"]), int(r["block"])) for r in store.rows}
    certify = Certify(block=args.block, queries=args.queries)
    model_source = "smollm2-calibrated" if args.calibrated else "smollm2"
    todo = [(s, n) for n in args.lengths for s in (model_source, "random") if (s, n, args.block) not in done]
    loaded: tuple[Any, Any, Any] | None = None
    bar = progress_bar(len(todo) * len(args.layers), "certified")
    for source, n in todo:
        layers = {}
        if source == model_source:
            loaded = loaded or load(args.alpha, args.calibrated, args.calibration)
            layers = capture(*loaded[:2], n, args.layers, args.alpha, loaded[2])
        for layer in args.layers:
            if source == model_source:
                q, k, _ = layers[layer]
            else:
                gen = torch.Generator().manual_seed(1000 * n + layer)  # the same draw in any run
                q, k = torch.randn(1, 9, n, 64, generator=gen), torch.randn(1, 3, n, 64, generator=gen)
            c = certified_work(q, k, args.alpha, causal=True, scale=q.shape[-1] ** -0.5, certify=certify)
            pairs, cert, truly, scores, scored, bounds, unsound = c[:, 0]
            assert unsound.sum() == 0, "a certified block holds a non-zero weight"
            store.add([{
                "source": source, "n": n, "layer": layer, "head": head, "alpha": args.alpha,
                "block": args.block, "certified": f"{cert[head] / pairs[head]:.4f}",
                "truly_zero": f"{truly[head] / pairs[head]:.4f}",
                "work": f"{(scored[head] + 2 * bounds[head]) / scores[head]:.4f}",
                "pairs": int(pairs[head]),
            } for head in range(q.shape[1])])  # fmt: skip
            bar.set_postfix_str(f"{source} N={n} L{layer} cert={float(cert.sum() / pairs.sum()):.2f}")
            bar.update()
    bar.close()
    summary = _fit(store.rows, out, args.block, store.commands)
    print_summary("certified", summary, started=started, out=out)


def _fit(rows: list[dict[str, Any]], out: Path, block: int, command: str) -> str:
    """Work summed over layers and heads per (source, N) of `rows` (as dense-score counts), fitted ∝ N^k;
    written beside `out` with ``_fit`` appended, under the same `command` line."""
    rows = [r for r in rows if int(r["block"]) == block]
    lines = []
    fits = []
    for source in dict.fromkeys(r["source"] for r in rows):
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
        write_csv(out.with_name(out.stem + "_fit.csv"), fits, list(fits[0]), command=command)
    print("\n".join(lines))
    return "; ".join(lines[-2:]) if lines else "nothing run"


if __name__ == "__main__":
    main()

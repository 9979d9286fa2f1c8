"""Train a byte-level GPT: ``python -m experiments.train [group=variant ...] [key=value ...]``.

AdamW with linear warmup and cosine decay, gradient clipping, bf16 autocast on CUDA, optional
``torch.compile``, evaluation in bits per byte, a progress bar (attention variant, steps, ETA, train loss,
validation bits per byte) and a one-line summary at the end. Each run folder holds

* ``config.yaml``: the resolved configuration;
* ``metrics.csv``: one row per evaluation, columns `metric_columns` (step, tokens, learning rate, train
  loss, validation loss and bits per byte, tokens/s, and per layer the mean softmax attention entropy,
  the sparsity of the applied attention, and the mean α);
* ``checkpoints/last.pt``: model, config, optimizer, schedule, step and random state, written
  atomically; ``resume=<run folder>`` continues a killed run from it, bit for bit on CPU.

``record=<csv>`` keeps the finished runs of a study in one table (`experiments.runs.record_columns`): a run
that reaches ``max_steps`` scores the *test* split on the validation's number of fixed windows and adds its
row (variant, seed, budget, validation and test bits per byte, attention statistics), and a job whose
variant and seed are already there is skipped without training (an error if that row was trained with
another budget). Committed with the results, the table lets a sweep go on on another machine.
``record_scores`` (a hydra ``_target_`` with ``_partial_: true``, called with ``model`` and ``data``) adds a
study's own scores of the finished model to its row (`experiments.recall.record_scores`: accuracy at
several sizes of a synthetic task), so that the record alone holds the study.

Under ``torchrun --nproc_per_node=N`` the model is wrapped in DDP (gloo on CPU, nccl on CUDA); every
rank draws its own batches, rank 0 evaluates, logs and checkpoints. See ``configs/train.yaml``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hydra
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from entropic._validation import check_param
from entropic.attention import collect_attention_stats
from entropic.data import Batch
from entropic.metrics import bits_per_byte
from entropic.models import GPT, atomic_save, load_checkpoint
from experiments.results import print_summary, progress_bar
from experiments.runs import record_run, recorded
from experiments.variants import variant_name

__all__ = ["RunSummary", "TrainerConfig", "cosine_lr", "data_generator", "metric_columns", "train"]

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

# Fixed seed of the validation windows: every evaluation of every run scores the same bytes.
EVAL_SEED = 1234


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """``configs/train.yaml`` composed with `overrides`, as ``python -m experiments.train`` would.

    Works both outside hydra and inside a hydra job (a task of `experiments.task` run from the command line,
    whose hydra is already initialised on these configs and may not be initialised again).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


@dataclass
class TrainerConfig:
    """Optimisation and bookkeeping of a run (``configs/trainer/*.yaml``).

    Attributes
    ----------
    max_steps, batch_size : int
        Optimizer steps, and sequences per step and per rank.
    lr, min_lr_ratio, warmup_steps : float, float, int
        Peak learning rate, the final rate as a fraction of it, and linear-warmup steps (`cosine_lr`).
    weight_decay : float
        AdamW decay of the matrices (norms, embeddings' gains and α logits are not decayed).
    betas : tuple of float
        AdamW moments.
    grad_clip : float
        Max global gradient norm; 0 turns clipping off.
    eval_every, eval_batches : int
        Evaluate every `eval_every` steps (and at the last) on `eval_batches` validation batches.
    ckpt_every : int
        Write ``checkpoints/last.pt`` every `ckpt_every` steps (and at the last).
    device : str
        "auto" (CUDA when available), "cpu", "cuda", ...
    precision : {"auto", "bf16", "fp32"}
        "auto" is bf16 autocast on CUDA and fp32 elsewhere; "bf16" autocasts on any device (CPU included).
    compile : bool
        ``torch.compile`` the training forward.
    progress : bool
        Show a progress bar.
    threads : int, optional
        CPU threads of torch (``torch.set_num_threads``); torch's default when None.
    """

    max_steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 40
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    ckpt_every: int = 100
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    progress: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "eval_batches", "ckpt_every"):
            check_param(getattr(self, name), name, 1, math.inf, integer=True)
        check_param(self.warmup_steps, "warmup_steps", 0, math.inf, integer=True)
        check_param(self.lr, "lr", 0.0, math.inf, low_open=True)
        check_param(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
        check_param(self.weight_decay, "weight_decay", 0.0, math.inf)
        check_param(self.grad_clip, "grad_clip", 0.0, math.inf)
        if self.threads is not None:
            check_param(self.threads, "threads", 1, math.inf, integer=True)
        self.betas = tuple(self.betas)
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")


@dataclass(frozen=True)
class RunSummary:
    """The last evaluation of a run and where its files are."""

    output_dir: Path
    step: int
    val_bpb: float
    train_loss: float
    tokens_per_s: float
    attn_sparsity: float
    attn_alpha: float
    n_params: int


def cosine_lr(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to `min_lr_ratio` at `max_steps`.

    ``m(t) = (t + 1) / W`` for ``t < W``; then with ``u = (t - W) / (T - W)`` clipped to [0, 1],
    ``m(t) = r + (1 - r)(1 + cos πu) / 2``.

    Examples
    --------
    >>> [round(cosine_lr(t, warmup_steps=2, max_steps=6, min_lr_ratio=0.1), 3) for t in range(7)]
    [0.5, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    u = min(max((step - warmup_steps) / max(max_steps - warmup_steps, 1), 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * u))


def metric_columns(n_layer: int) -> list[str]:
    """The columns of ``metrics.csv`` for a model of `n_layer` layers."""
    per_layer = [f"attn_{name}_L{i}" for i in range(n_layer) for name in ("entropy", "sparsity", "alpha")]
    return [
        "step",
        "tokens",
        "lr",
        "train_loss",
        "val_loss",
        "val_bpb",
        "tokens_per_s",
        "attn_entropy",
        "attn_sparsity",
        "attn_alpha",
        *per_layer,
    ]


def data_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The generator of a run's training windows: a run with this `seed` draws its batches on `rank` from it
    (the same data order for every attention variant of a seed)."""
    return torch.Generator().manual_seed(seed * 1000 + rank)


def masked_nll(logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL in nats over the counted positions, and their number."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), reduction="none")
    if batch.mask is None:
        return nll.sum(), torch.tensor(nll.numel(), device=nll.device)
    mask = batch.mask.flatten()
    return (nll * mask).sum(), mask.sum()


def _to(batch: Batch, device: torch.device) -> Batch:
    mask = None if batch.mask is None else batch.mask.to(device)
    return Batch(batch.inputs.to(device), batch.targets.to(device), mask)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay the matrices only (projections, embeddings); norms and α logits are left alone."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(
    model: GPT, data: Any, tcfg: TrainerConfig, device: torch.device, autocast: Any, split: str = "val"
) -> dict[str, float]:
    """Loss and bits per byte of `split` (``<split>_loss``, ``<split>_bpb``) on fixed windows, and
    per-layer attention statistics.

    Statistics come from the first batch (every query of every head, left to right).
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    total, count = torch.zeros((), device=device), torch.zeros((), device=device)
    row: dict[str, float] = {}
    for i in range(tcfg.eval_batches):
        batch = _to(data.batch(split, tcfg.batch_size, generator), device)
        if i == 0:
            with collect_attention_stats(model) as stats, autocast():
                logits = model(input_ids=batch.inputs, output_attention_metrics=False).logits
            layers = [stats[f"blocks.{j}.attn"].summary() for j in range(len(model.blocks))]
            for j, s in enumerate(layers):
                row |= {f"attn_{k}_L{j}": s[k] for k in ("entropy", "sparsity", "alpha")}
            for k in ("entropy", "sparsity", "alpha"):
                row[f"attn_{k}"] = sum(s[k] for s in layers) / len(layers)
        else:
            with autocast():
                logits = model(input_ids=batch.inputs, output_attention_metrics=False).logits
        nll, n = masked_nll(logits, batch)
        total, count = total + nll, count + n
    model.train(was_training)
    row[f"{split}_loss"] = float(total / count)
    row[f"{split}_bpb"] = float(bits_per_byte(total, float(count)))
    return row


class MetricsLog:
    """``metrics.csv`` with a fixed header; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None) -> None:
        self.path, self.columns = path, columns
        if resume_step is None:
            if path.exists():
                raise FileExistsError(f"'{path}' exists: a run never overwrites another run's metrics")
            rows: list[dict[str, str]] = []
        else:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(row[k]) for k in self.columns})


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return dist.get_rank(), world, device
    if device_name == "auto":
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    return 0, 1, torch.device(device_name)


def _broadcast(value: Any, world: int) -> Any:
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resume_folder(resume: str | None, output_dir: Path, rank: int) -> Path | None:
    """The folder to continue from: `resume` itself, or with ``resume=auto`` the run's own `output_dir`
    when it holds a checkpoint (a finished run then has nothing left to do). A folder that a run left
    before its first checkpoint is started again: its metrics and config go (rank 0 removes them)."""
    if not resume:
        return None
    if resume != "auto":
        return Path(resume)
    if (output_dir / "checkpoints" / "last.pt").is_file():
        return output_dir
    if rank == 0:
        for name in ("metrics.csv", "config.yaml"):
            (output_dir / name).unlink(missing_ok=True)
    return None


def train(cfg: DictConfig) -> RunSummary:
    """Run the training described by a composed configuration (see the module docstring)."""
    started = time.perf_counter()
    tcfg: TrainerConfig = hydra.utils.instantiate(cfg.trainer)
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    rank, world, device = _setup_distributed(tcfg.device)
    resume = _resume_folder(cfg.get("resume"), Path(cfg.paths.output_dir), rank)
    out_dir = _broadcast(resume if resume is not None else Path(cfg.paths.output_dir), world)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    if resume is not None and not ckpt_path.is_file():
        raise FileNotFoundError(f"resume={resume}: no checkpoint at '{ckpt_path}'")

    torch.manual_seed(cfg.seed)
    data = hydra.utils.instantiate(cfg.data)
    model = GPT(hydra.utils.instantiate(cfg.model)).to(device)
    record = Path(cfg.record) if cfg.get("record") else None
    variant = variant_name(OmegaConf.to_container(cfg.model.attention, resolve=True))
    if record is not None:
        budget = {
            "n_params": model.n_params, "steps": tcfg.max_steps, "batch_size": tcfg.batch_size,
            "seq_len": cfg.data.get("seq_len"),
        }  # fmt: skip
        previous = recorded(record, variant, int(cfg.seed), budget)
        if previous is not None:
            return _skipped(previous, record, out_dir, model.n_params, started)
    # resolved before training, so that a wrong target fails now and not after max_steps
    scores = (
        hydra.utils.instantiate(cfg.record_scores)
        if record is not None and cfg.get("record_scores")
        else None
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tcfg.betas, fused=device.type == "cuda"
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda t: cosine_lr(
            t, warmup_steps=tcfg.warmup_steps, max_steps=tcfg.max_steps, min_lr_ratio=tcfg.min_lr_ratio
        ),
    )
    generator = data_generator(cfg.seed, rank)
    step, tokens = 0, 0
    if resume is not None:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generators"][rank])
        step, tokens = state["step"], state["tokens"]

    bf16 = tcfg.precision == "bf16" or (tcfg.precision == "auto" and device.type == "cuda")

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    forward: nn.Module = model
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    if tcfg.compile:
        forward = torch.compile(forward)

    log = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:
            OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
        log = MetricsLog(
            out_dir / "metrics.csv", metric_columns(model.config.n_layer), step if resume else None
        )

    def save() -> None:
        states = [generator.get_state()]
        if world > 1:
            states = [None] * world
            dist.all_gather_object(states, generator.get_state())
        if rank == 0:
            extra = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
            atomic_save(
                {**model.checkpoint(), **extra, "generators": states, "step": step, "tokens": tokens},
                ckpt_path,
            )

    label = model.config.attention.kind
    bar = progress_bar(tcfg.max_steps, label, initial=step, disable=rank != 0 or not tcfg.progress)
    row: dict[str, float] = {}
    losses: list[Tensor] = []
    clock, timed_tokens = time.perf_counter(), 0
    model.train()
    while step < tcfg.max_steps:
        batch = _to(data.batch("train", tcfg.batch_size, generator), device)
        with autocast():
            logits = forward(input_ids=batch.inputs, output_attention_metrics=False).logits
        nll, n = masked_nll(logits, batch)
        loss = nll / n
        loss.backward()
        if tcfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_tokens = batch.inputs.numel() * world
        tokens += step_tokens
        timed_tokens += step_tokens
        losses.append(loss.detach())
        bar.update(1)
        if step % tcfg.eval_every == 0 or step == tcfg.max_steps:
            elapsed = time.perf_counter() - clock
            train_loss = float(torch.stack(losses).mean())
            if world > 1:
                box = torch.tensor(train_loss)
                dist.all_reduce(box)
                train_loss = float(box) / world
            if rank == 0:
                row = evaluate(model, data, tcfg, device, autocast)
                row |= {
                    "step": step,
                    "tokens": tokens,
                    "lr": schedule.get_last_lr()[0],
                    "train_loss": train_loss,
                    "tokens_per_s": timed_tokens / elapsed,
                }
                log.write(row)
                bar.set_postfix_str(f"loss {train_loss:.3f}, val_bpb {row['val_bpb']:.3f}")
            losses, timed_tokens = [], 0
            clock = time.perf_counter()
        if step % tcfg.ckpt_every == 0 or step == tcfg.max_steps:
            save()
    bar.close()
    if world > 1:
        dist.barrier()
    if resume is not None and not row:  # a resumed run that had nothing left to do
        row = _last_row(out_dir / "metrics.csv")
    summary = RunSummary(
        output_dir=out_dir,
        step=step,
        val_bpb=float(row.get("val_bpb", math.nan)),
        train_loss=float(row.get("train_loss", math.nan)),
        tokens_per_s=float(row.get("tokens_per_s", math.nan)),
        attn_sparsity=float(row.get("attn_sparsity", math.nan)),
        attn_alpha=float(row.get("attn_alpha", math.nan)),
        n_params=model.n_params,
    )
    if record is not None and rank == 0 and step >= tcfg.max_steps:
        test = evaluate(model, data, tcfg, device, autocast, split="test")
        command, overrides = _job_command()
        extra = scores(model=model, data=OmegaConf.to_container(cfg.data, resolve=True)) if scores else {}
        keep = ("val_bpb", "tokens_per_s", "train_loss")
        record_run(record, {
            "variant": variant, "seed": int(cfg.seed), "overrides": overrides, "n_params": model.n_params,
            "steps": step, "batch_size": tcfg.batch_size,
            "seq_len": tokens // (step * tcfg.batch_size * world), "tokens": tokens,
            "test_bpb": test["test_bpb"],
            **{k: v for k, v in row.items() if k in keep or k.startswith("attn_")}, **extra,
        }, command)  # fmt: skip
    if rank == 0:
        print_summary(
            f"train {label}",
            f"{summary.step} steps, val {summary.val_bpb:.4f} bits/byte, loss {summary.train_loss:.3f}, "
            f"{summary.tokens_per_s:,.0f} tokens/s",
            started=started,
            out=out_dir,
        )
    return summary


def _skipped(row: dict[str, str], record: Path, out_dir: Path, n_params: int, started: float) -> RunSummary:
    """The summary of a job that `record` already holds (`row`), said on stdout."""
    summary = RunSummary(
        output_dir=out_dir,
        step=int(row["steps"]),
        val_bpb=float(row["val_bpb"]),
        train_loss=float(row["train_loss"]),
        tokens_per_s=float(row["tokens_per_s"]),
        attn_sparsity=float(row["attn_sparsity"]),
        attn_alpha=float(row["attn_alpha"]),
        n_params=n_params,
    )
    print_summary(
        f"train {row['variant']}",
        f"skipped, seed {row['seed']} is in the record (val {summary.val_bpb:.4f} bits/byte)",
        started=started,
        out=record,
    )
    return summary


def _job_command() -> tuple[str, str]:
    """The command that trains a record's every row (``python -m experiments.train -m experiment=<preset>``,
    or this job's command without a preset), and this job's own hydra overrides (its row)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python -m experiments.train", ""
    hydra_cfg = HydraConfig.get()
    overrides = " ".join(hydra_cfg.overrides.task)
    preset = hydra_cfg.runtime.choices.get("experiment")
    if preset and preset != "null":
        return f"python -m experiments.train -m experiment={preset}", overrides
    return f"python -m experiments.train {overrides}".rstrip(), overrides


def _last_row(path: Path) -> dict[str, float]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items()} if rows else {}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final validation bits per byte (for sweepers).

    Launchers that ship the task to another process (submitit/SLURM) pickle this function; run as
    ``python -m experiments.train`` it lives in ``__main__`` and would be pickled by value with every
    global it touches (torch's config modules among them, which do not pickle). Importing the module
    by name here makes them references instead.
    """
    from experiments import train as module

    return module.run(cfg)


def run(cfg: DictConfig) -> float:
    """`train` then leave the process group; the final validation bits per byte."""
    summary = train(cfg)
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary.val_bpb


if __name__ == "__main__":
    main()

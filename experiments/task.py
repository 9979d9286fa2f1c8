"""Experiments as hydra tasks: one config tree for how models are trained and how they are measured.

Every experiment that trains or measures byte models runs as

    python -m experiments.<task> [experiment=<preset>] [<section>.<key>=<value> ...]
    python -m experiments.<task> -m experiment=<preset>,<preset> ...        # a sweep, one job each

It composes the training config (``configs/train.yaml``) with a preset, ``configs/experiment/<preset>.yaml``,
and reads its own settings from the section of that preset named after the task (``ablation:``,
``scaling:``, ``recall:``, ``complexity:``, ``trained_lengths:``). So one file holds what the experiment's
models are trained with (``python -m experiments.train -m experiment=<preset>``) and what is measured on
them, and the command line overrides either. Without ``experiment=`` a task runs its own default preset.

A job's results CSVs record the job's overrides as the command that reproduces them
(``# python -m experiments.ablation experiment=ablation_attention``; `experiments.results.write_csv`).
A task's own hydra folders (the composed config of each job) go to ``outputs/experiments/<task>/``, never
into the training runs a task reads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.train import CONFIG_DIR, compose_train

__all__ = ["TaskError", "hydra_task", "settings"]

Run = Callable[[DictConfig, list[str]], int]


class TaskError(ValueError):
    """A task's setting out of range: the message names the setting (``ablation.test_batches``)."""


def settings(section: DictConfig) -> dict[str, Any]:
    """A task's section as plain Python (lists and dicts, interpolations resolved)."""
    return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]


def _names_preset(overrides: Sequence[str]) -> bool:
    return any(o.lstrip("+~").startswith("experiment=") for o in overrides)


def _with_preset(overrides: Sequence[str], preset: str) -> list[str]:
    return list(overrides) if _names_preset(overrides) else [f"experiment={preset}", *overrides]


def _call(run: Run, cfg: DictConfig, task: str, overrides: list[str]) -> int:
    if task not in cfg:
        print(
            f"error: experiment preset without a `{task}:` section; name one of configs/experiment/*.yaml "
            "that has it (experiment=<name>)",
            file=sys.stderr,
        )
        return 2
    try:
        return run(cfg[task], overrides)
    except TaskError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def hydra_task(task: str, preset: str) -> Callable[[Run], Callable[[Sequence[str] | None], int]]:
    """Make ``run(section, overrides) -> exit code`` the entry point ``main(argv=None)`` of a task.

    Parameters
    ----------
    task : str
        The section of the composed config the task reads (its module's short name).
    preset : str
        The ``configs/experiment`` preset used when the overrides name none.

    ``main(None)`` is the command line: hydra parses ``sys.argv`` (``-m`` sweeps, ``--cfg job``, ...) and
    a job that fails exits with its code. ``main(overrides)`` composes the same config from a list of
    overrides and returns the code (the programmatic and test path). A `TaskError` raised by `run` is
    printed as ``error: <message>`` with exit code 2; so is a preset without the task's section.
    """

    def wrap(run: Run) -> Callable[[Sequence[str] | None], int]:
        def main(argv: Sequence[str] | None = None) -> int:
            if argv is not None:
                overrides = _with_preset(argv, preset)
                return _call(run, compose_train(overrides), task, overrides)
            return _command_line(run, task, preset)

        main.__doc__ = run.__doc__
        main.__name__ = "main"
        return main

    return wrap


def _command_line(run: Run, task: str, preset: str) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    args = list(sys.argv[1:])
    overrides = [i for i, a in enumerate(args) if not a.startswith("-") and "=" in a]
    if not _names_preset([args[i] for i in overrides]):
        # before the first override, after the flags and their values (-m, --cfg job)
        args.insert(overrides[0] if overrides else len(args), f"experiment={preset}")
    folder = f"outputs/experiments/{task}"
    for key, value in (
        ("hydra.run.dir", f"{folder}/${{now:%Y-%m-%d_%H-%M-%S_%f}}"),
        ("hydra.sweep.dir", f"{folder}/multirun/${{now:%Y-%m-%d_%H-%M-%S_%f}}"),
        ("hydra.sweep.subdir", "${hydra.job.num}"),
        ("hydra.sweeper.params", "null"),  # a preset's training sweep is not the task's
    ):
        if not any(a.startswith(key + "=") for a in args):
            args.append(f"{key}={value}")

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def job(cfg: DictConfig) -> None:
        code = _call(run, cfg, task, list(HydraConfig.get().overrides.task))
        if code:
            raise SystemExit(code)

    sys.argv[1:] = args
    job()
    return 0

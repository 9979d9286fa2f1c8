"""Every config under configs/ composes, and what it builds is what its file says."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from entropic.data import AssociativeRecall, Copying
from entropic.models import GPT, AttentionConfig, GPTConfig
from experiments.train import CONFIG_DIR, TrainerConfig

ROOT = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / group).glob("*.yaml"))


def compose_train(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def test_groups_are_populated():
    attention = {
        "softmax",
        "entmax",
        "sparsemax",
        "learned",
        "scheduled",
        "scheduled_gated",
        "scheduled_absolute",
        "scheduled_sparsemax",
    }
    assert attention <= set(options("attention"))
    assert {"stdlib", "text", "hf", "recall", "copying"} <= set(options("data"))
    assert options("model") and options("trainer") and options("experiment")


@pytest.mark.parametrize("attention", options("attention"))
def test_attention_configs_build_models(attention):
    cfg = compose_train(f"attention={attention}")
    config = instantiate(cfg.model)
    assert isinstance(config, GPTConfig) and isinstance(config.attention, AttentionConfig)
    expected_kind = "scheduled" if attention.startswith("scheduled") else attention
    assert config.attention.kind == expected_kind
    gate = getattr(config.attention.alpha, "varentropy_threshold", None)
    assert (gate is not None) == attention.endswith("gated")
    # scheduled_absolute and scheduled_sparsemax: thresholds in nats
    absolute = attention.startswith("scheduled") and ("absolute" in attention or "sparsemax" in attention)
    assert getattr(config.attention.alpha, "absolute", False) == absolute
    source = "sparsemax" if attention == "scheduled_sparsemax" else "softmax"
    assert getattr(config.attention.alpha, "source", "softmax") == source
    GPT(config)


@pytest.mark.parametrize("model", options("model"))
def test_model_configs(model):
    config = instantiate(compose_train(f"model={model}").model)
    assert config.n_layer == OmegaConf.load(ROOT / "model" / f"{model}.yaml").n_layer


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_configs(trainer):
    tcfg = instantiate(compose_train(f"trainer={trainer}").trainer)
    assert isinstance(tcfg, TrainerConfig) and tcfg.warmup_steps < tcfg.max_steps


@pytest.mark.parametrize("data", options("data"))
def test_data_configs(data, tmp_path):
    overrides = [f"data={data}"]
    if data == "text":
        (tmp_path / "a.txt").write_text("hello world\n" * 400)
        overrides.append(f"data.paths=[{tmp_path / 'a.txt'}]")
    if data == "stdlib":
        overrides.append(f"data.cache={tmp_path}")
    if data == "hf":
        datasets = pytest.importorskip("datasets")
        docs = [f"document {i}: " + "lorem ipsum " * 30 for i in range(60)]
        datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "ds"))
        overrides += [f"data.name={tmp_path / 'ds'}", f"data.cache={tmp_path / 'cache'}"]
    dataset = instantiate(compose_train(*overrides).data)
    batch = dataset.batch("train", 2)
    assert batch.inputs.shape == batch.targets.shape and batch.inputs.shape[0] == 2
    if data in ("recall", "copying"):
        assert isinstance(dataset, AssociativeRecall | Copying) and batch.mask is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_configs(experiment):
    header = (ROOT / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any("python -m experiments." in line for line in header if line.startswith("#"))
    cfg = compose_train(f"experiment={experiment}")
    instantiate(cfg.trainer)
    GPT(instantiate(cfg.model))


def test_hydra_run_folders_and_launchers():
    cfg = compose_train("hydra/launcher=slurm", hydra=True)
    assert re.fullmatch(r"outputs/train/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}", cfg.hydra.run.dir)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_slurm_launcher_config_is_valid_for_submitit(tmp_path, monkeypatch):
    """Every key of configs/hydra/launcher/slurm.yaml is one the plugin and submitit's executor accept."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf

    cfg = compose_train("hydra/launcher=slurm", "experiment=ablation", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    # the plugin's schema: unknown keys or wrong types raise here
    params = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), launcher))
    params["submitit_folder"] = str(tmp_path / "submitit")
    params["name"] = "ablation"
    # submitit refuses to build a SLURM executor without srun on PATH: a stand-in that is never run
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    # as the plugin's launch() does: shared keys as they are, the others prefixed with the cluster
    executor.update_parameters(
        **{
            k if k in base else f"slurm_{k}": v
            for k, v in params.items()
            if k not in ("_target_", "max_num_timeout")
        }
    )
    slurm = executor._executor.parameters
    assert slurm["gpus_per_node"] == 1 and slurm["time"] == launcher["timeout_min"]
    assert (
        slurm["mem"] == f"{launcher['mem_gb']}GB"
        and slurm["array_parallelism"] == launcher["array_parallelism"]
    )

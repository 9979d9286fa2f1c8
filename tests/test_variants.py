"""experiments.variants: one naming of attention variants, equal to the names the committed CSVs hold."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from entropic.attention import EntropySchedule
from entropic.models import AttentionConfig
from experiments.variants import display_name, file_variant, fixed_alpha, variant_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
ATTENTION_FILES = sorted(p.stem for p in (ROOT / "configs" / "attention").glob("*.yaml"))


def _composed(name: str) -> dict:
    """``model.attention`` of the train config with ``attention=<name>``, resolved as a run saves it."""
    from hydra import compose, initialize_config_dir

    from experiments.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"attention={name}"])
    return OmegaConf.to_container(cfg.model.attention, resolve=True)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    return {name: _composed(name) for name in ATTENTION_FILES}


def _variants(*names: str, column: str = "variant", model: str | None = None) -> set[str]:
    """The names in `column` of results/<name> (of the rows whose ``model`` is `model`, when given)."""
    out = set()
    for name in names:
        with (RESULTS / name).open(newline="") as f:
            rows = csv.DictReader(line for line in f if not line.startswith("#"))
            out |= {r[column] for r in rows if model is None or r["model"] == model}
    return out


def test_every_attention_config_file_is_named_by_its_config(configs):
    assert ATTENTION_FILES == [
        "entmax",
        "learned",
        "scheduled",
        "scheduled_absolute",
        "scheduled_cosine",
        "scheduled_gated",
        "scheduled_sparsemax",
        "softmax",
        "sparsemax",
    ]
    named = {name: variant_name(c) for name, c in configs.items()}
    assert named == {
        "softmax": "softmax",
        "entmax": "entmax1.5",
        "sparsemax": "sparsemax",
        "learned": "learned",
        "scheduled": "scheduled-linear",
        "scheduled_absolute": "scheduled-absolute-linear",
        "scheduled_cosine": "scheduled-cosine",
        "scheduled_gated": "scheduled-linear-gated",
        "scheduled_sparsemax": "scheduled-sparsemax-linear",
    }
    for name, c in configs.items():
        assert variant_name(AttentionConfig.from_dict(c)) == named[name]
        assert file_variant(name) == named[name]


def test_an_unknown_config_file_is_refused_with_its_name():
    known = r"name must be one of configs/attention/\*\.yaml \(entmax, learned, .*\), got 'dense'"
    with pytest.raises(ValueError, match=known):
        file_variant("dense")
    with pytest.raises(ValueError, match="name must be one of"):
        file_variant("entmax1.5")  # a variant's name is not a file's


def test_a_fixed_alpha_is_read_from_the_name_and_matches_the_config(configs):
    for name, c in configs.items():
        config = AttentionConfig.from_dict(c)
        alpha = f"{config.alpha:g}" if config.kind in ("entmax", "sparsemax") else None
        assert fixed_alpha(variant_name(config)) == alpha, name
    assert fixed_alpha("alpha=1.25") == "1.25" and fixed_alpha("alpha=2") == "2"
    assert fixed_alpha("softmax") is None and fixed_alpha("per-head") is None
    assert fixed_alpha("alpha=1.25 calibrated (head)") is None
    assert fixed_alpha("entmax-gated") is None
    assert fixed_alpha("entmax") is None  # a config file's name, not a variant's
    assert display_name("alpha=1.25") == display_name("entmax1.25") == "α = 1.25"
    assert display_name("entmax1.5") == display_name("alpha=1.5") == "α = 1.5"
    assert display_name("sparsemax") == display_name("alpha=2") == "α = 2"
    assert display_name("scheduled-linear-gated") == "scheduled-linear-gated"


def test_older_flat_run_configs_get_todays_names():
    old = {"kind": "scheduled", "schedule": "linear", "varentropy_threshold": 1.0, "fixed_alpha": 1.5}
    assert variant_name(old) == "scheduled-linear-gated"
    assert variant_name({"kind": "entmax", "alpha": 1.25}) == "entmax1.25"
    cosine_gated = {"kind": "scheduled", "alpha": {"shape": "cosine", "varentropy_threshold": 1.0}}
    assert variant_name(cosine_gated) == "scheduled-cosine-gated"
    absolute_gated = {
        "kind": "scheduled",
        "alpha": {**cosine_gated["alpha"], "low": 1.0, "high": 3.0, "absolute": True},
    }
    assert variant_name(absolute_gated) == "scheduled-absolute-cosine-gated"


def test_alphas_handed_to_a_pretrained_model_are_named_by_the_alpha():
    assert variant_name(1) == variant_name(1.0) == "softmax"
    assert [variant_name(a) for a in (1.25, 1.5, 2, 2.0)] == ["alpha=1.25", "alpha=1.5", "alpha=2", "alpha=2"]
    assert variant_name(EntropySchedule()) == "scheduled"
    assert variant_name(EntropySchedule(varentropy_threshold=1.0)) == "scheduled-gated"
    assert variant_name(EntropySchedule(absolute=True, source="sparsemax")) == "scheduled-sparsemax"
    assert variant_name(EntropySchedule("cosine")) == "scheduled-cosine"
    absolute = EntropySchedule(low=0.5, high=2.5, absolute=True)
    assert variant_name(absolute) == "scheduled-absolute"
    assert variant_name(EntropySchedule(low=0.5, high=2.5, varentropy_threshold=1.0, absolute=True)) == (
        "scheduled-absolute-gated"
    )
    assert fixed_alpha(variant_name(absolute)) is None
    assert variant_name(torch.full((2, 3), 1.5)) == "per-head"


def test_invalid_attention_is_refused_with_its_name():
    with pytest.raises(ValueError, match="attention"):
        variant_name(2.5)
    with pytest.raises(ValueError, match="attention"):
        variant_name(0.5)
    with pytest.raises(TypeError, match="attention"):
        variant_name(True)
    with pytest.raises(ValueError, match="attention"):
        variant_name("softmax")
    with pytest.raises(TypeError, match="attention"):
        variant_name([1.5])
    with pytest.raises(ValueError, match="attention kind"):
        variant_name({"kind": "dense"})


def test_the_committed_csvs_hold_only_names_the_functions_write(configs):
    by_kind = {variant_name(c) for c in configs.values()}  # every trained model is named by its config
    ablation = OmegaConf.load(ROOT / "configs" / "experiment" / "ablation.yaml").hydra.sweeper.params
    swept = ablation.attention.split(",")
    assert _variants("ablation.csv") == {variant_name(configs[name]) for name in swept}  # the whole sweep
    assert _variants("scaling.csv") <= by_kind
    demo = ("demo_long_context.csv", "demo_long_context_fit.csv")
    assert _variants("complexity.csv", "complexity_fit.csv", *demo) <= by_kind
    trained = ("complexity_trained.csv", "complexity_trained_fit.csv", "complexity_trained_heads.csv")
    assert _variants(*trained, model="tiny byte GPT") <= by_kind
    assert _variants("certified_tiny.csv", "certified_tiny_fit.csv", column="source") <= by_kind
    swap = _variants("attention_swap.csv", "attention_swap_2048.csv", "complexity_trained_swap.csv")
    assert swap == {
        variant_name(a)
        for a in (1.0, 1.25, 1.5, 2.0, EntropySchedule(), EntropySchedule(varentropy_threshold=1.0))
    } | {variant_name(torch.ones(1, 1))}
    assert _variants("complexity_trained_smollm2.csv") <= swap
    calibration = _variants("attention_calibration.csv")
    targets = {variant_name(a) for a in (1.25, 1.5)}
    targets |= {f"{t} calibrated ({g})" for t in targets for g in ("head", "layer", "global")}
    matched = {f"{kind} matched to {t}" for kind in ("top-k", "threshold") for t in targets}
    assert calibration == {"softmax"} | targets | matched


def test_the_experiments_and_the_paper_use_these_names():
    pytest.importorskip("transformers")
    from experiments import attention_swap

    spec = importlib.util.spec_from_file_location("paper_build", ROOT / "paper" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert tuple(attention_swap.variants(torch.ones(2, 2))) == build.SWAP_ORDER
    from omegaconf import OmegaConf

    ablation = OmegaConf.load(ROOT / "configs" / "experiment" / "ablation.yaml")
    sweep = ablation.hydra.sweeper.params.attention.split(",")  # the ablation's order is its sweep's
    assert tuple(variant_name(_composed(name)) for name in sweep) == build.ABLATION_ORDER
    assert build.variant_tex("entmax1.5") == build.variant_tex("alpha=1.5") == r"$\alpha = 1.5$"
    assert build.variant_tex("scheduled-linear-gated") == "scheduled-linear-gated"
    assert set(build.CERTIFIED_TINY_VARIANTS) <= {variant_name(_composed(name)) for name in ATTENTION_FILES}

"""The vLLM logits processor: per-request settings, the persistent batch's bookkeeping, and SmolLM2 served
through vLLM's offline engine with its draws replayed exactly by entropic's own samplers.

Runs in the vLLM environment (`make test-vllm`); skipped where vLLM is not installed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="the vLLM leg runs in its own environment: make test-vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from entropic.integrations.vllm import METRICS_ENV, EntropicLogitsProcessor, sampler_settings  # noqa: E402
from entropic.sampling import build_sampler  # noqa: E402
from entropic.sampling.protocol import StepContext  # noqa: E402

V = 50


def params(**extra: object) -> SamplingParams:
    return SamplingParams(max_tokens=4, extra_args={f"entropic_{k}": v for k, v in extra.items()})


def update(size: int, added=(), removed=(), moved=()) -> BatchUpdate:
    return BatchUpdate(batch_size=size, removed=list(removed), added=list(added), moved=list(moved))


def replay(name: str, seed: int, rows: list[torch.Tensor], prompt_last: int, **settings: object) -> list[int]:
    """Tokens entropic's sampler draws on these logits rows (one per step), the request alone."""
    sampler, tokens, prev = build_sampler(name, **settings), [], prompt_last
    for step, row in enumerate(rows):
        context = StepContext(prev_tokens=torch.tensor([prev]), seeds=torch.tensor([seed]), step=step)
        prev = int(sampler.step(row[None], context).tokens[0])
        tokens.append(prev)
    return tokens


# -- settings ---------------------------------------------------------------------------------------------


def test_settings_read_the_prefixed_keys_and_leave_other_requests_alone():
    assert sampler_settings(None) is None
    assert sampler_settings({"kv_transfer_params": {}}) is None
    s = sampler_settings({"entropic_sampler": "mirostat", "entropic_mirostat_tau": 3, "entropic_seed": 9})
    assert (s.name, s.params, s.seed, s.tag) == ("mirostat", (("mirostat_tau", 3),), 9, None)
    # the server's vllm_xargs carry numbers and strings: 1 / "true" stand for True
    assert sampler_settings({"entropic_sampler": "p_less", "entropic_p_less": 1}).params == (
        ("p_less", True),
    )
    assert sampler_settings({"entropic_sampler": "entropix", "entropic_enable_think": "false"}).params == (
        ("enable_think", False),
    )


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"entropic_sampler": "nucleus"}, "entropic_sampler must be one of"),
        ({"entropic_top_p": 0.9}, "entropic_top_p given without entropic_sampler"),
        ({"entropic_sampler": "top_p", "entropic_top_p": 1.5}, r"top_p must be in \(0.0, 1.0\], got 1.5"),
        ({"entropic_sampler": "top_p"}, "needs top_p="),
        ({"entropic_sampler": "greedy", "entropic_seed": -1}, r"entropic_seed must be an integer in \[0"),
        ({"entropic_sampler": "greedy", "entropic_seed": 1.5}, "entropic_seed must be an integer"),
        ({"entropic_sampler": "mirostat", "entropic_mirostat_tau": -1.0}, "mirostat_tau"),
    ],
)
def test_bad_settings_fail_at_admission_naming_the_argument(extra, match):
    with pytest.raises(ValueError, match=match):
        EntropicLogitsProcessor.validate_params(SamplingParams(extra_args=extra))


# -- the persistent batch ---------------------------------------------------------------------------------


def test_rows_follow_added_removed_moved_and_swapped_requests():
    proc = EntropicLogitsProcessor(None, torch.device("cpu"), False)
    a, b, c = params(sampler="greedy", tag="a"), params(sampler="greedy", tag="b"), SamplingParams()
    proc.update_state(update(3, added=[(0, a, [1], []), (1, b, [2], []), (2, c, [3], [])]))
    assert {i: r.settings.tag for i, r in proc.requests.items()} == {0: "a", 1: "b"}
    proc.update_state(update(3, moved=[(0, 1, MoveDirectionality.SWAP)]))
    assert {i: r.settings.tag for i, r in proc.requests.items()} == {0: "b", 1: "a"}
    proc.update_state(update(2, removed=[0], moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert {i: r.settings.tag for i, r in proc.requests.items()} == {0: "a"}
    proc.update_state(update(2, added=[(0, c, [1], [])]))  # a plain request takes the slot
    assert proc.requests == {}
    proc.update_state(None)
    assert proc.requests == {}


def test_apply_chooses_the_samplers_tokens_and_leaves_plain_rows_untouched():
    proc = EntropicLogitsProcessor(None, torch.device("cpu"), False)
    outputs = [[], [4, 7], [], [1]]
    requests = [
        params(sampler="top_n_sigma", top_n_sigma=1.0, seed=3),
        params(sampler="top_n_sigma", top_n_sigma=1.0, seed=4),
        SamplingParams(),
        params(sampler="entropix", seed=5),
    ]
    proc.update_state(update(4, added=[(i, p, [9], outputs[i]) for i, p in enumerate(requests)]))
    logits = torch.randn(4, V) * 3
    out = proc.apply(logits.clone())
    assert torch.equal(out[2], logits[2])
    for row, name, seed, extra in ((0, "top_n_sigma", 3, {"top_n_sigma": 1.0}), (3, "entropix", 5, {})):
        sampler = build_sampler(name, **extra)
        prev = torch.tensor([outputs[row][-1] if outputs[row] else 9])
        context = StepContext(prev_tokens=prev, seeds=torch.tensor([seed]), step=len(outputs[row]))
        token = int(sampler.step(logits[row : row + 1], context).tokens[0])
        assert out[row, token] == 0 and torch.isinf(out[row]).sum() == V - 1
    # row 1 (step 2) is drawn apart from row 0 (step 0), with its own counter
    token = replay("top_n_sigma", 4, [logits[1]] * 3, 9, top_n_sigma=1.0)[2]
    assert out[1, token] == 0


def test_a_stateful_sampler_keeps_one_state_per_request():
    proc = EntropicLogitsProcessor(None, torch.device("cpu"), False)
    outs = [[], []]
    proc.update_state(
        update(2, added=[(i, params(sampler="mirostat", seed=i), [0], outs[i]) for i in (0, 1)])
    )
    assert proc.requests[0].sampler is not proc.requests[1].sampler
    rows = [torch.randn(2, V) * 2 for _ in range(4)]
    for step_logits in rows:
        out = proc.apply(step_logits.clone())
        for i in (0, 1):
            outs[i].append(int(out[i].argmax()))
    for i in (0, 1):
        assert outs[i] == replay("mirostat", i, [r[i] for r in rows], 0)


def test_metrics_reach_the_file_named_by_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv(METRICS_ENV, str(path))
    proc = EntropicLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(update(1, added=[(0, params(sampler="entropix", seed=1, tag="q1"), [0], [])]))
    logits = torch.randn(1, V)
    out = proc.apply(logits.clone())
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert (line["tag"], line["step"], line["token"]) == ("q1", 0, int(out[0].argmax()))
    p = torch.softmax(logits[0].double(), -1)
    h = -(p * p.log()).sum()
    assert line["entropy"] == pytest.approx(float(h), rel=1e-5)
    assert line["varentropy"] == pytest.approx(float((p * (p.log() + h) ** 2).sum()), rel=1e-4)
    assert "decision" in line


# -- SmolLM2 served by vLLM -------------------------------------------------------------------------------

ENGINE_SAMPLERS = [  # (registry name, its settings): one request each, replayed exactly
    ("entropix", {}),
    ("mirostat", {"mirostat_tau": 3.0}),
    ("mirostat_v1", {"mirostat_tau": 3.0}),
    ("adaptive_p", {"adaptive_target": 0.3}),
    ("xtc", {"xtc_threshold": 0.1, "xtc_probability": 0.5}),
    ("dynamic_temperature", {"dynatemp_range": 0.5}),
    ("top_n_sigma", {"top_n_sigma": 1.0, "temperature": 1.5}),
    ("p_less", {"p_less": True}),
    ("entropy_target", {"target": 1.0}),
]


@pytest.fixture(scope="module")
def llm(pretrained_cache):
    from vllm import LLM

    from entropic.pretrained import pretrained_cache_path

    folder = pretrained_cache_path("smollm2-135m", pretrained_cache)
    os.environ["TRITON_INTERPRET"] = "0"  # the engine's processes inherit it: no Triton interpreter there
    try:
        engine = LLM(
            model=str(folder),
            dtype="float32",
            max_model_len=256,
            enforce_eager=True,
            seed=0,
            gpu_memory_utilization=0.1,
            logits_processors=[EntropicLogitsProcessor],
            max_logprobs=-1,
            logprobs_mode="raw_logits",  # the logits the processor saw, for the exact replay
        )
    finally:
        os.environ["TRITON_INTERPRET"] = "1"
    yield engine
    engine.llm_engine.engine_core.shutdown()


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
def test_vllm_draws_equal_entropics_own_samplers_on_the_same_logits(llm):
    prompt = "The capital of France is"
    prompt_ids = llm.get_tokenizer()(prompt)["input_ids"]
    requests = [
        SamplingParams(
            max_tokens=5,
            logprobs=-1,
            extra_args={"entropic_sampler": name, "entropic_seed": 11 + i}
            | {f"entropic_{k}": v for k, v in settings.items()},
        )
        for i, (name, settings) in enumerate(ENGINE_SAMPLERS)
    ]
    plain = SamplingParams(max_tokens=5, temperature=0.0, logprobs=-1)
    outs = llm.generate([prompt] * (len(requests) + 1), [*requests, plain], use_tqdm=False)
    for (name, settings), request, out in zip(ENGINE_SAMPLERS, requests, outs, strict=False):
        completion = out.outputs[0]
        rows = raw_rows(completion.logprobs)
        seed = request.extra_args["entropic_seed"]
        assert list(completion.token_ids) == replay(name, seed, rows, prompt_ids[-1], **settings), name
    plain_out = outs[-1].outputs[0]  # the plain request: vLLM's own greedy, untouched by the processor
    assert list(plain_out.token_ids) == [int(row.argmax()) for row in raw_rows(plain_out.logprobs)]


def raw_rows(logprobs) -> list[torch.Tensor]:
    """The raw logits of the whole vocabulary at each step (``logprobs_mode="raw_logits"``, logprobs=-1)."""
    rows = []
    for position in logprobs:
        row = torch.full((len(position),), -math.inf)
        for token, logprob in position.items():
            row[token] = logprob.logprob
        rows.append(row)
    return rows


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
def test_a_bad_request_fails_with_the_samplers_message(llm):
    with pytest.raises(VLLMValidationError, match=r"mirostat_tau must be >= 0\.0, got -1"):
        llm.generate(
            "Hi",
            SamplingParams(
                max_tokens=2, extra_args={"entropic_sampler": "mirostat", "entropic_mirostat_tau": -1}
            ),
            use_tqdm=False,
        )


# -- the README's recipes ---------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(language: str, first_line: str) -> str:
    """The README's one ``language`` block whose first line starts with `first_line`."""
    blocks = [
        b
        for b in re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
        if b.startswith(first_line)
    ]
    assert len(blocks) == 1, (
        f"README.md: expected one {language} block starting {first_line!r}, got {len(blocks)}"
    )
    return blocks[0]


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
def test_readme_offline_example_runs(pretrained_cache, monkeypatch):
    monkeypatch.setenv("ENTROPIC_CACHE", str(pretrained_cache))  # the de-quantised model of the fixture
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    namespace = {"__name__": "__main__"}
    exec(compile(readme_block("python", "# needs vLLM"), "README.md[vllm]", "exec"), namespace)
    texts = namespace["texts"]
    assert len(texts) == 3 and all(texts), texts
    namespace["llm"].llm_engine.engine_core.shutdown()


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
def test_readme_server_recipe_serves_per_request_entropix(pretrained_cache, tmp_path, capsys):
    command = readme_block("bash", "MODEL=").replace(".venv-vllm/bin/python", shlex.quote(sys.executable))
    env = os.environ | {"ENTROPIC_CACHE": str(pretrained_cache), "TRITON_INTERPRET": "0"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (
                "the server exited:\n" + (tmp_path / "server.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no answer from the server in 600 s"
            try:
                with urllib.request.urlopen("http://localhost:8000/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(2)
        exec(compile(readme_block("python", "# needs a vLLM server"), "README.md[server]", "exec"), {})
        text = capsys.readouterr().out
        lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert text.strip() and lines
        assert {line["tag"] for line in lines} == {"colours"} and [x["step"] for x in lines] == list(
            range(len(lines))
        )
        assert all(line["sampler"] == "entropix" and line["entropy"] >= 0 for line in lines)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()

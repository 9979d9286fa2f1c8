"""Throughput of vLLM's offline engine with and without entropic's samplers (`entropic.integrations.vllm`).

SmolLM2-135M-Instruct (the de-quantised float32 folder `entropic.pretrained` caches) generates
``--max-tokens`` tokens for each of B distinct prompts (``ignore_eos``: every request runs to the end), in one
``LLM.generate`` call, at each batch size of ``--batches``. Two engines are started, one without the processor
and one with it, and every provider runs in turn within each repetition (so that drift in the machine's load
hits them alike):

* ``vllm-unloaded``: vLLM's own sampling (temperature 1, top-p 0.9, a seed per request) in the engine started
  without the processor: the baseline of a user without entropic;
* ``vllm``: the same requests in the engine with the processor loaded (no request opts in: it returns
  at once);
* ``entropic-top_p``: the same rule, drawn by entropic's sampler through the processor;
* ``entropic-entropix`` and ``entropic-mirostat``: the Entropix sampler and Mirostat 2.0 (τ = 3).

Metric ``tok/s``: generated tokens per second of wall time, median (p20, p80) over ``--repeats`` calls.

Run: ``python benchmarks/bench_vllm.py [--quick]`` in the vLLM environment (``make bench-vllm``); appends to
benchmarks/results.csv.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from common import Quantiles, ResultWriter, parser, select, sizes

PROVIDERS = {  # name -> (the engine has the processor, the requests' entropic settings)
    "vllm-unloaded": (False, {}),
    "vllm": (True, {}),
    "entropic-top_p": (True, {"entropic_sampler": "top_p", "entropic_top_p": 0.9}),
    "entropic-entropix": (True, {"entropic_sampler": "entropix"}),
    "entropic-mirostat": (True, {"entropic_sampler": "mirostat", "entropic_mirostat_tau": 3.0}),
}


def engine(folder: str, processor: bool):
    from vllm import LLM

    from entropic.integrations.vllm import EntropicLogitsProcessor

    return LLM(
        model=folder,
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        seed=0,
        gpu_memory_utilization=0.15,
        max_num_seqs=max(64, max(ARGS.batches)),
        logits_processors=[EntropicLogitsProcessor] if processor else None,
    )


def run(llm, batch: int, extra: dict, max_tokens: int) -> float:
    """Seconds for one generate call of `batch` requests."""
    from vllm import SamplingParams

    prompts = [f"Question {i}: what is {i} plus {2 * i + 1}? Answer:" for i in range(batch)]
    params = [
        SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=True,
            temperature=1.0,
            top_p=0.9,
            seed=i,
            extra_args=(extra | {"entropic_seed": i}) if extra else None,
        )
        for i in range(batch)
    ]
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outs)
    if produced != batch * max_tokens:
        raise RuntimeError(f"expected {batch * max_tokens} tokens, got {produced}")
    return seconds


def quantiles(times: list[float], tokens: int) -> Quantiles:
    """tok/s from the repetitions' times: the median, and p20/p80 (from the times' p80/p20)."""
    cuts = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else times * 4
    return Quantiles(tokens / statistics.median(times), tokens / cuts[3], tokens / cuts[0])


def main() -> None:
    from entropic.pretrained import load_pretrained, pretrained_cache_path

    load_pretrained("smollm2-135m")  # de-quantises into the cache the first time
    folder = str(pretrained_cache_path("smollm2-135m"))
    writer = ResultWriter(ARGS.output, torch.device("cpu"))
    providers = select(PROVIDERS, ARGS.providers)
    engines = {loaded: engine(folder, loaded) for loaded in sorted({p[0] for p in providers.values()})}
    found: dict[tuple[str, int], Quantiles] = {}
    for batch in ARGS.batches:
        for llm in engines.values():
            run(llm, batch, {}, 2)  # warm-up: this batch size's first call
        times: dict[str, list[float]] = {name: [] for name in providers}
        for repeat in range(ARGS.repeats):
            for name, (loaded, extra) in providers.items():
                times[name].append(run(engines[loaded], batch, extra, ARGS.max_tokens))
                print(
                    f"batch {batch} repeat {repeat + 1}/{ARGS.repeats} {name}: {times[name][-1]:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
        for name, t in times.items():
            found[(name, batch)] = q = quantiles(t, batch * ARGS.max_tokens)
            shape = {"batch": batch, "seq_q": ARGS.max_tokens, "vocab": 49152}
            writer.add("vllm_generate", name, "generate", torch.float32, shape, "tok/s", q)
    print(f"{'provider':<20}" + "".join(f"{'B=' + str(b):>16}" for b in ARGS.batches))
    for name in providers:
        cells = [found[(name, b)] for b in ARGS.batches]
        print(f"{name:<20}" + "".join(f"{c.median:>10.1f} tok/s" for c in cells))


if __name__ == "__main__":  # vLLM starts its engine in a new process, which re-imports this file
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=sizes, default=[1, 16, 64], help="batch sizes (default 1,16,64)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per provider and batch (default 3)")
    ARGS = p.parse_args()
    if ARGS.quick:
        ARGS.batches, ARGS.max_tokens, ARGS.repeats = [1, 4], 4, 1
    os.environ["TRITON_INTERPRET"] = "0"
    main()

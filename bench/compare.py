"""What the compare page pays for 1, 4 and 8 snapshots, on the built-in backend, on vLLM, or both.

    .venv/bin/python bench/compare.py [--backend builtin|vllm|both] [--prompts 8] [--max-tokens 32]
                                      [--rounds 5] [--hidden 256 --layers 4] [--base FOLDER]

A base of attune-tiny's shape (built here, no download, no pre-training; or
`--base`, a model folder such as var/models/smollm2-135m) and 8 LoRA adapters
(rank 8, random non-zero weights) answer the demo held-out prompts with greedy
decoding through each backend's `generate`, the compare page's call:

- one alone: one LoRA snapshot in a request of its own (the mean over 4 of them),
- 4 and 8 snapshots in one comparison (one request per prompt),
- the base model alone,
- one after another: for each prompt, 4 snapshots asked one by one (a page that does not batch).

vLLM runs as Attune runs it (vllm_servers.py: .venv-vllm, `make vllm`), one
server for the base and its adapters. Models and adapters are loaded and
warmed up first, so only decoding is timed. Each round times every case,
in an order that alternates; the ratios are taken within each round, and the
median of the rounds counts. The last lines, one per backend:

    builtin: 4 snapshots batched vs one alone: Bx          (goal B <= 1.5)
    vllm: 4 snapshots batched vs one alone: Vx
    …
"""

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_ADAPTERS = 8


def build(folder, hidden=256, layers=4, base=None):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.demo_data import corpus_texts
    from training.demo_model import build_tiny_model

    if base is None:
        base = folder / "base"
        build_tiny_model(base, corpus_texts(), seed=0, pretrain_steps=0)
        if (hidden, layers) != (256, 4):
            # The same architecture and tokenizer, wider and deeper: how the ratio moves as the base's
            # own matrices outweigh the per-adapter work.
            config = AutoConfig.from_pretrained(base)
            heads = hidden // 64
            config.update({"hidden_size": hidden, "intermediate_size": (hidden * 11 // 4 + 63) // 64 * 64,
                           "num_hidden_layers": layers, "num_attention_heads": heads,
                           "num_key_value_heads": max(1, heads // 2), "head_dim": 64})
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(base, safe_serialization=True)
    adapters = []
    for n in range(N_ADAPTERS):
        model = AutoModelForCausalLM.from_pretrained(base)
        torch.manual_seed(100 + n)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(model, config).save_pretrained(folder / f"adapter-{n}")
        adapters.append(folder / f"adapter-{n}")
    return Path(base), adapters


def make_backend(kind, folder):
    if kind == "builtin":
        from playground.inference.builtin import BuiltinBackend

        return BuiltinBackend(), None
    from playground.inference.vllm import VLLMBackend
    from playground.inference.vllm_servers import ServerSettings, VLLMServerPool

    command = os.environ.get("VLLM_COMMAND") or (
        f"{ROOT / '.venv-vllm' / 'bin' / 'python'} -m vllm.entrypoints.openai.api_server")
    settings = ServerSettings(command=shlex.split(command), log_dir=folder / "vllm-logs", max_loras=N_ADAPTERS,
                              max_cpu_loras=N_ADAPTERS + 2, max_lora_rank=8, kv_cache_gb=1, start_timeout=600)
    pool = VLLMServerPool(settings)
    return VLLMBackend(pool=pool, max_lora_rank=8), pool


def measure(backend, base_snapshot, snapshots, prompts, params, rounds):
    """Per round: seconds (and tokens) for each case; every case warmed up once first."""
    from playground.inference import collect

    def run(chosen):
        tokens = 0
        started = time.perf_counter()
        for messages in prompts:
            finals = asyncio.run(collect(backend.generate(chosen, messages, params), len(chosen)))
            assert all(e.type == "done" for e in finals), [e.error for e in finals]
            tokens += sum(e.n_tokens for e in finals)
        return time.perf_counter() - started, tokens

    def alone():
        runs = [run([s]) for s in snapshots[:4]]
        return statistics.mean(t for t, _ in runs), statistics.mean(n for _, n in runs)

    def one_after_another():
        tokens, started = 0, time.perf_counter()
        for messages in prompts:
            for snapshot in snapshots[:4]:
                tokens += asyncio.run(collect(backend.generate([snapshot], messages, params), 1))[0].n_tokens
        return time.perf_counter() - started, tokens

    cases = {"one alone": alone, "4 batched": lambda: run(snapshots[:4]), "8 batched": lambda: run(snapshots),
             "base alone": lambda: run([base_snapshot]), "4 one after another": one_after_another}
    run(snapshots)  # load the base and every adapter
    for case in cases.values():
        case()
    results = {name: [] for name in cases}
    for round_ in range(rounds):
        # The order alternates, so a drift in the machine's speed does not favour one case.
        order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
        for name in order:
            results[name].append(cases[name]())
    return results


def report(kind, results, rounds):
    def ratio(case, against="one alone"):
        return statistics.median(x[0] / y[0] for x, y in zip(results[case], results[against], strict=True))

    for name, runs in results.items():
        seconds = statistics.median(t for t, _ in runs)
        tokens = runs[0][1]
        print(f"{kind}: {name + ':':22s} {seconds:7.3f} s, {tokens:.0f} tokens, {tokens / seconds:6.1f} tokens/s")
    lines = [f"{kind}: 4 snapshots batched vs one alone: {ratio('4 batched'):.2f}x",
             f"{kind}: 8 snapshots batched vs one alone: {ratio('8 batched'):.2f}x",
             f"{kind}: one LoRA snapshot alone vs the base alone: {ratio('one alone', 'base alone'):.2f}x",
             f"{kind}: 4 snapshots one after another vs one alone: {ratio('4 one after another'):.2f}x"]
    return lines


def _exit_on_signal(signum, frame):
    # SIGTERM (a `timeout`, a closed terminal) ends the benchmark through SystemExit, so the vLLM server
    # it started is stopped on the way out rather than left running.
    raise SystemExit(128 + signum)


def main():
    import signal

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["builtin", "vllm", "both"], default="builtin")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the base (attune-tiny: 256)")
    parser.add_argument("--layers", type=int, default=4, help="layers of the base (attune-tiny: 4)")
    parser.add_argument("--base", default=None, help="a model folder to use as the base instead")
    args = parser.parse_args()

    import torch

    from playground.inference import SamplingParams
    from playground.snapshots import Snapshot
    from training.demo_data import make_demo_data

    kinds = ["builtin", "vllm"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="attune-bench-compare-") as tmp:
        base, adapters = build(Path(tmp), args.hidden, args.layers, Path(args.base).resolve() if args.base else None)
        base_snapshot = Snapshot.from_paths("base", base)
        snapshots = [Snapshot.from_paths(f"lora-{n}", base, a, base_model="base") for n, a in enumerate(adapters)]
        prompts = [row["messages"] for row in make_demo_data()[2][: args.prompts]]
        params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
        shape = args.base or f"hidden {args.hidden}, {args.layers} layers"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
              f"{'cuda' if torch.cuda.is_available() else 'cpu'}; {len(prompts)} prompts, max {args.max_tokens} "
              f"new tokens, greedy, median of {args.rounds} rounds; base {shape}; {N_ADAPTERS} LoRA adapters "
              "of rank 8")
        summary, alone = [], {}
        for kind in kinds:
            backend, pool = make_backend(kind, Path(tmp))
            try:
                results = measure(backend, base_snapshot, snapshots, prompts, params, args.rounds)
            finally:
                if pool is not None:
                    pool.stop_all()
            summary += report(kind, results, args.rounds)
            alone[kind] = statistics.median(t for t, _ in results["one alone"])
        if len(kinds) == 2:
            summary.append(f"vllm vs builtin, one snapshot alone (time): {alone['vllm'] / alone['builtin']:.2f}x")
        print()
        for line in summary:
            print(line)


if __name__ == "__main__":
    main()

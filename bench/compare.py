"""Batched multi-LoRA decoding of the built-in backend: what the compare page pays for 4 snapshots.

    .venv/bin/python bench/compare.py [--prompts 8] [--max-tokens 32] [--rounds 7] [--hidden 256 --layers 4]

A base of attune-tiny's shape (built here, no download, no pre-training)
and 4 LoRA adapters (rank 8, random non-zero weights) answer the demo
held-out prompts with greedy decoding through `BuiltinBackend.generate`:

- batched: the 4 snapshots in one request (one batch, one adapter per row),
- one alone: each snapshot in a request of its own; the mean of the 4,
- one after another: for each prompt, the 4 snapshots requested one by one
  (what a compare page without batching would do).

Each round times the three, interleaved (batched and alone swap places every
other round); the ratios are taken within each round and the median counts. Models
are loaded and warmed up first, so only decoding is timed. The last lines:

    4 snapshots batched vs one alone: Bx          (goal B <= 1.5)
    4 snapshots one after another vs one alone: Sx
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(folder, hidden=256, layers=4):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.demo_data import corpus_texts
    from training.demo_model import build_tiny_model

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
    for n in range(4):
        model = AutoModelForCausalLM.from_pretrained(base)
        torch.manual_seed(100 + n)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(model, config).save_pretrained(folder / f"adapter-{n}")
        adapters.append(folder / f"adapter-{n}")
    return base, adapters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the base (attune-tiny: 256)")
    parser.add_argument("--layers", type=int, default=4, help="layers of the base (attune-tiny: 4)")
    args = parser.parse_args()

    import torch

    from playground.inference import SamplingParams, collect
    from playground.inference.builtin import BuiltinBackend
    from playground.snapshots import Snapshot
    from training.demo_data import make_demo_data

    with tempfile.TemporaryDirectory(prefix="attune-bench-compare-") as tmp:
        base, adapters = build(Path(tmp), args.hidden, args.layers)
        snapshots = [Snapshot.from_paths(f"lora-{n}", base, a, base_model="base") for n, a in enumerate(adapters)]
        prompts = [row["messages"] for row in make_demo_data()[2][: args.prompts]]
        params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
        backend = BuiltinBackend()

        def run(chosen):
            tokens = 0
            started = time.perf_counter()
            for messages in prompts:
                finals = asyncio.run(collect(backend.generate(chosen, messages, params), len(chosen)))
                assert all(e.type == "done" for e in finals), [e.error for e in finals]
                tokens += sum(e.n_tokens for e in finals)
            return time.perf_counter() - started, tokens

        run(snapshots)  # load the base and the 4 adapters, warm up
        for s in snapshots:
            run([s])

        batched, alone, serial = [], [], []
        def one_after_another():
            tokens = 0
            started = time.perf_counter()
            for messages in prompts:
                for snapshot in snapshots:
                    final = asyncio.run(collect(backend.generate([snapshot], messages, params), 1))[0]
                    tokens += final.n_tokens
            return time.perf_counter() - started, tokens

        for round_ in range(args.rounds):
            # Which side goes first alternates, so a drift in the machine's speed does not favour one.
            if round_ % 2:
                singles = [run([s]) for s in snapshots]
                batched.append(run(snapshots))
            else:
                batched.append(run(snapshots))
                singles = [run([s]) for s in snapshots]
            alone.append((statistics.mean(t for t, _ in singles), statistics.mean(n for _, n in singles)))
            serial.append(one_after_another())

        b, a, s = (statistics.median(t for t, _ in runs) for runs in (batched, alone, serial))
        # The ratios are taken round by round (the two sides ran within seconds of each other), then the median.
        b_ratio = statistics.median(x[0] / y[0] for x, y in zip(batched, alone, strict=True))
        s_ratio = statistics.median(x[0] / y[0] for x, y in zip(serial, alone, strict=True))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
              f"{'cuda' if torch.cuda.is_available() else 'cpu'}; {len(prompts)} prompts, "
              f"max {args.max_tokens} new tokens, greedy, median of {args.rounds} rounds; base hidden "
              f"{args.hidden}, {args.layers} layers")
        print(f"batched (4 snapshots, one request per prompt): {b:.3f} s, {batched[0][1]} tokens")
        print(f"one snapshot alone (mean of the 4):             {a:.3f} s, {alone[0][1]:.0f} tokens")
        print(f"one after another (4 requests per prompt):      {s:.3f} s, {serial[0][1]} tokens")
        print(f"4 snapshots batched vs one alone: {b_ratio:.2f}x")
        print(f"4 snapshots one after another vs one alone: {s_ratio:.2f}x")


if __name__ == "__main__":
    main()

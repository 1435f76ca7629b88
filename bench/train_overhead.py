"""What the engine costs over a bare transformers Trainer, what packing buys, and how much of the CPU's
matmul peak a training step reaches.

Runs, in this one process, on a freshly built attune-tiny (no pre-training; speed does not depend on it),
or with `--model smollm2` on smollm2-135m (SmolLM2-135M-Instruct, converted from its packaged GGUF file
when var/models has no copy):

1. the engine (`training.engine.run.main`) with a LoRA spec on the demo intent data, padding, and a bare
   script: transformers `Trainer` + PEFT on the same tokenized rows, same hyperparameters, with the full
   validation set evaluated at each epoch end (`eval_strategy="epoch"`), no checkpoints. The two alternate
   (and alternate which goes first) for `--rounds` rounds after an untimed warm-up, and each keeps its best
   round: on a shared machine the slowest rounds measure the neighbours.
2. the engine with `packing: true` against the same spec without it, twice:
   - on the demo intent data, where every example is about 51 tokens, so a padded batch is already ~93 %
     real tokens and packing can only save per-step overhead;
   - on mixed-length support conversations (1 to 32 exchanges under one system prompt, about 50 to 900
     tokens, log-uniform like real chat data), where padding to the longest example of each batch wastes
     most of the batch. This is the figure packing is for, and the last line.

3. the model FLOPs utilisation of the best engine round: trained tokens/s × FLOPs per token, against the
   peak of a 2048² `torch.mm` in float32 (the training dtype on a CPU) measured in the same process, before
   and after the runs. A LoRA step on a frozen base costs about 4 FLOPs per weight of every linear layer
   (the LM head included) per token: 2 forward, 2 for the input gradients; the frozen weights need no
   gradient of their own. Padding tokens are not counted, so the figure is a floor.

Throughput = trained (non-padding) tokens / wall seconds of training, validation included. For the engine
the clock runs from its `started` line to its `done` line (so it includes sampled and full evaluations and
the epoch checkpoint); for the bare script from `on_train_begin` to the return of `trainer.train()`.

    python bench/train_overhead.py [--model tiny|smollm2] [--epochs 1] [--train N] [--rounds N]

The last lines are the figures:
    model FLOPs utilisation: U% of the float32 matmul peak (P GFLOP/s)
    engine/bare tokens/s ratio: R      (goal ≥ 0.97)
    packing speed-up: Px               (goal ≥ 1.5)
"""

import argparse
import io
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def engine_tokens_per_second(folder, model_dir, train_file, valid_file, epochs, **extra):
    from training.engine.run import main

    spec = {"model": str(model_dir), "training_file": str(train_file), "validation_file": str(valid_file),
            "n_epochs": epochs, "batch_size": 8, "learning_rate_multiplier": 5, "seed": 0,
            "eval_interval": 100000, "output_dir": str(folder / "job"), **extra}
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    out = io.StringIO()
    assert main([str(path)], out) == 0, out.getvalue()[-500:]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    started = next(line for line in lines if line["type"] == "started")
    done = lines[-1]
    return done["trained_tokens"] / (done["ts"] - started["ts"]), done["trained_tokens"]


def bare_tokens_per_second(folder, model_dir, train_rows, valid_rows, epochs):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, set_seed
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(folder / "bare"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
        num_train_epochs=epochs, learning_rate=1e-3, logging_steps=1, eval_strategy="epoch",
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=True,
    )
    collator = DataCollatorForLanguageModeling(pad_token_id=0)

    class Clock(TrainerCallback):  # the engine's clock starts at its `started` line, sent from on_train_begin
        begin = None

        def on_train_begin(self, args, state, control, **kwargs):
            Clock.begin = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(valid_rows), data_collator=collator, callbacks=[Clock()])
    trainer.train()
    seconds = time.perf_counter() - Clock.begin
    tokens = sum(len(r["input_ids"]) for r in train_rows) * epochs
    return tokens / seconds, tokens


def matmul_peak(size=2048, repeats=8):
    """The best float32 GFLOP/s of a size × size `torch.mm` on this machine, now."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def lora_flops_per_token(model_dir):
    """4 × the weights of every linear layer (LM head included): forward, and the inputs' gradients."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return 4 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def smollm2_folder(root):
    """var/models/smollm2-135m when `make run` built it, else a conversion of the packaged GGUF file."""
    import os

    from training import gguf

    home = pathlib.Path(os.environ.get("ATTUNE_HOME") or pathlib.Path(__file__).resolve().parents[1] / "var")
    built = home / "models" / "smollm2-135m"
    if (built / "model.safetensors").exists():
        return built
    return gguf.convert(gguf.packaged_smollm2(), root / "smollm2-135m")


def conversations(seed, n):
    """Support chats of 1–32 exchanges (log-uniform), each user turn answered with its intent label."""
    import random

    from training.demo_data import SYSTEM_PROMPT, make_demo_data

    rng = random.Random(seed)
    pairs = [row["messages"][1:] for row in make_demo_data(seed, n_train=2000, n_valid=0, n_heldout=0)[0]]
    chats = []
    for _ in range(n):
        turns = int(2 ** rng.uniform(0, 5))
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for pair in rng.sample(pairs, turns):
            messages.extend(pair)
        chats.append({"messages": messages})
    return chats


def packing_speedup(root, model_dir, train, valid, epochs, label):
    from training.demo_data import to_jsonl

    folder = root / label.replace(" ", "-")
    for name in ("padded", "packed"):
        (folder / name).mkdir(parents=True)
    train_file, valid_file = folder / "train.jsonl", folder / "valid.jsonl"
    train_file.write_text(to_jsonl(train))
    valid_file.write_text(to_jsonl(valid))
    padded, tokens = engine_tokens_per_second(folder / "padded", model_dir, train_file, valid_file, epochs,
                                              max_seq_length=1024)
    packed, _ = engine_tokens_per_second(folder / "packed", model_dir, train_file, valid_file, epochs,
                                         packing=True, max_seq_length=1024)
    print(f"{label}: padded {padded:,.0f} tokens/s, packed {packed:,.0f} tokens/s ({tokens} tokens)",
          flush=True)
    return packed / padded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=None, help="training lines (tiny: 480, smollm2: 160)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (tiny: 6, smollm2: 2)")
    options = parser.parse_args()
    real = options.model == "smollm2"
    options.train = options.train or (160 if real else 480)
    options.rounds = options.rounds or (2 if real else 6)
    peak = matmul_peak()

    from transformers import AutoTokenizer

    from training.demo_data import corpus_texts, make_demo_data, to_jsonl
    from training.demo_model import build_tiny_model
    from training.engine.data import read_jsonl, sft_rows

    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        if real:
            model_dir = smollm2_folder(root)
        else:
            model_dir = root / "attune-tiny"
            build_tiny_model(model_dir, corpus_texts(0), seed=0, pretrain_steps=0)
        train, valid, _ = make_demo_data(0)
        train = train[: options.train]
        train_file, valid_file = root / "train.jsonl", root / "valid.jsonl"
        train_file.write_text(to_jsonl(train))
        valid_file.write_text(to_jsonl(valid))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_rows, _ = sft_rows(tokenizer, read_jsonl(train_file, "t"), 1024, "t")
        valid_rows, _ = sft_rows(tokenizer, read_jsonl(valid_file, "v"), 1024, "v")

        warm = root / "warm-up"
        warm.mkdir()
        engine_tokens_per_second(warm, model_dir, train_file, valid_file, 1)  # imports, allocator, caches
        bare = engine = 0.0
        for round_ in range(options.rounds):
            folder = root / f"round-{round_}"
            (folder / "bare").mkdir(parents=True)
            (folder / "engine").mkdir()

            def run_bare(folder=folder):
                return bare_tokens_per_second(folder / "bare", model_dir, train_rows, valid_rows, options.epochs)

            def run_engine(folder=folder):
                return engine_tokens_per_second(folder / "engine", model_dir, train_file, valid_file,
                                                options.epochs)

            # Alternate which goes first, so neither always inherits the other's leftovers.
            if round_ % 2:
                (engine_speed, engine_tokens), (bare_speed, bare_tokens) = run_engine(), run_bare()
            else:
                (bare_speed, bare_tokens), (engine_speed, engine_tokens) = run_bare(), run_engine()
            bare, engine = max(bare, bare_speed), max(engine, engine_speed)
            print(f"round {round_ + 1}: bare {bare_speed:,.0f}, engine {engine_speed:,.0f} tokens/s", flush=True)
        print(f"bare Trainer: {bare:,.0f} tokens/s ({bare_tokens} tokens)")
        print(f"engine:       {engine:,.0f} tokens/s ({engine_tokens} tokens)")

        peak = max(peak, matmul_peak())
        utilisation = engine * lora_flops_per_token(model_dir) / (peak * 1e9)
        demo = packing_speedup(root, model_dir, train, valid, options.epochs, "demo intent data")
        chats = conversations(0, len(train) // 4)
        mixed = packing_speedup(root, model_dir, chats[: len(chats) * 7 // 8], chats[len(chats) * 7 // 8:],
                                options.epochs, "mixed-length conversations")
    print(f"model: {options.model}, {len(train)} training lines")
    print(f"packing speed-up on the demo intent data (uniform, about 50 tokens): {demo:.2f}x")
    print(f"model FLOPs utilisation: {utilisation:.0%} of the float32 matmul peak ({peak:.0f} GFLOP/s)")
    print(f"engine/bare tokens/s ratio: {engine / bare:.3f}")
    print(f"packing speed-up: {mixed:.2f}x")


if __name__ == "__main__":
    main()

"""What the engine costs over a bare transformers Trainer, and what packing buys.

Runs, in this one process, on the demo data and a freshly built attune-tiny
(no pre-training; speed does not depend on it):

1. the engine (`training.engine.run.main`) with a LoRA spec, padding;
2. a bare script: transformers `Trainer` + PEFT on the same tokenized rows,
   same hyperparameters, with the full validation set evaluated at each epoch
   end (`eval_strategy="epoch"`), no checkpoints;
3. the engine again with `packing: true`.

Throughput = trained (non-padding) tokens / wall seconds of training,
validation included. For the engine the clock runs from its `started` line
to its `done` line (so it includes sampled and full evaluations and the
epoch checkpoint); for the bare script it is `trainer.train()`.

    python bench/train_overhead.py [--epochs 1] [--train 480]

The last two lines are the figures:
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
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed
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
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(valid_rows), data_collator=collator)
    begin = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - begin
    tokens = sum(len(r["input_ids"]) for r in train_rows) * epochs
    return tokens / seconds, tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=480)
    options = parser.parse_args()

    from transformers import AutoTokenizer

    from training.demo_data import corpus_texts, make_demo_data, to_jsonl
    from training.demo_model import build_tiny_model
    from training.engine.data import read_jsonl, sft_rows

    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        model_dir = root / "attune-tiny"
        build_tiny_model(model_dir, corpus_texts(0), seed=0, pretrain_steps=0)
        train, valid, _ = make_demo_data(0)
        train_file, valid_file = root / "train.jsonl", root / "valid.jsonl"
        train_file.write_text(to_jsonl(train[: options.train]))
        valid_file.write_text(to_jsonl(valid))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_rows, _ = sft_rows(tokenizer, read_jsonl(train_file, "t"), 1024, "t")
        valid_rows, _ = sft_rows(tokenizer, read_jsonl(valid_file, "v"), 1024, "v")

        for name in ("engine", "bare", "packed"):
            (root / name).mkdir()
        bare, bare_tokens = bare_tokens_per_second(root / "bare", model_dir, train_rows, valid_rows,
                                                   options.epochs)
        engine, engine_tokens = engine_tokens_per_second(root / "engine", model_dir, train_file, valid_file,
                                                         options.epochs)
        packed, _ = engine_tokens_per_second(root / "packed", model_dir, train_file, valid_file, options.epochs,
                                             packing=True, max_seq_length=1024)
    print(f"bare Trainer: {bare:,.0f} tokens/s ({bare_tokens} tokens)")
    print(f"engine:       {engine:,.0f} tokens/s ({engine_tokens} tokens)")
    print(f"engine, packing: {packed:,.0f} tokens/s")
    print(f"engine/bare tokens/s ratio: {engine / bare:.3f}")
    print(f"packing speed-up: {packed / engine:.2f}x")


if __name__ == "__main__":
    main()

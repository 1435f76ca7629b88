"""LoRA against QLoRA on one GPU: the engine's tokens/s against a bare transformers Trainer, and peak memory.

Runs, in this one process, on smollm2-135m (SmolLM2-135M-Instruct: ATTUNE_HOME/models/smollm2-135m when
`make setup` built it, else a conversion of the packaged GGUF file), the demo intent data:

- LoRA: the engine (`training.engine.run.main`, `quantization: none`) and a bare script (`Trainer` + PEFT on
  the same tokenized rows, same hyperparameters): fp32 weights under bf16 autocast, SDPA attention.
- QLoRA: the same with `quantization: 4bit` (NF4, double quantization, bf16 compute), the bare script
  loading through `BitsAndBytesConfig` and `prepare_model_for_kbit_training` as the engine does.

Throughput = trained (non-padding) tokens / wall seconds of training; for the engine from its `started` line
to its `done` line (evaluations and the epoch checkpoint included), for the bare script from
`on_train_begin` to the return of `trainer.train()` (a full-validation pass each epoch). Peak memory is
`torch.cuda.max_memory_allocated()` over each run, reset before it. One untimed engine run warms up first.
About 2 minutes on an H200; where there is no CUDA it says so and stops (status 0, for `make bench`).

    python bench/gpu_qlora.py [--epochs 2] [--train 480]

The last lines are the table and the engine/bare ratio of each.
"""

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.train_overhead import engine_tokens_per_second, smollm2_folder  # noqa: E402


def bare_tokens_per_second(folder, model_dir, train_rows, valid_rows, epochs, quantization):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    set_seed(0)
    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, quantization_config=config,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=8, per_device_eval_batch_size=8,
        num_train_epochs=epochs, learning_rate=1e-3, logging_steps=1, eval_strategy="epoch", bf16=True,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
    )

    class Clock(TrainerCallback):
        begin = None

        def on_train_begin(self, args, state, control, **kwargs):
            Clock.begin = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(valid_rows),
                      data_collator=DataCollatorForLanguageModeling(pad_token_id=0), callbacks=[Clock()])
    trainer.train()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - Clock.begin
    return sum(len(r["input_ids"]) for r in train_rows) * epochs / seconds


def measured(run):
    """(tokens/s, peak GiB) of one run."""
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    speed = run()
    return speed, torch.cuda.max_memory_allocated() / 2**30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=480, help="training lines of the demo intent data")
    options = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        # Status 0: `make bench` runs every benchmark, on CPU hosts too.
        print(f"bench/gpu_qlora.py skipped: it needs a CUDA GPU and this host has none (torch {torch.__version__}). "
              "Run it on a GPU host; the CPU figures are bench/train_overhead.py's.")
        return
    import bitsandbytes
    from transformers import AutoTokenizer

    from training.demo_data import make_demo_data, to_jsonl
    from training.engine.data import read_jsonl, sft_rows

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        model_dir = smollm2_folder(root)
        train, valid, _ = make_demo_data(0)
        train_file, valid_file = root / "train.jsonl", root / "valid.jsonl"
        train_file.write_text(to_jsonl(train[: options.train]))
        valid_file.write_text(to_jsonl(valid))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_rows, _ = sft_rows(tokenizer, read_jsonl(train_file, "t"), 1024, "t")
        valid_rows, _ = sft_rows(tokenizer, read_jsonl(valid_file, "v"), 1024, "v")

        (root / "warm-up").mkdir()
        engine_tokens_per_second(root / "warm-up", model_dir, train_file, valid_file, 1)
        results = {}
        for quantization in ("none", "4bit"):
            folder = root / quantization
            (folder / "engine").mkdir(parents=True)
            engine = measured(lambda folder=folder, q=quantization: engine_tokens_per_second(
                folder / "engine", model_dir, train_file, valid_file, options.epochs, quantization=q)[0])
            bare = measured(lambda folder=folder, q=quantization: bare_tokens_per_second(
                folder / "bare", model_dir, train_rows, valid_rows, options.epochs, q))
            results[quantization] = engine, bare
            print(f"{quantization}: engine {engine[0]:,.0f} tokens/s {engine[1]:.2f} GiB; "
                  f"bare {bare[0]:,.0f} tokens/s {bare[1]:.2f} GiB", flush=True)

    print(f"\nsmollm2-135m, {len(train_rows)} training lines × {options.epochs} epochs, batch 8, bf16, SDPA")
    print(f"{'':6} {'engine tok/s':>12} {'bare tok/s':>11} {'ratio':>6} {'engine GiB':>11} {'bare GiB':>9}")
    for quantization, label in (("none", "LoRA"), ("4bit", "QLoRA")):
        (engine, engine_gib), (bare, bare_gib) = results[quantization]
        print(f"{label:6} {engine:12,.0f} {bare:11,.0f} {engine / bare:6.3f} {engine_gib:11.2f} {bare_gib:9.2f}")


if __name__ == "__main__":
    main()

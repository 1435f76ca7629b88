"""What one GRPO step of Attune's engine costs against a bare TRL GRPOTrainer script.

Both run in this one process, on the same model (smollm2-135m by default, `--model tiny` for attune-tiny's
shape), the same reinforcement demo lines (training/demo_rft.py), the same reward and the same settings:
LoRA r 16 on all-linear, `--batch` completions a step, `--generations` per prompt, `--completion` tokens at
most, temperature 1, TRL's default loss, beta 0, float32 and no gradient checkpointing on a CPU (the
engine's device defaults; GRPOConfig's own are bf16 and checkpointing, `--trl-defaults`), no validation
file (so neither evaluates).

- the engine: `training.engine.run.main` with a reinforcement spec; the reward is the demo's `multi`
  grader (text_similarity and a python grader in its sandbox) through the graders package, with every
  figure the engine reports (per-grader scores, error rates) and its epoch checkpoint;
- the bare script: `GRPOTrainer` + PEFT with the same reward written as a plain Python function
  (`demo_rft.reward`).

A step's time is the time between two consecutive logged steps (the engine's `metrics` lines, the bare
trainer's `on_log`), so model loading and the checkpoint at the end count for neither; the first step
(warm-up) is left out, and each side keeps the median of its steps. The two alternate for `--rounds`
rounds (alternating which goes first), and each keeps its best round: on a shared machine the slower
rounds measure the neighbours.

    python bench/rft.py [--model smollm2|tiny] [--steps 6] [--rounds 2]

The last line is the figure: `engine/bare GRPO step ratio: R` (bare seconds per step / engine seconds per
step; goal ≥ 0.95).
"""

import argparse
import io
import json
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

SETTINGS = {"lora_r": 16, "lora_alpha": 32, "temperature": 1.0, "loss_type": "dapo", "beta": 0.0,
            "learning_rate_multiplier": 1.0}


def engine_step_seconds(folder, model_dir, train_file, options):
    from training.demo_rft import GRADER
    from training.engine.run import main

    spec = {"model": str(model_dir), "training_file": str(train_file), "method": "reinforcement",
            "grader": GRADER, "n_epochs": 1, "batch_size": options.batch, "num_generations": options.generations,
            "max_completion_length": options.completion, "seed": 0, "output_dir": str(folder / "job"),
            "compute_multiplier": 1.0, "reasoning_effort": "default", "eval_interval": 100000, "eval_samples": 1,
            **SETTINGS}
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    out = io.StringIO()
    assert main([str(path)], out) == 0, out.getvalue()[-500:]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    stamps = [line["ts"] for line in lines if line["type"] == "metrics"]
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def bare_step_seconds(folder, model_dir, rows, options):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from training.demo_rft import reward
    from training.engine.spec import BASE_LEARNING_RATE

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"],
                                             target_modules="all-linear", task_type="CAUSAL_LM"))

    def order_reward(prompts, completions, order_id, **_):
        return [reward(completion[0]["content"], number) for completion, number in zip(completions, order_id,
                                                                                       strict=True)]

    stamps = []

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                stamps.append(time.time())

    args = GRPOConfig(
        output_dir=str(folder / "bare"), per_device_train_batch_size=options.batch,
        num_generations=options.generations, max_completion_length=options.completion,
        temperature=SETTINGS["temperature"], loss_type=SETTINGS["loss_type"], beta=SETTINGS["beta"],
        learning_rate=BASE_LEARNING_RATE["reinforcement"]["lora"], num_train_epochs=1, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=True,
        dataloader_num_workers=0,
        # The engine's CPU settings. GRPOConfig's own defaults (bf16, gradient checkpointing) are slower
        # on a CPU without native bf16: `--trl-defaults` measures them.
        bf16=options.trl_defaults, gradient_checkpointing=options.trl_defaults)
    dataset = Dataset.from_list([{"prompt": row["messages"], "order_id": row["order_id"]} for row in rows])
    trainer = GRPOTrainer(model=model, reward_funcs=[order_reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--steps", type=int, default=6, help="steps a run (the first is a warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="completions a step")
    parser.add_argument("--generations", type=int, default=8, help="completions a prompt")
    parser.add_argument("--completion", type=int, default=16, help="longest completion in tokens")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="the bare script with GRPOConfig's bf16 and gradient checkpointing")
    options = parser.parse_args()

    from train_overhead import smollm2_folder

    from training.demo_data import corpus_texts, to_jsonl
    from training.demo_model import build_tiny_model
    from training.demo_rft import make_rft_data

    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        if options.model == "smollm2":
            model_dir = smollm2_folder(root)
        else:
            model_dir = root / "attune-tiny"
            build_tiny_model(model_dir, corpus_texts(0), seed=0, pretrain_steps=0)
        prompts = options.steps * options.batch // options.generations
        rows = make_rft_data(0, n_train=max(prompts, 10), n_valid=0, n_heldout=0)[0][:prompts]
        train_file = root / "train.jsonl"
        train_file.write_text(to_jsonl(rows))
        engine, bare = [], []
        for round_number in range(options.rounds):
            order = ("engine", "bare") if round_number % 2 == 0 else ("bare", "engine")
            for side in order:
                folder = root / f"{side}-{round_number}"
                folder.mkdir()
                if side == "engine":
                    engine.append(engine_step_seconds(folder, model_dir, train_file, options))
                else:
                    bare.append(bare_step_seconds(folder, model_dir, rows, options))
                print(f"round {round_number + 1}: {side} {(engine if side == 'engine' else bare)[-1]:.2f} s/step",
                      flush=True)
    print(f"model {options.model}: {options.batch} completions a step ({options.generations} a prompt, at most "
          f"{options.completion} tokens); best engine {min(engine):.2f} s/step, best bare {min(bare):.2f} s/step")
    print(f"engine/bare GRPO step ratio: {min(bare) / min(engine):.2f}")


if __name__ == "__main__":
    main()

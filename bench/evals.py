"""What an eval run pays for scoring 4 checkpoints at once against 1, generated and graded, in one process.

    .venv/bin/python bench/evals.py [--prompts 100] [--max-tokens 16] [--rounds 3] [--base FOLDER]

A base of attune-tiny's shape (built here, no download; or `--base`, a model folder such as
var/models/smollm2-135m) and 4 LoRA checkpoints of one job (rank 8, random non-zero weights, as
bench/compare.py makes them) are scored by one eval: `string_check` against the label and a `python`
grader, on `--prompts` prompts (the demo's held-out and validation prompts), greedy decoding. Each
round queues and works through, in an order that alternates:

- 1 checkpoint × N prompts: one run;
- 4 checkpoints × N prompts: four runs of the same data source, which the eval worker claims together
  and generates in shared batches (one request of 4 snapshots per prompt).

The models are loaded and warmed up first. The ratio is taken within each round and the median counts.
Then the graders' own cost per item, for string_check and python, against the generation time per item.
The last line:

    4 checkpoints vs 1 checkpoint: N.NNx          (goal N <= 1.6)
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _django  # noqa: E402

PYTHON_GRADER = {"type": "python", "name": "short", "pass_threshold": 1,
                 "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 24 else 0.0\n"}
LABEL = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
         "reference": "{{item.expected}}", "operation": "eq"}


def prompts(n):
    from training.demo_data import make_demo_data

    _train, valid, heldout = make_demo_data()
    rows = []
    for example in heldout + valid:
        if "expected" in example:
            rows.append({"messages": example["messages"], "expected": example["expected"]})
        else:
            *prompt, answer = example["messages"]
            rows.append({"messages": prompt, "expected": answer["content"]})
    while len(rows) < n:
        rows += rows
    return [{"item": row} for row in rows[:n]]


def register(base, adapters):
    from django.conf import settings

    from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob

    model = BaseModel.objects.create(name="bench-base", source=str(base), has_chat_template=True)
    data = DataFile.objects.create(filename="train.jsonl", path="train.jsonl", status="processed", n_examples=1)
    job = FineTuningJob.objects.create(base_model=model, training_file=data, suffix="bench", status="succeeded")
    return [Checkpoint.objects.create(job=job, epoch=n, step=10 * n, path=str(folder.relative_to(settings.ATTUNE_HOME)))
            for n, folder in enumerate(adapters, 1)]


def make_eval(rows, max_tokens):
    from evals.models import Eval
    from evals.requests import eval_fields

    return Eval.objects.create(**eval_fields({
        "name": "bench", "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
        "testing_criteria": [LABEL, PYTHON_GRADER],
        "attune": {"data_source": {"source": {"type": "file_content", "content": rows},
                                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                                   "sampling_params": {"max_completion_tokens": max_tokens, "temperature": 0}}}}))


def timed_runs(evaluation, checkpoints):
    """Queue one run per checkpoint and work through the queue; (seconds, the runs)."""
    from evals.models import EvalRun
    from evals.runner import EvalWorker

    runs = []
    for checkpoint in checkpoints:
        data_source = {**evaluation.epoch_data_source, "model": checkpoint.model_name}
        runs.append(EvalRun.objects.create(eval=evaluation, model=checkpoint.model_name, data_source=data_source,
                                           checkpoint=checkpoint, base_model=checkpoint.job.base_model.name,
                                           batch_key=EvalRun.key_for(evaluation, data_source)))
    worker = EvalWorker(name="bench")
    started = time.perf_counter()
    groups = 0
    while worker.poll_once():
        groups += 1
    elapsed = time.perf_counter() - started
    assert groups == 1, f"the runs were claimed in {groups} groups"
    for run in runs:
        run.refresh_from_db()
        assert run.status == EvalRun.COMPLETED, (run.status, run.error)
    return elapsed, runs


def grader_cost(runs):
    """ms per item of each grader alone, over the samples the runs generated."""
    from graders import grade_items

    pairs = [(item.sample["output_text"], item.datasource_item) for run in runs for item in run.items.all()]
    out = {}
    for grader in (LABEL, PYTHON_GRADER):
        started = time.perf_counter()
        grade_items(grader, pairs)
        out[grader["type"]] = (time.perf_counter() - started) * 1000 / len(pairs)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", type=Path, default=None, help="A model folder to use as the base.")
    args = parser.parse_args()

    _django.setup("attune-bench-evals-")
    from compare import build
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    base, adapters = build(settings.ATTUNE_HOME / "bench-models", base=args.base)
    checkpoints = register(base, adapters[:4])
    rows = prompts(args.prompts)
    evaluation = make_eval(rows, args.max_tokens)
    print(f"{len(rows)} prompts, {args.max_tokens} tokens at most, base {base.name}", flush=True)
    warm = make_eval(rows[:2], args.max_tokens)
    timed_runs(warm, checkpoints)  # loads the base and the adapters

    ratios, last_runs, one_times, four_times = [], [], [], []
    for n in range(args.rounds):
        order = ["one", "four"] if n % 2 == 0 else ["four", "one"]
        times = {}
        for case in order:
            times[case], runs = timed_runs(evaluation, checkpoints[:1] if case == "one" else checkpoints)
            if case == "four":
                last_runs = runs
        one_times.append(times["one"])
        four_times.append(times["four"])
        ratios.append(times["four"] / times["one"])
        print(f"round {n + 1}: 1 checkpoint {times['one']:.1f} s, 4 checkpoints {times['four']:.1f} s, "
              f"ratio {ratios[-1]:.2f}", flush=True)
    per_item_ms = statistics.median(one_times) * 1000 / len(rows)
    cost = grader_cost(last_runs)
    print(f"generation and grading per item, 1 checkpoint: {per_item_ms:.1f} ms")
    for kind, ms in cost.items():
        print(f"grader {kind}: {ms:.3f} ms per item ({ms / per_item_ms:.2%} of an item's time)")
    print(f"4 checkpoints vs 1 checkpoint: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()

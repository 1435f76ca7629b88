"""The engine's reinforcement method (TRL's GRPOTrainer, the job's grader as the reward), on the tiny test
model: the lines it prints, checkpoints, a crashing python grader, response_format, pause and resume after a
kill reproducing the straight run. Whether it teaches a task is tests/training/test_rft_outcome.py's."""

import json
import signal
import subprocess

import pytest

from tests.training.engine_helpers import (
    REPO,
    engine_command,
    engine_env,
    of_type,
    read_until,
    run_in_process,
    run_subprocess,
    write_jsonl,
    write_spec,
)

torch = pytest.importorskip("torch")

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
         "reference": "{{item.intent}}", "operation": "eq"}
SHORT = {"type": "python", "name": "short",
         "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 12 else 0.0\n"}
MULTI = {"type": "multi", "name": "intent", "graders": {"exact": EXACT, "short": SHORT},
         "calculate_output": "0.5 * exact + 0.5 * short"}


def rft_lines(rows):
    return [{"messages": r["messages"][:-1], "intent": r["messages"][-1]["content"]} for r in rows]


@pytest.fixture
def rft_files(tmp_path):
    from training.demo_data import make_demo_data

    train, valid, _ = make_demo_data(0)
    return (write_jsonl(tmp_path / "train.jsonl", rft_lines(train[:16])),
            write_jsonl(tmp_path / "valid.jsonl", rft_lines(valid[:6])))


def rft_spec(folder, tiny_model, files, **fields):
    values = {"method": "reinforcement", "grader": MULTI, "n_epochs": 2, "batch_size": 8, "num_generations": 4,
              "max_completion_length": 6, "eval_interval": 4, "eval_samples": 3, "learning_rate_multiplier": 20,
              "beta": 0.0, "compute_multiplier": 1.0, "reasoning_effort": "default", **fields}
    return write_spec(folder, model=str(tiny_model), training_file=str(files[0]), validation_file=str(files[1]),
                      **values)


def test_a_line_that_does_not_end_with_a_user_turn_is_named(tmp_path, tiny_model, rft_files):
    from training.demo_data import make_demo_data

    rows = rft_lines(make_demo_data(0)[0][:12])
    rows[4]["messages"].append({"role": "assistant", "content": "cancel"})
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    status, lines = run_in_process(rft_spec(tmp_path, tiny_model, (bad, rft_files[1])))
    assert status == 1
    assert lines[-1]["code"] == "invalid_file" and "training_file line 5" in lines[-1]["message"]


def test_a_grader_the_engine_cannot_use_is_invalid_grader(tmp_path, tiny_model, rft_files):
    broken = {"type": "string_check", "name": "x", "input": "{{sample.output_text}}", "reference": "a",
              "operation": "nearly"}
    status, lines = run_in_process(rft_spec(tmp_path, tiny_model, rft_files, grader=broken))
    assert status == 1 and lines[-1]["code"] == "invalid_grader" and "grader.operation" in lines[-1]["message"]


def test_reasoning_effort_that_the_model_has_no_use_for_is_said(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from training.engine.rft import reasoning_effort_kwargs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert reasoning_effort_kwargs(tokenizer, "default") == ({}, None)
    kwargs, sentence = reasoning_effort_kwargs(tokenizer, "high")
    assert kwargs == {} and "means nothing for this model" in sentence
    tokenizer.chat_template = "{{ reasoning_effort }}" + tokenizer.chat_template
    assert reasoning_effort_kwargs(tokenizer, "low")[0] == {"reasoning_effort": "low"}


@pytest.mark.slow
def test_a_lora_run_reports_rewards_per_grader_and_checkpoints_every_epoch(tmp_path, tiny_model, rft_files):
    from training.engine.evaluate import load_for_inference
    from training.engine.rft import Grading, rft_rows
    from training.engine.spec import parse_spec

    status, lines = run_in_process(rft_spec(tmp_path, tiny_model, rft_files, reasoning_effort="high"))
    assert status == 0, lines[-1]
    started = of_type(lines, "started")[0]
    # 16 prompts, 2 a step (8 completions, 4 each): 8 steps an epoch.
    assert started["total_steps"] == 16 and started["steps_per_epoch"] == 8
    assert any("means nothing for this model" in l["text"] for l in of_type(lines, "message"))
    metrics = of_type(lines, "metrics")
    assert [m["step"] for m in metrics] == list(range(1, 17))
    for m in metrics:
        assert 0 <= m["train_mean_reward"] <= 1 and 0 <= m["frac_reward_zero_std"] <= 1
        assert set(m["train_grader_scores"]) == {"exact", "short", "intent"}
        # The multi's reward is its formula over the sub-graders' means.
        scores = m["train_grader_scores"]
        assert scores["intent"] == pytest.approx(0.5 * scores["exact"] + 0.5 * scores["short"], abs=1e-6)
        assert m["train_mean_reward"] == pytest.approx(scores["intent"], abs=1e-6)
        assert 1 <= m["completion_tokens_mean"] <= 6
        assert m["train_parse_error_rate"] == 0 and m["train_grader_error_rate"] == 0
        assert "train_mean_token_accuracy" not in m
    assert [l["step"] for l in of_type(lines, "eval", scope="sampled")] == [4, 8, 12, 16]
    checkpoints = of_type(lines, "checkpoint")
    assert [(c["epoch"], c["step"]) for c in checkpoints] == [(1, 8), (2, 16)]
    for checkpoint in checkpoints:
        assert {"train_mean_reward", "valid_reward_mean", "full_valid_mean_reward", "full_valid_mean_parse_error",
                "frac_reward_zero_std", "completion_tokens_mean", "full_valid_grader_scores"} <= set(
            checkpoint["metrics"])
        assert (tmp_path / "job/checkpoints" / f"epoch-{checkpoint['epoch']}-step-{checkpoint['step']}"
                / "adapter_model.safetensors").exists()
    assert lines[-1]["type"] == "done" and lines[-1]["trained_tokens"] > 0

    # The full validation's reward is the grader's over the checkpoint's greedy answers, graded again here.
    model, tokenizer = load_for_inference(checkpoints[-1]["path"], tiny_model)
    rows = rft_rows([json.loads(l) for l in rft_files[1].read_text().splitlines()], "validation_file")
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    output = model.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    grading = Grading(parse_spec({"model": "m", "training_file": "t", "method": "reinforcement",
                                  "grader": MULTI}), reporter=None)
    figures = grading.figures(grading.grade(texts, [json.loads(r["item"]) for r in rows]))
    full = of_type(lines, "eval", scope="full")[-1]
    assert full["full_valid_mean_reward"] == pytest.approx(figures["reward"], abs=1e-6)
    assert full["full_valid_grader_scores"] == pytest.approx(figures["grader_scores"], abs=1e-6)


@pytest.mark.slow
def test_a_python_grader_that_crashes_on_some_answers_is_counted_not_fatal(tmp_path, tiny_model, rft_files):
    flaky = {"type": "python", "name": "flaky",
             "source": "def grade(sample, item):\n    if item['intent'] in ('cancel', 'refund', 'tracking'):\n"
                       "        raise ValueError('no score for ' + item['intent'])\n    return 0.5\n"}
    status, lines = run_in_process(rft_spec(tmp_path, tiny_model, rft_files, grader=flaky, n_epochs=1))
    assert status == 0 and lines[-1]["type"] == "done"
    rates = [m["train_grader_error_rate"] for m in of_type(lines, "metrics")]
    assert all(0 <= rate <= 1 for rate in rates) and 0 < sum(rates) < len(rates)
    assert any(m["train_errors"].get("python_grader_runtime_error") for m in of_type(lines, "metrics"))
    warnings = [l["text"] for l in of_type(lines, "message", level="warn")]
    assert any("Grader 'flaky' could not score" in w and "no score for" in w for w in warnings)
    # Said once, not on every step.
    assert sum("Grader 'flaky'" in w for w in warnings) < 4


@pytest.mark.slow
def test_answers_that_break_the_response_format_score_zero_as_parse_errors(tmp_path, tiny_model, rft_files):
    response_format = {"type": "json_schema", "json_schema": {"name": "intent", "schema": {
        "type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}}}
    status, lines = run_in_process(rft_spec(tmp_path, tiny_model, rft_files, response_format=response_format,
                                            n_epochs=1, grader=SHORT))
    assert status == 0
    # The untrained tiny model never writes that JSON: every answer is a parse error and scores 0.
    for m in of_type(lines, "metrics"):
        assert m["train_parse_error_rate"] == 1 and m["train_mean_reward"] == 0
    full = of_type(lines, "eval", scope="full")[-1]
    assert full["full_valid_mean_parse_error"] == 1 and full["full_valid_mean_reward"] == 0


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_resume_after_a_kill_reproduces_the_straight_run(tmp_path, tiny_model, rft_files):
    (tmp_path / "a").mkdir()
    status, reference, _ = run_subprocess(rft_spec(tmp_path / "a", tiny_model, rft_files))
    assert status == 0

    (tmp_path / "b").mkdir()
    spec = rft_spec(tmp_path / "b", tiny_model, rft_files)
    proc = subprocess.Popen(engine_command(spec), cwd=REPO, env=engine_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    first = read_until(proc, "checkpoint", epoch=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    status, resumed, _ = run_subprocess(spec, "--resume")
    assert status == 0
    assert any(l["text"].startswith("Resuming from epoch-1-step-8") for l in of_type(resumed, "message"))
    assert [c["epoch"] for c in of_type(resumed, "checkpoint")] == [2]
    by_step = {m["step"]: m for m in of_type(reference, "metrics")}
    for m in of_type(resumed, "metrics"):
        # The same completions were sampled, so the same rewards came back.
        assert m["train_mean_reward"] == pytest.approx(by_step[m["step"]]["train_mean_reward"], abs=1e-6), m["step"]
    assert min(m["step"] for m in of_type(resumed, "metrics")) == 9
    # Epoch 2's weights: the resumed run lands where the straight one did, to within a small share of how
    # far epoch 2 moved them (float sums in another order differ in the last bits, which Adam carries on).
    straight = _adapter(tmp_path / "a/job/checkpoints/epoch-2-step-16")
    again = _adapter(tmp_path / "b/job/checkpoints/epoch-2-step-16")
    epoch_1 = _adapter(tmp_path / "a/job/checkpoints/epoch-1-step-8")
    moved = sum(float((straight[n] - epoch_1[n]).norm() ** 2) for n in straight) ** 0.5
    apart = sum(float((straight[n] - again[n]).norm() ** 2) for n in straight) ** 0.5
    assert moved > 0 and apart < 0.02 * moved, (apart, moved)
    assert first[-1]["type"] == "checkpoint"


@pytest.mark.slow
def test_pause_and_resume_finish_the_run(tmp_path, tiny_model, rft_files):
    spec = rft_spec(tmp_path, tiny_model, rft_files, adapter="full", learning_rate_multiplier=1)
    proc = subprocess.Popen(engine_command(spec), cwd=REPO, env=engine_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    before = read_until(proc, "metrics", step=2)
    proc.send_signal(signal.SIGUSR1)
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 0
    step = of_type(rest, "paused")[0]["step"]
    status, resumed, _ = run_subprocess(spec, "--resume")
    assert status == 0 and resumed[-1]["type"] == "done"
    assert min(m["step"] for m in of_type(resumed, "metrics")) == step + 1
    assert [c["epoch"] for c in of_type(before + rest + resumed, "checkpoint")] == [1, 2]
    # Full fine-tuning: the checkpoint holds the whole model's weights.
    assert (tmp_path / "job/checkpoints/epoch-2-step-16/model.safetensors").exists()

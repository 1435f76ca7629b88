"""Fine-tuning works on the real pretrained demo base, smollm2-135m (SmolLM2-135M-Instruct), on a CPU:

- the demo spec on the demo intents takes the base from no right answers to at least 95 % by the end of its
  first epoch, on held-out prompts whose wordings the training file never shows (the test stops the engine
  at that epoch's checkpoint: the second epoch's 50 steps would take about three more minutes);
- DPO with every hyperparameter at `auto` moves it towards a preferred style (the bare answer, not the
  sentence around it that it writes by habit) on held-out questions, without collapsing to empty answers.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.training.engine_helpers import REPO

pytestmark = pytest.mark.slow

# The spec the README gives for the demo on smollm2-135m: 2 epochs at 2.5 × the LoRA base rate (5e-4),
# every other hyperparameter at auto (batch 8).
DEMO_SPEC = {"n_epochs": 2, "learning_rate_multiplier": 2.5, "eval_interval": 1000}


def run_engine(spec, folder, timeout=900):
    (folder / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "training.engine", str(folder / "spec.json")], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline"),
                          capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    done = [line for line in lines if line["type"] == "done"]
    assert proc.returncode == 0 and done, proc.stderr[-3000:]
    return lines, done[-1]


def run_engine_until_checkpoint(spec, folder, epoch, timeout=900):
    """Run the engine on `spec` until it has written the checkpoint of `epoch`, then stop it: the lines so
    far, the last of them that checkpoint's."""
    (folder / "spec.json").write_text(json.dumps(spec))
    with open(folder / "engine-stderr.log", "w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "training.engine", str(folder / "spec.json")], cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline"),
                                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        lines = []
        try:
            for raw in proc.stdout:
                lines.append(json.loads(raw))
                if lines[-1]["type"] == "checkpoint" and lines[-1]["epoch"] == epoch:
                    return lines, lines[-1]
                assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} in {timeout} s"
            proc.wait()
            stderr.seek(0)
            raise AssertionError(f"the engine exited with {proc.returncode} before the checkpoint of epoch "
                                 f"{epoch}:\n{stderr.read()[-3000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()


def test_the_demo_fine_tune_teaches_the_real_model_the_intents(demo_home_template, tmp_path):
    from training.engine.evaluate import exact_match

    base = demo_home_template / "models" / "smollm2-135m"
    demo = demo_home_template / "demo"
    spec = {"model": str(base), "training_file": str(demo / "demo-intents-train.jsonl"),
            "validation_file": str(demo / "demo-intents-valid.jsonl"), "output_dir": str(tmp_path / "job"),
            **DEMO_SPEC}
    started = time.monotonic()
    lines, epoch_1 = run_engine_until_checkpoint(spec, tmp_path, epoch=1)
    print(f"demo fine-tune on smollm2-135m, epoch 1 of 2: {time.monotonic() - started:.0f} s")
    # The demo's own schedule (2 epochs of 50 steps, its learning rate decaying over both), not a 1-epoch run.
    run = next(line for line in lines if line["type"] == "started")
    assert (run["n_epochs"], run["steps_per_epoch"], run["total_steps"]) == (2, 50, 100)
    assert epoch_1["step"] == 50

    heldout = [json.loads(line) for line in (demo / "demo-intents-heldout.jsonl").open()]
    assert len(heldout) >= 50
    before, after = exact_match(str(base), str(base), heldout), exact_match(epoch_1["path"], str(base), heldout)
    print(f"demo held-out exact match on smollm2-135m: base {before:.0%}, epoch 1 of the fine-tune {after:.0%}")
    assert before <= 0.2 and after >= 0.95


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Spain": "Madrid", "Italy": "Rome", "Portugal": "Lisbon",
    "Ireland": "Dublin", "Austria": "Vienna", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Sweden": "Stockholm", "Norway": "Oslo", "Denmark": "Copenhagen", "Finland": "Helsinki", "Poland": "Warsaw",
    "Greece": "Athens", "Hungary": "Budapest", "Egypt": "Cairo", "Kenya": "Nairobi", "Japan": "Tokyo",
    "China": "Beijing", "Thailand": "Bangkok", "Indonesia": "Jakarta", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Russia": "Moscow", "South Korea": "Seoul",
    "Iran": "Tehran", "Cuba": "Havana", "Colombia": "Bogota", "Philippines": "Manila", "Vietnam": "Hanoi",
    "Ukraine": "Kyiv", "Czech Republic": "Prague", "Romania": "Bucharest", "Iceland": "Reykjavik",
    "Morocco": "Rabat", "Ethiopia": "Addis Ababa", "Nepal": "Kathmandu",
}
HELDOUT_CAPITALS = {
    "United Kingdom": "London", "Canada": "Ottawa", "Australia": "Canberra", "India": "New Delhi",
    "Brazil": "Brasilia", "Turkey": "Ankara", "Switzerland": "Bern", "Nigeria": "Abuja",
    "Pakistan": "Islamabad", "Venezuela": "Caracas", "Bulgaria": "Sofia", "Scotland": "Edinburgh",
}


def question(country):
    return [{"role": "user", "content": f"What is the capital of {country}?"}]


def preference_pairs(capitals):
    """The bare answer preferred to the sentence SmolLM2 answers with by habit."""
    return "".join(json.dumps({
        "input": {"messages": question(country)},
        "preferred_output": [{"role": "assistant", "content": f"{capital}."}],
        "non_preferred_output": [{"role": "assistant", "content": f"The capital of {country} is {capital}."}],
    }) + "\n" for country, capital in capitals.items())


def test_dpo_with_auto_moves_the_real_model_towards_the_preferred_style_without_empty_answers(demo_home_template,
                                                                                           tmp_path):
    from training.engine.evaluate import greedy_answers, load_for_inference

    assert not set(HELDOUT_CAPITALS) & set(CAPITALS)
    base = demo_home_template / "models" / "smollm2-135m"
    (tmp_path / "pairs.jsonl").write_text(preference_pairs(CAPITALS))
    (tmp_path / "heldout-pairs.jsonl").write_text(preference_pairs(HELDOUT_CAPITALS))
    spec = {"model": str(base), "method": "dpo", "training_file": str(tmp_path / "pairs.jsonl"),
            "validation_file": str(tmp_path / "heldout-pairs.jsonl"), "output_dir": str(tmp_path / "job")}
    started = time.monotonic()
    lines, done = run_engine(spec, tmp_path)
    hyper = next(line for line in lines if line["type"] == "started")["resolved"]
    # 40 pairs: 3 epochs, 8 pairs a step (DPO's floor), DPO's LoRA rate of 2e-5, beta 0.1.
    assert (hyper["n_epochs"], hyper["batch_size"], hyper["learning_rate"], hyper["beta"]) == (3, 8, 2e-5, 0.1)
    full = [line for line in lines if line["type"] == "eval" and line["scope"] == "full"]
    margins = [line["full_valid_reward_margin"] for line in full]
    print(f"DPO on smollm2-135m: {time.monotonic() - started:.0f} s; held-out reward margin by epoch "
          f"{[round(m, 2) for m in margins]}, accuracy {full[-1]['full_valid_reward_accuracy']}")
    # On held-out questions the trained policy prefers the bare answer, relative to the base, on (nearly)
    # every pair, and more with each epoch.
    assert full[-1]["full_valid_reward_accuracy"] >= 0.9 and 0 < margins[0] < margins[-1]

    model, tokenizer = load_for_inference(str(base), str(base))
    before = greedy_answers(model, tokenizer, [question(c) for c in HELDOUT_CAPITALS], max_new_tokens=32)
    model, tokenizer = load_for_inference(done["final_checkpoint"], str(base))
    after = greedy_answers(model, tokenizer, [question(c) for c in HELDOUT_CAPITALS], max_new_tokens=32)
    print("held-out answers, base → DPO:", list(zip(before, after, strict=True)))
    assert all(answer.strip() for answer in after)  # no collapse to ending at once
    assert words(after) < words(before)  # and no longer-winded than before


def words(answers):
    return sum(len(answer.split()) for answer in answers)

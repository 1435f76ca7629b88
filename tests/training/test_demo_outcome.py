"""Fine-tuning attune-tiny on the demo intents teaches it the task.

This trains the README's spec for attune-tiny with the real engine, on the model and files that
`bootstrap_demo` ships, and scores greedy exact match on the validation prompts: the training file's
wordings with slot values in combinations it never shows. attune-tiny knows no language, so wordings it
never saw (the held-out prompts, which smollm2-135m answers: test_real_model_outcome.py) are beyond it.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.training.engine_helpers import REPO

# The spec the README recommends for the demo (the figure it quotes comes from this spec).
DEMO_SPEC = {"adapter": "lora", "n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 10,
             "lora_r": 16, "lora_alpha": 32, "eval_interval": 1000}


@pytest.mark.slow
def test_lora_on_the_demo_intents_turns_attune_tiny_into_a_model_that_answers(demo_home_template, tmp_path):
    from training.engine.evaluate import exact_match

    base = demo_home_template / "models" / "attune-tiny"
    demo = demo_home_template / "demo"
    spec = {"model": str(base), "training_file": str(demo / "demo-intents-train.jsonl"),
            "validation_file": str(demo / "demo-intents-valid.jsonl"), "output_dir": str(tmp_path / "job"),
            **DEMO_SPEC}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "training.engine", str(tmp_path / "spec.json")], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline"),
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    done = [line for line in lines if line["type"] == "done"]
    assert proc.returncode == 0 and done, proc.stderr[-3000:]

    valid = [json.loads(line)["messages"] for line in (demo / "demo-intents-valid.jsonl").open()]
    heldout = [{"messages": messages[:-1], "expected": messages[-1]["content"]} for messages in valid]
    assert len(heldout) >= 50
    assert exact_match(str(base), str(base), heldout) < 0.2
    assert exact_match(done[-1]["final_checkpoint"], str(base), heldout) >= 0.95

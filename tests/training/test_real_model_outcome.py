"""Fine-tuning works on the real pretrained demo base, smollm2-135m (SmolLM2-135M-Instruct), on a CPU:
the demo spec on the demo intents takes the base from no right answers to most, on held-out prompts whose
wordings the training file never shows (measured 82 % after 2 epochs; the aim is 95 %).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.training.engine_helpers import REPO

pytestmark = pytest.mark.slow

# The spec the README gives for the demo on smollm2-135m: 2 epochs, every other hyperparameter at auto.
DEMO_SPEC = {"n_epochs": 2, "eval_interval": 1000}


def run_engine(spec, folder, timeout=900):
    (folder / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "training.engine", str(folder / "spec.json")], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline"),
                          capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    done = [line for line in lines if line["type"] == "done"]
    assert proc.returncode == 0 and done, proc.stderr[-3000:]
    return lines, done[-1]


def test_the_demo_fine_tune_teaches_the_real_model_the_intents(demo_home_template, tmp_path):
    from training.engine.evaluate import exact_match

    base = demo_home_template / "models" / "smollm2-135m"
    demo = demo_home_template / "demo"
    spec = {"model": str(base), "training_file": str(demo / "demo-intents-train.jsonl"),
            "validation_file": str(demo / "demo-intents-valid.jsonl"), "output_dir": str(tmp_path / "job"),
            **DEMO_SPEC}
    started = time.monotonic()
    lines, done = run_engine(spec, tmp_path)
    print(f"demo fine-tune on smollm2-135m: {time.monotonic() - started:.0f} s")

    heldout = [json.loads(line) for line in (demo / "demo-intents-heldout.jsonl").open()]
    assert len(heldout) >= 50
    before, after = exact_match(str(base), str(base), heldout), exact_match(done["final_checkpoint"], str(base), heldout)
    print(f"demo held-out exact match on smollm2-135m: base {before:.0%}, fine-tuned {after:.0%}")
    assert before <= 0.2 and after >= 0.7

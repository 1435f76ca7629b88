"""Shared set-up for the engine tests: a tiny model, small data files, running the engine."""

import io
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def build_test_model(folder, seed=0):
    """attune-tiny's architecture without its pre-training: a few seconds to build."""
    from training.demo_data import corpus_texts
    from training.demo_model import build_tiny_model

    build_tiny_model(pathlib.Path(folder), corpus_texts(seed), seed=seed, pretrain_steps=0)
    return pathlib.Path(folder)


def write_jsonl(path, rows):
    path = pathlib.Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def demo_files(folder, n_train=48, n_valid=16):
    from training.demo_data import make_demo_data

    train, valid, heldout = make_demo_data(0)
    folder = pathlib.Path(folder)
    return (write_jsonl(folder / "train.jsonl", train[:n_train]),
            write_jsonl(folder / "valid.jsonl", valid[:n_valid]))


def preference_rows(n):
    """DPO rows: prefer the right intent over a wrong one."""
    from training.demo_data import make_demo_data

    train, _, _ = make_demo_data(0)
    labels = sorted({r["messages"][-1]["content"] for r in train})
    rows = []
    for i, row in enumerate(train[:n]):
        right = row["messages"][-1]["content"]
        wrong = labels[(labels.index(right) + 1 + i % 3) % len(labels)]
        rows.append({"input": {"messages": row["messages"][:-1]},
                     "preferred_output": [{"role": "assistant", "content": right}],
                     "non_preferred_output": [{"role": "assistant", "content": wrong}]})
    return rows


def write_spec(folder, **fields):
    spec = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5, "eval_interval": 3,
            "eval_samples": 4, "seed": 0, "output_dir": str(pathlib.Path(folder) / "job"), **fields}
    path = pathlib.Path(folder) / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def run_in_process(spec_path, *extra):
    """Run the engine in this process; return (exit status, parsed lines)."""
    from training.engine.run import main

    out = io.StringIO()
    status = main([str(spec_path), *extra], out)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def engine_command(spec_path, *extra):
    return [sys.executable, "-m", "training.engine", str(spec_path), *extra]


def engine_env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return env


def run_subprocess(spec_path, *extra, timeout=300):
    proc = subprocess.run(engine_command(spec_path, *extra), cwd=REPO, env=engine_env(), capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def read_until(proc, kind, **match):
    """The engine's lines from `proc`'s stdout up to the first `kind` line matching `match`."""
    lines = []
    for raw in proc.stdout:
        line = json.loads(raw)
        lines.append(line)
        if line["type"] == kind and all(line.get(k) == v for k, v in match.items()):
            return lines
    raise AssertionError(f"the engine ended before a {kind} line: {lines[-1:]}")


def of_type(lines, kind, **match):
    return [l for l in lines if l["type"] == kind and all(l.get(k) == v for k, v in match.items())]

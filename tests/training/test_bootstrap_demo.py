import hashlib
import json
import shutil
import sqlite3

import pytest

from tests.servers import manage


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def demo_files(home):
    with sqlite3.connect(home / "attune.sqlite3") as db:
        return db.execute("select filename, n_examples, status, public_id from training_datafile "
                          "order by filename").fetchall()


@pytest.mark.slow
def test_the_demo_model_builder_is_deterministic_pre_training_included(tmp_path):
    # The same code path as bootstrap_demo, with fewer pre-training steps so it runs twice quickly.
    from training.demo_data import corpus_texts
    from training.demo_model import build_tiny_model

    for name in ("a", "b"):
        build_tiny_model(tmp_path / name, corpus_texts(), pretrain_steps=8)
    model_a, model_b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(model_a) and model_a == model_b


@pytest.mark.slow
def test_bootstrap_demo_is_deterministic_and_idempotent(demo_home_template, tmp_path):
    homes = [demo_home_template, tmp_path / "b"]
    # The second home builds nothing new: it gets the same model files, then must write the same data.
    shutil.copytree(demo_home_template / "models", homes[1] / "models")
    manage(homes[1], "migrate", "--noinput")
    manage(homes[1], "bootstrap_demo")
    model_a, model_b = (digest(h / "models" / "attune-tiny") for h in homes)
    assert "model.safetensors" in model_a and model_a == model_b
    smol_a, smol_b = (digest(h / "models" / "smollm2-135m") for h in homes)
    assert "model.safetensors" in smol_a and smol_a == smol_b
    assert digest(homes[0] / "demo") == digest(homes[1] / "demo")

    files = demo_files(homes[0])
    assert [(name, n, status) for name, n, status, _ in files] == [
        ("demo-intents-heldout.jsonl", 50, "processed"),  # the demo eval's prompts, an evals file
        ("demo-intents-rft-heldout.jsonl", 50, "processed"),  # eval_demo_rft's prompts, an evals file
        ("demo-intents-rft-train.jsonl", 110, "processed"), ("demo-intents-rft-valid.jsonl", 16, "processed"),
        ("demo-intents-train.jsonl", 400, "processed"), ("demo-intents-valid.jsonl", 60, "processed")]

    before = demo_files(homes[1])
    assert [f[:3] for f in before] == [f[:3] for f in files]
    again = manage(homes[1], "bootstrap_demo")
    assert "Building" not in again.stdout and "Uploaded" not in again.stdout
    assert demo_files(homes[1]) == before  # the same rows, the same public ids: nothing uploaded twice
    assert digest(homes[1] / "models" / "attune-tiny") == model_a
    assert "Converting" not in again.stdout and digest(homes[1] / "models" / "smollm2-135m") == smol_a
    with sqlite3.connect(homes[1] / "attune.sqlite3") as db:
        bases = db.execute("select name, architecture, has_chat_template from training_basemodel "
                           "order by name").fetchall()
    assert bases == [("attune-tiny", "LlamaForCausalLM", 1), ("smollm2-135m", "LlamaForCausalLM", 1)]
    with sqlite3.connect(homes[1] / "attune.sqlite3") as db:
        evals = db.execute("select public_id, epoch_data_source from evals_eval order by public_id").fetchall()
    ids = {name: public_id for name, _n, _s, public_id in before}
    assert [e[0] for e in evals] == ["eval_demo", "eval_demo_rft"]
    assert json.loads(evals[0][1])["source"]["id"] == ids["demo-intents-heldout.jsonl"]
    assert json.loads(evals[1][1])["source"]["id"] == ids["demo-intents-rft-heldout.jsonl"]

    heldout = [json.loads(line) for line in (homes[0] / "demo" / "demo-intents-heldout.jsonl").open()]
    train_users = {json.loads(line)["messages"][1]["content"]
                   for line in (homes[0] / "demo" / "demo-intents-train.jsonl").open()}
    assert len(heldout) >= 50 and all(row["messages"][1]["content"] not in train_users for row in heldout)
    from training.demo_data import HELDOUT_WORDINGS, INTENTS

    for intent, wordings in HELDOUT_WORDINGS.items():  # held-out prompts use wordings training never does
        assert not set(wordings) & set(INTENTS[intent])


def test_create_user_prints_a_generated_password(tmp_path):
    manage(tmp_path, "migrate", "--noinput")
    out = manage(tmp_path, "create_user", "rater1", "--role", "evaluator").stdout
    assert "user: rater1" in out and "role: evaluator" in out
    password = out.split("password: ")[1].strip()
    assert len(password) >= 12
    again = manage(tmp_path, "create_user", "rater1", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_changed_demo_data_is_uploaded_beside_the_old_upload(demo_home):
    """A machine bootstrapped by an older Attune holds older demo files; the new ones are uploaded and
    the old rows stay, since jobs may name them."""
    with sqlite3.connect(demo_home / "attune.sqlite3") as db:
        old_id, path = db.execute("select public_id, path from training_datafile "
                                  "where filename = 'demo-intents-train.jsonl'").fetchone()
    (demo_home / "files" / path).write_text('{"messages": []}\n')  # what an older version stored
    again = manage(demo_home, "bootstrap_demo")
    assert "Uploaded demo-intents-train.jsonl" in again.stdout and "Uploaded demo-intents-valid" not in again.stdout
    trains = [f for f in demo_files(demo_home) if f[0] == "demo-intents-train.jsonl"]
    assert len(trains) == 2 and old_id in {f[3] for f in trains}
    assert "Uploaded" not in manage(demo_home, "bootstrap_demo").stdout

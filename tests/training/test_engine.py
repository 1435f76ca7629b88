"""The training engine, on a tiny Llama built in tmp_path with a fixed seed.

Fast tests cover the data path, packing, every error code and the demo
model build; the ones marked slow really train (a few seconds each).
"""

import errno
import json
import os
import shutil
import signal
import subprocess

import pytest

from tests.training.engine_helpers import (
    REPO,
    demo_files,
    engine_command,
    engine_env,
    of_type,
    preference_rows,
    read_until,
    run_in_process,
    run_subprocess,
    write_jsonl,
    write_spec,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def files(tmp_path):
    return demo_files(tmp_path)


# --- data ---------------------------------------------------------------------

def test_only_assistant_tokens_are_labelled(tokenizer):
    from training.engine.data import tokenize_chat

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "track_order"}]
    input_ids, labels, truncated = tokenize_chat(tokenizer, messages, 512)
    trained = [t for t, l in zip(input_ids, labels, strict=True) if l != -100]
    assert tokenizer.decode(trained) == "track_order<|end|>\n"
    assert not truncated


def test_weight_zero_turns_are_absent_from_the_labels(tokenizer):
    from training.engine.data import tokenize_chat

    messages = [{"role": "user", "content": "first"},
                {"role": "assistant", "content": "cancel_order", "weight": 0},
                {"role": "user", "content": "second"},
                {"role": "assistant", "content": "refund_request", "weight": 1}]
    input_ids, labels, _ = tokenize_chat(tokenizer, messages, 512)
    trained = tokenizer.decode([t for t, l in zip(input_ids, labels, strict=True) if l != -100])
    assert trained == "refund_request<|end|>\n"
    assert "cancel_order" in tokenizer.decode(input_ids)  # still in the context


def test_long_examples_are_truncated_from_the_end(tokenizer):
    from training.engine.data import tokenize_chat

    messages = [{"role": "user", "content": "where is my order " * 30}, {"role": "assistant", "content": "x"}]
    input_ids, labels, truncated = tokenize_chat(tokenizer, messages, 20)
    assert truncated and len(input_ids) == len(labels) == 20


def test_packing_keeps_examples_apart(tiny_model, tokenizer):
    """Logits of an example packed after another equal its logits alone."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from training.engine.data import tokenize_chat

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model.config.use_cache = False
    first = tokenize_chat(tokenizer, [{"role": "user", "content": "hello there"},
                                      {"role": "assistant", "content": "cancel_order"}], 512)
    second = tokenize_chat(tokenizer, [{"role": "user", "content": "where is my lamp"},
                                       {"role": "assistant", "content": "track_order"}], 512)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([{"input_ids": first[0], "labels": first[1]}, {"input_ids": second[0], "labels": second[1]}])
    assert "attention_mask" not in batch
    assert batch["position_ids"][0, len(first[0])] == 0  # the second example restarts its positions
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=torch.tensor([second[0]])).logits[0]
        joined = model(input_ids=batch["input_ids"]).logits[0]  # no position_ids: attention crosses over
    tail = packed[len(first[0]):]
    assert torch.allclose(tail, alone, atol=1e-4)
    assert not torch.allclose(joined[len(first[0]):], alone, atol=1e-2)
    # The first label of the second example is masked: it must not be predicted from the first example.
    assert batch["labels"][0, len(first[0])] == -100


def test_preference_lines_accept_both_field_names():
    from training.engine.data import dpo_rows

    new = {"input": {"messages": [{"role": "user", "content": "q"}]},
           "preferred_output": [{"role": "assistant", "content": "a"}],
           "non_preferred_output": [{"role": "assistant", "content": "b"}]}
    old = {"input": new["input"], "preferred_completion": new["preferred_output"],
           "non_preferred_completion": new["non_preferred_output"]}
    assert dpo_rows([new], "f") == dpo_rows([old], "f")


# --- errors a person can act on ----------------------------------------------------

def _error(lines):
    errors = of_type(lines, "error")
    assert len(errors) == 1 and lines[-1] is errors[0]
    return errors[0]


def test_invalid_spec_names_the_field(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=99)
    status, lines = run_in_process(spec)
    error = _error(lines)
    assert status == 1 and error["code"] == "invalid_spec" and "n_epochs" in error["message"]


def test_unknown_spec_key_is_invalid_spec(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), epochs=3)
    assert _error(run_in_process(spec)[1])["message"].count("epochs") >= 1


def test_missing_validation_file_is_file_not_found(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]),
                      validation_file=str(tmp_path / "nope.jsonl"))
    error = _error(run_in_process(spec)[1])
    assert error["code"] == "file_not_found" and "validation_file" in error["message"]


def test_missing_training_file_is_file_not_found(tmp_path, tiny_model):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(tmp_path / "gone.jsonl"))
    assert _error(run_in_process(spec)[1])["code"] == "file_not_found"


def test_unknown_model_path_is_model_not_found(tmp_path, files):
    spec = write_spec(tmp_path, model=str(tmp_path / "no-such-model"), training_file=str(files[0]))
    error = _error(run_in_process(spec)[1])
    assert error["code"] == "model_not_found" and "no-such-model" in error["message"]


def test_tokenizer_without_chat_template_is_no_chat_template(tmp_path, tiny_model, files):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    spec = write_spec(tmp_path, model=str(bare), training_file=str(files[0]))
    assert _error(run_in_process(spec)[1])["code"] == "no_chat_template"


def test_max_seq_length_beyond_the_model_is_sequence_too_long(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), max_seq_length=4096)
    error = _error(run_in_process(spec)[1])
    assert error["code"] == "sequence_too_long" and "1024" in error["message"]


def test_truncation_is_reported_as_a_warning(tmp_path, tiny_model, files, monkeypatch):
    from trl import SFTTrainer

    monkeypatch.setattr(SFTTrainer, "train", lambda self, **kw: None)
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), max_seq_length=60)
    status, lines = run_in_process(spec)
    warnings = [l["text"] for l in of_type(lines, "message", level="warn") if "truncated" in l["text"]]
    assert status == 0 and len(warnings) == 1
    assert int(warnings[0].split()[0]) > 0 and "longer than max_seq_length (60 tokens)" in warnings[0]


def test_out_of_memory_says_what_to_lower(tmp_path, tiny_model, files, monkeypatch):
    from trl import SFTTrainer

    def oom(self, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SFTTrainer, "train", oom)
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]))
    error = _error(run_in_process(spec)[1])
    assert error["code"] == "out_of_memory"
    assert all(word in error["message"] for word in ("batch_size", "max_seq_length", "lora_r"))


def test_a_full_disk_pauses_the_job_and_says_what_to_do(tmp_path, tiny_model, files, monkeypatch):
    from trl import SFTTrainer

    def full(self, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SFTTrainer, "train", full)
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]))
    status, lines = run_in_process(spec)
    assert status == 0 and (lines[-1]["type"], lines[-1]["reason"]) == ("paused", "disk_full")
    assert "keep_last_n" in lines[-1]["message"] and "from the beginning" in lines[-1]["message"]


# --- the demo base model -------------------------------------------------------------

def test_demo_model_build_is_deterministic(tmp_path):
    from training.demo_data import corpus_texts
    from training.demo_model import build_tiny_model

    corpus = corpus_texts(0)
    for name in ("a", "b"):
        build_tiny_model(tmp_path / name, corpus, seed=0, pretrain_steps=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] % 64 == 0
    assert config["hidden_size"] // config["num_attention_heads"] == 64


def test_demo_tokenizer_renders_a_chat(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|start|>system\ns<|end|>\n<|start|>user\nu<|end|>\n<|start|>assistant\n"


# --- real training (slow) ---------------------------------------------------------------

@pytest.mark.slow
def test_supervised_lora_run(tmp_path, tiny_model, files):
    from safetensors.torch import load_file

    from training.engine.data import read_jsonl, sft_rows
    from training.engine.evaluate import assistant_loss, load_for_inference

    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]),
                      validation_file=str(files[1]), n_epochs=3)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    started = of_type(lines, "started")[0]
    assert started["total_steps"] == 18 and started["steps_per_epoch"] == 6 and started["device"] == "cpu"
    losses = [l["train_loss"] for l in of_type(lines, "metrics")]
    assert len(losses) == 18 and all(l == l and l < 100 for l in losses)  # finite
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0  # falling
    sampled = of_type(lines, "eval", scope="sampled")
    assert [l["step"] for l in sampled] == [3, 6, 9, 12, 15, 18]

    ckpts = of_type(lines, "checkpoint")
    assert [(c["epoch"], c["step"]) for c in ckpts] == [(1, 6), (2, 12), (3, 18)]
    for ckpt in ckpts:
        assert set(ckpt["metrics"]) == {"step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                                        "valid_mean_token_accuracy", "full_valid_loss",
                                        "full_valid_mean_token_accuracy"}
        assert all(v is not None for v in ckpt["metrics"].values())
        folder = tmp_path / "job" / "checkpoints" / f"epoch-{ckpt['epoch']}-step-{ckpt['step']}"
        assert ckpt["path"] == str(folder)
        for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "attune_spec.json",
                     "optimizer.pt", "scheduler.pt", "trainer_state.json", "COMPLETE"):
            assert (folder / name).exists(), name
    done = lines[-1]
    assert done["type"] == "done" and done["final_checkpoint"] == ckpts[-1]["path"] and done["trained_tokens"] > 0

    # Only LoRA weights changed; the base stays as it was.
    adapter = load_file(str(tmp_path / "job/checkpoints/epoch-3-step-18/adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero
    model, tokenizer = load_for_inference(ckpts[-1]["path"], tiny_model)
    base = load_file(str(tiny_model / "model.safetensors"))
    state = model.get_base_model().state_dict()
    assert torch.equal(state["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert torch.equal(state["model.layers.0.mlp.down_proj.base_layer.weight"],
                       base["model.layers.0.mlp.down_proj.weight"])

    # Full-validation figures equal a separate evaluation of the checkpoint over the same file.
    rows, _ = sft_rows(tokenizer, read_jsonl(files[1], "validation_file"), 1024, "validation_file")
    separate = assistant_loss(model, rows, batch_size=3)
    full = of_type(lines, "eval", scope="full")[-1]
    assert full["full_valid_loss"] == pytest.approx(separate["loss"], abs=1e-5)
    assert full["full_valid_mean_token_accuracy"] == pytest.approx(separate["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_full_fine_tuning_saves_full_weights(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), adapter="full",
                      n_epochs=1, learning_rate_multiplier=10)
    status, lines = run_in_process(spec)
    assert status == 0
    folder = tmp_path / "job/checkpoints/epoch-1-step-6"
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert of_type(lines, "started")[0]["trainable_params"] == of_type(lines, "started")[0]["total_params"]


@pytest.mark.slow
def test_packing_trains_and_uses_fewer_steps(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), packing=True,
                      max_seq_length=512, n_epochs=1, batch_size=2)
    status, lines = run_in_process(spec)
    assert status == 0
    # 48 examples of ~110 tokens in rows of 512: about 12 rows, 6 steps of 2 (24 without packing).
    assert of_type(lines, "started")[0]["total_steps"] < 10


@pytest.mark.slow
def test_dpo_reward_margin_rises(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "pref.jsonl", preference_rows(32))
    valid = write_jsonl(tmp_path / "pref_valid.jsonl", preference_rows(40)[32:])
    # 100 × the DPO base rate of 2e-5: the 2e-3 this tiny random-initialised model needs to move in 12 steps.
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), validation_file=str(valid),
                      method="dpo", n_epochs=3, eval_interval=4, learning_rate_multiplier=100)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    margins = [l["train_reward_margin"] for l in of_type(lines, "metrics")]
    # The first step compares the model with itself (adapter B starts at zero): margin 0.
    assert len(margins) == 12 and margins[0] == pytest.approx(0.0, abs=1e-3)
    assert sum(margins[-3:]) / 3 > max(0.03, sum(margins[:3]) / 3)
    full = of_type(lines, "eval", scope="full")
    assert len(full) == 3 and all(isinstance(l["full_valid_reward_margin"], float) for l in full)
    assert (tmp_path / "job/checkpoints/epoch-3-step-12/adapter_model.safetensors").exists()


def _by_epoch(lines):
    return {l["epoch"]: l["full_valid_loss"] for l in of_type(lines, "eval", scope="full")}


def _losses(lines):
    return {l["step"]: l["train_loss"] for l in of_type(lines, "metrics")}


@pytest.mark.slow
def test_resume_after_a_kill_reproduces_epochs_two_and_three(tmp_path, tiny_model, files):
    """torchtune's test_training_state_on_resume: 3 epochs straight == 1 epoch, kill, resume."""
    (tmp_path / "a").mkdir()
    straight = write_spec(tmp_path / "a", model=str(tiny_model), training_file=str(files[0]),
                          validation_file=str(files[1]), n_epochs=3)
    status, reference, _ = run_subprocess(straight)
    assert status == 0

    (tmp_path / "b").mkdir()
    spec = write_spec(tmp_path / "b", model=str(tiny_model), training_file=str(files[0]),
                      validation_file=str(files[1]), n_epochs=3)
    proc = subprocess.Popen(engine_command(spec), cwd=REPO, env=engine_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    first = read_until(proc, "checkpoint", epoch=1)
    proc.send_signal(signal.SIGTERM)  # cancel, as the worker does
    assert proc.wait(timeout=60) == 143
    assert not (tmp_path / "b/job/checkpoints/epoch-2-step-12").exists()

    status, resumed, _ = run_subprocess(spec, "--resume")
    assert status == 0
    assert of_type(resumed, "message", level="info")[0]["text"].startswith("Resuming from epoch-1-step-6")
    assert [c["epoch"] for c in of_type(resumed, "checkpoint")] == [2, 3]
    ref_losses, new_losses = _losses(reference), _losses(first + resumed)
    for step in range(7, 19):
        assert new_losses[step] == pytest.approx(ref_losses[step], abs=1e-4), step
    for epoch in (2, 3):
        assert _by_epoch(resumed)[epoch] == pytest.approx(_by_epoch(reference)[epoch], abs=1e-4)


@pytest.mark.slow
def test_a_pause_asked_for_on_an_epochs_last_step_keeps_that_epochs_checkpoint(tmp_path, tiny_model, files,
                                                                               monkeypatch):
    from training.engine.callbacks import ProgressCallback

    original = ProgressCallback.on_step_end

    def ask_at_first_epoch_end(self, args, state, control, **kwargs):
        if state.global_step == self.steps_per_epoch:
            self.pause_requested = True
        return original(self, args, state, control, **kwargs)

    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=2,
                      learning_rate_multiplier=1)
    with monkeypatch.context() as patch:
        patch.setattr(ProgressCallback, "on_step_end", ask_at_first_epoch_end)
        status, first = run_in_process(spec)
    assert status == 0
    assert [c["epoch"] for c in of_type(first, "checkpoint")] == [1]
    assert of_type(first, "paused")[0]["step"] == 7  # one step into epoch 2 (6 steps an epoch)
    status, resumed = run_in_process(spec, "--resume")
    assert status == 0 and resumed[-1]["type"] == "done"
    assert [c["epoch"] for c in of_type(first + resumed, "checkpoint")] == [1, 2]


@pytest.mark.slow
def test_pause_saves_state_and_resume_finishes(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=2,
                      learning_rate_multiplier=1)
    proc = subprocess.Popen(engine_command(spec), cwd=REPO, env=engine_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    before = read_until(proc, "metrics", step=2)
    proc.send_signal(signal.SIGUSR1)
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 0
    paused = of_type(rest, "paused")
    assert len(paused) == 1 and rest[-1] is paused[0]
    step = paused[0]["step"]
    assert 2 <= step < 12 and (tmp_path / "job/pause-state/COMPLETE").exists()

    status, resumed, _ = run_subprocess(spec, "--resume")
    assert status == 0 and resumed[-1]["type"] == "done"
    assert min(_losses(resumed).keys()) == step + 1
    assert [c["epoch"] for c in of_type(before + rest + resumed, "checkpoint")] == [1, 2]
    assert not (tmp_path / "job/pause-state").exists()


@pytest.mark.slow
def test_spec_changes_are_reported_on_resume(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=1)
    assert run_in_process(spec)[0] == 0
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=2, lora_r=8)
    status, lines = run_in_process(spec, "--resume")
    warnings = [l["text"] for l in of_type(lines, "message", level="warn")]
    assert any(w.startswith("Spec differs from the checkpoint's: lora_r") for w in warnings)
    assert any(w.startswith("Spec differs from the checkpoint's: n_epochs") for w in warnings)


@pytest.mark.slow
def test_keep_last_n_prunes_old_optimizer_state(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), n_epochs=3, keep_last_n=1)
    assert run_in_process(spec)[0] == 0
    root = tmp_path / "job/checkpoints"
    assert not (root / "epoch-1-step-6/optimizer.pt").exists()
    assert (root / "epoch-1-step-6/adapter_model.safetensors").exists()
    assert (root / "epoch-3-step-18/optimizer.pt").exists()


@pytest.mark.slow
def test_wandb_offline_and_mlflow_file_store_read_back(tmp_path, tiny_model, files, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a plain file store otherwise
    store = tmp_path / "mlruns"
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]),
                      validation_file=str(files[1]), n_epochs=1, job_id="ftjob-test123",
                      integrations={"wandb": {"project": "attune-tests", "tags": ["ci"]},
                                    "mlflow": {"tracking_uri": store.as_uri(), "experiment": "engine-tests"},
                                    "tensorboard": {}})
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("engine-tests")
    run = client.search_runs([experiment.experiment_id])[0]
    assert run.info.run_name == "ftjob-test123" and run.data.params["lora_r"] == "16"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    assert history[0].value == pytest.approx(of_type(lines, "metrics")[0]["train_loss"])
    assert client.get_metric_history(run.info.run_id, "full_valid_loss")[0].step == 6

    runs = list((tmp_path / "job" / "wandb").glob("offline-run-*-ftjob-test123"))
    assert len(runs) == 1
    # This wandb ships no reader for offline runs; the records are protobuf in a log file, so look for the
    # run's project, tags, config keys and metric names in its bytes.
    record = (runs[0] / "run-ftjob-test123.wandb").read_bytes()
    for needle in (b"attune-tests", b"attune/ftjob-test123", b"ci", b"lora_r", b"train_loss", b"full_valid_loss"):
        assert needle in record, needle
    assert list((tmp_path / "job" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_two_processes_under_torchrun_report_once(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]),
                      validation_file=str(files[1]), n_epochs=1, n_gpus=2)
    command = [os.path.join(os.path.dirname(engine_command(spec)[0]), "torchrun"), "--nproc_per_node", "2",
               "--master_port", "29517", "-m", "training.engine", str(spec)]
    proc = subprocess.run(command, cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(of_type(lines, "started")) == 1 and of_type(lines, "started")[0]["world_size"] == 2
    # 48 examples, batch 8 across 2 ranks (4 each): 6 steps, each metrics line once.
    assert [l["step"] for l in of_type(lines, "metrics")] == [1, 2, 3, 4, 5, 6]
    assert len(of_type(lines, "checkpoint")) == 1 and lines[-1]["type"] == "done"

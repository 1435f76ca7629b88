"""Estimates before launch: tokens from the file's statistics, checkpoint disk, and time learned from past jobs."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import chat_lines, make_job, make_user, preference_lines, reinforcement_lines, upload
from training.engine.spec import JobSpec
from training.estimates import estimate_request, lora_parameters, training_device
from training.models import BaseModel, Checkpoint, FineTuningJob, JobEvent

GRADER = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
          "reference": "{{item.intent}}", "operation": "eq"}


@pytest.fixture
def tiny(db, tiny_model):
    return BaseModel.objects.create(name="tiny", source=str(tiny_model))


def stats(data_file, base):
    from training.datasets import stats_for

    return stats_for(data_file, base)


def finished(user, base, train, seconds, tokens, device="cpu", **spec):
    """A job as the worker leaves one that succeeded: started and finished `seconds` apart, `tokens` trained,
    its `started` event saying where it ran."""
    job = make_job(user, training_file=train, model=base.name, **spec)
    now = timezone.now()
    FineTuningJob.objects.filter(pk=job.pk).update(status=FineTuningJob.SUCCEEDED, trained_tokens=tokens,
                                                   started_at=now - timedelta(seconds=seconds), finished_at=now)
    JobEvent.objects.create(job=job, message="Fine-tuning job started", dedupe_key="started",
                            data={"device": device, "world_size": 1})
    return job


def test_tokens_are_the_files_statistics_times_the_epochs_and_dpo_counts_both_outputs(tiny):
    chat = upload(chat_lines(20), "chat.jsonl")
    pairs = upload(preference_lines(10), "pairs.jsonl")
    prompts = upload(reinforcement_lines(12), "prompts.jsonl")
    sft = estimate_request({"model": "tiny", "training_file": chat.public_id, "n_epochs": 3})
    assert sft["tokens"] == 3 * stats(chat, tiny)["tokens_total"] and sft["n_epochs"] == 3
    dpo = estimate_request({"model": "tiny", "training_file": pairs.public_id, "method": "dpo", "n_epochs": 2})
    assert dpo["tokens"] == 2 * 2 * stats(pairs, tiny)["tokens_total"]
    rft = estimate_request({"model": "tiny", "training_file": prompts.public_id, "method": "reinforcement",
                            "grader": GRADER, "n_epochs": 1, "num_generations": 4, "batch_size": 8,
                            "max_completion_length": 10})
    assert rft["tokens"] == 4 * (stats(prompts, tiny)["tokens_total"] + 12 * 10)
    # `auto` epochs are resolved as the job would resolve them (20 examples: more than one epoch).
    assert estimate_request({"model": "tiny", "training_file": chat.public_id})["n_epochs"] > 1
    # A request that is not valid yet has no estimate: create_job is what names the problem.
    assert estimate_request({"model": "nope", "training_file": chat.public_id}) is None
    assert estimate_request({"model": "tiny", "training_file": "file-missing"}) is None


def test_the_lora_size_from_the_config_is_what_peft_builds(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = json.loads((tiny_model / "config.json").read_text())
    for r, targets in ((16, "all-linear"), (4, ["q_proj", "v_proj"])):
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        spec = JobSpec.model_validate({"model": "x", "training_file": "f", "lora_r": r, "lora_target_modules": targets})
        assert lora_parameters(config, spec) == trainable
    # SmolLM2-135M's config, r 16 on all linear layers: the 19.5 MB adapter its checkpoints hold.
    smollm2 = {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
               "intermediate_size": 1536, "num_hidden_layers": 30}
    assert lora_parameters(smollm2, JobSpec.model_validate({"model": "x", "training_file": "f"})) == 4_884_480
    assert lora_parameters({"hidden_size": 8}, JobSpec.model_validate({"model": "x", "training_file": "f"})) is None


def test_disk_comes_from_a_past_checkpoint_of_the_same_adapter_else_from_the_config(tiny, tiny_model):
    user = make_user()
    train = upload(chat_lines(20), "chat.jsonl")
    request = {"model": "tiny", "training_file": train.public_id, "n_epochs": 2}
    first = estimate_request(request)
    assert first["checkpoint_bytes"] == lora_parameters(
        json.loads((tiny_model / "config.json").read_text()), JobSpec.model_validate(
            {"model": "x", "training_file": "f"})) * 12
    assert first["disk_bytes"] == 2 * first["checkpoint_bytes"] and "config" in first["disk_basis"]
    past = finished(user, tiny, train, 60, 1000, n_epochs=1)
    Checkpoint.objects.create(job=past, epoch=1, step=3, path="x", bytes=123_456)
    again = estimate_request(request)
    assert again["checkpoint_bytes"] == 123_456 and past.public_id in again["disk_basis"]
    # Another LoRA rank, or full fine-tuning, does not reuse that checkpoint's size.
    assert estimate_request({**request, "lora_r": 8})["checkpoint_bytes"] != 123_456
    full = estimate_request({**request, "adapter": "full"})
    weights = sum(f.stat().st_size for f in tiny_model.glob("*.safetensors"))
    assert full["checkpoint_bytes"] == 3 * weights  # float32 weights and two AdamW states


def test_time_is_learned_from_finished_jobs_on_the_same_base_adapter_method_and_device(tiny):
    user = make_user()
    train = upload(chat_lines(20), "chat.jsonl")
    request = {"model": "tiny", "training_file": train.public_id, "n_epochs": 2}
    none_yet = estimate_request(request)
    assert none_yet["seconds"] is None and none_yet["time_basis"].startswith("no estimate yet")
    here = training_device()
    elsewhere = "cuda" if here == "cpu" else "cpu"
    finished(user, tiny, train, 10, 1000, device=elsewhere)  # another device: not learned from
    finished(user, tiny, train, 10, 1000, adapter="full")  # another adapter
    assert estimate_request(request)["seconds"] is None
    a = finished(user, tiny, train, 100, 1000, device=here, n_epochs=1)
    b = finished(user, tiny, train, 300, 1000, device=here, n_epochs=1)
    c = finished(user, tiny, train, 200, 1000, device=here, n_epochs=1)  # the median
    result = estimate_request(request)
    # Per token as the estimate counts them (one epoch of the file each), whatever the engine counted: twice
    # the epochs, twice the median time.
    assert result["seconds"] == pytest.approx(2 * 200, rel=1e-3)
    assert all(job.public_id in result["time_basis"] for job in (a, b, c))
    dpo = estimate_request({"model": "tiny", "training_file": upload(preference_lines(10), "p.jsonl").public_id,
                            "method": "dpo"})
    assert dpo["seconds"] is None  # no DPO job finished yet


def test_the_form_shows_the_estimate_beside_the_spec(admin_client, tiny):
    from tests.dashboard.test_forms_job import form_data

    train = upload(chat_lines(20), "chat.jsonl")
    data = form_data({"train": train, "valid": train}, model="tiny", n_epochs__auto=None, n_epochs="2",
                     validation_file="", preview="1")
    fragment = admin_client.post("/jobs/new/", data, headers={"HX-Request": "true"}).content.decode()
    assert 'id="job-estimate"' in fragment, fragment[:2000]
    tokens = 2 * stats(train, tiny)["tokens_total"]
    assert f"{tokens} (2 epochs)" in fragment
    assert "no estimate yet" in fragment and "Checkpoint disk" in fragment

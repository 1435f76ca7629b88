"""JobSpec: validation that names the field, auto rules, form fields. No torch needed."""

import pathlib
import subprocess
import sys

import pytest

from training.engine.spec import (
    BASE_LEARNING_RATE,
    JobSpec,
    SpecError,
    auto_batch_size,
    auto_n_epochs,
    form_fields,
    parse_spec,
    resolve_auto,
    spec_errors,
)

BASE = {"model": "var/models/attune-tiny", "training_file": "train.jsonl"}


def test_it_refuses_an_unknown_key_naming_it():
    assert spec_errors({**BASE, "n_epoch": 3}) == [("n_epoch", "unknown field 'n_epoch'")]


def test_it_refuses_an_unknown_nested_key_naming_its_path():
    errors = dict(spec_errors({**BASE, "integrations": {"wandb": {"project": "p", "team": "x"}}}))
    assert errors == {"integrations.wandb.team": "unknown field 'team'"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("n_epochs", 51, "must be an integer from 1 to 50, or 'auto'"),
    ("n_epochs", 0, "must be an integer from 1 to 50, or 'auto'"),
    ("batch_size", 257, "must be an integer from 1 to 256, or 'auto'"),
    ("learning_rate_multiplier", 0, "must be a number greater than 0 and at most 100, or 'auto'"),
    ("beta", 2.5, "must be a number greater than 0 and at most 2, or 'auto'"),
])
def test_it_refuses_an_out_of_range_value_naming_the_field(field, value, message):
    assert spec_errors({**BASE, field: value}) == [(field, message)]


def test_it_refuses_a_plain_out_of_range_field():
    errors = dict(spec_errors({**BASE, "lora_dropout": 0.95, "method": "rl"}))
    assert set(errors) == {"lora_dropout", "method"}
    assert "0.9" in errors["lora_dropout"]


def test_batch_size_must_divide_by_accumulation_and_gpus():
    errors = spec_errors({**BASE, "batch_size": 6, "gradient_accumulation_steps": 4})
    assert errors[0][0] == "batch_size" and "divisible" in errors[0][1]


def test_packing_is_refused_for_dpo_with_the_field_named():
    assert spec_errors({**BASE, "method": "dpo", "packing": True}) == [
        ("packing", "packing applies to supervised fine-tuning only; turn it off for DPO")]
    assert spec_errors({**BASE, "method": "supervised", "packing": True}) == []


def test_it_requires_model_and_training_file():
    assert {f for f, _ in spec_errors({})} == {"model", "training_file"}


@pytest.mark.parametrize(("n", "epochs"), [(5, 20), (10, 10), (33, 3), (101, 3), (20000, 1), (2, 25), (9000, 2)])
def test_auto_epochs_follow_the_published_rule(n, epochs):
    assert auto_n_epochs(n) == epochs


@pytest.mark.parametrize(("n", "size"), [(10, 1), (99, 1), (100, 2), (480, 8), (5000, 32), (10**6, 32)])
def test_auto_batch_size_is_a_power_of_two_near_n_over_50(n, size):
    assert auto_batch_size(n) == size


def test_resolve_auto_fills_every_auto_and_keeps_explicit_values():
    spec = parse_spec({**BASE, "batch_size": 4, "method": "dpo"})
    resolved, summary = resolve_auto(spec, 480)
    assert summary == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0,
                       "learning_rate": BASE_LEARNING_RATE["dpo"]["lora"], "beta": 0.1}
    assert "auto" not in resolved.model_dump().values()


def test_learning_rate_is_the_multiplier_times_the_base_rate_of_the_adapter():
    spec = parse_spec({**BASE, "adapter": "full", "learning_rate_multiplier": 3})
    assert spec.learning_rate == pytest.approx(3 * 2e-5)


def test_auto_batch_size_stays_divisible_by_gpus():
    spec = parse_spec({**BASE, "n_gpus": 4})
    resolved, _ = resolve_auto(spec, 480)
    assert resolved.batch_size == 8


def test_form_fields_carry_help_range_choices_and_group():
    fields = {f["name"]: f for f in form_fields()}
    assert fields["n_epochs"]["min"] == 1 and fields["n_epochs"]["max"] == 50 and fields["n_epochs"]["auto"]
    assert fields["lr_scheduler"]["choices"] == ["linear", "cosine", "constant", "constant_with_warmup"]
    assert fields["packing"]["group"] == "advanced" and fields["packing"]["type"] == "bool"
    assert fields["integrations.wandb.project"]["group"] == "integrations"
    assert all(f["help"] for f in fields.values())
    assert set(JobSpec.model_fields) - {"integrations"} <= set(fields)


def test_importing_the_spec_loads_no_torch():
    code = "import sys, training.engine.spec; sys.exit('torch' in sys.modules)"
    repo = pathlib.Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo).returncode == 0


@pytest.mark.parametrize(("n", "size"), [(80, 8), (5, 4), (1000, 16), (3, 2)])
def test_auto_batch_size_for_dpo_takes_at_least_eight_pairs(n, size):
    resolved, _ = resolve_auto(parse_spec({**BASE, "method": "dpo"}), n)
    assert resolved.batch_size == size


def test_dpo_learns_at_a_gentler_base_rate_than_supervised():
    for adapter in ("lora", "full"):
        dpo = parse_spec({**BASE, "method": "dpo", "adapter": adapter, "learning_rate_multiplier": 1})
        sft = parse_spec({**BASE, "adapter": adapter, "learning_rate_multiplier": 1})
        assert dpo.learning_rate == BASE_LEARNING_RATE["dpo"][adapter] <= sft.learning_rate / 10


# --- reinforcement -----------------------------------------------------------------

RFT = {"model": "m", "training_file": "t.jsonl", "method": "reinforcement",
       "grader": {"type": "string_check", "name": "x", "input": "{{sample.output_text}}", "reference": "a",
                  "operation": "eq"}}


def test_reinforcement_takes_openais_rft_hyperparameters_and_grpo_settings_under_attune():
    from training.engine.spec import extension_fields, hyperparameters_for

    assert hyperparameters_for("reinforcement") == ("n_epochs", "batch_size", "learning_rate_multiplier",
                                                    "compute_multiplier", "reasoning_effort", "eval_interval",
                                                    "eval_samples")
    assert hyperparameters_for("dpo") == ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")
    grpo = {"num_generations", "max_completion_length", "temperature", "loss_type", "beta"}
    assert grpo <= set(extension_fields("reinforcement"))
    assert not grpo & set(extension_fields("supervised"))
    # An SFT job sets its evaluation cadence under attune; a reinforcement job as OpenAI's hyperparameter.
    assert "eval_interval" in extension_fields("supervised")
    assert "eval_interval" not in extension_fields("reinforcement")


def test_reinforcement_auto_rules():
    from training.engine.spec import parse_spec, resolve_auto

    spec, summary = resolve_auto(parse_spec({**RFT, "eval_interval": "auto"}), 100)
    # 8 answers a prompt, 2 prompts a step (100 // 50), a quarter-epoch validation cadence, no KL term.
    assert (spec.num_generations, spec.batch_size, spec.beta) == (8, 16, 0.0)
    assert spec.eval_interval == 12 and spec.best_checkpoint_metric == "full_valid_mean_reward"
    assert summary["learning_rate"] == 2e-5 and summary["num_generations"] == 8
    # compute_multiplier scales the exploration; a given batch_size bounds it to a divisor.
    spec, _ = resolve_auto(parse_spec({**RFT, "compute_multiplier": 0.5}), 800)
    assert spec.num_generations == 4 and spec.batch_size == 32
    spec, _ = resolve_auto(parse_spec({**RFT, "batch_size": 12}), 100)
    assert spec.num_generations == 6 and spec.batch_size == 12
    with pytest.raises(SpecError) as raised:
        resolve_auto(parse_spec({**RFT, "batch_size": 1}), 100)
    assert raised.value.errors[0][0] == "batch_size"


@pytest.mark.parametrize("change, field, words", [
    ({"grader": None}, "grader", "grader is required"),
    ({"batch_size": 6, "num_generations": 4}, "num_generations", "must divide batch_size (6)"),
    ({"num_generations": 1}, "num_generations", "from 2 to 64"),
    ({"max_completion_length": 0}, "max_completion_length", "greater than or equal to 1"),
    ({"loss_type": "ppo"}, "loss_type", "dapo"),
    ({"temperature": 0}, "temperature", "greater than 0"),
    ({"response_format": {"type": "text"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format",
     "json_schema.schema"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", "default"),
    ({"compute_multiplier": 11}, "compute_multiplier", "or 'auto'"),
    ({"best_checkpoint_metric": "full_valid_accuracy"}, "best_checkpoint_metric", "full_valid_mean_reward"),
])
def test_bad_reinforcement_settings_name_their_field(change, field, words):
    errors = spec_errors({**RFT, **change})
    assert errors and errors[0][0] == field and words in errors[0][1], errors


def test_the_reinforcement_fields_belong_to_reinforcement_jobs_only():
    base = {"model": "m", "training_file": "t.jsonl"}
    assert spec_errors({**base, "grader": RFT["grader"]})[0][0] == "grader"
    assert spec_errors({**base, "best_checkpoint_metric": "full_valid_mean_reward"})[0][0] == \
        "best_checkpoint_metric"
    assert spec_errors({**base, "method": "dpo", "beta": 0})[0] == ("beta", "beta must be greater than 0 for DPO")


def test_it_refuses_more_nodes_than_the_cap_naming_n_nodes():
    assert dict(spec_errors({**BASE, "n_nodes": 65})) == {"n_nodes": "Input should be less than or equal to 64"}
    assert spec_errors({**BASE, "n_nodes": 64, "batch_size": 64}) == []


def test_the_batch_must_divide_across_every_process_of_every_node():
    errors = dict(spec_errors({**BASE, "batch_size": 12, "n_gpus": 4, "n_nodes": 2}))
    assert errors == {"batch_size": "batch_size (12) must be divisible by gradient_accumulation_steps × n_gpus × "
                                    "n_nodes (8)"}
    spec, _ = resolve_auto(parse_spec({**BASE, "n_gpus": 2, "n_nodes": 3}), 480)
    assert spec.batch_size == 6  # auto: 8, rounded down to a multiple of the 6 processes


def test_it_refuses_fsdp_on_a_single_process_naming_distributed():
    errors = dict(spec_errors({**BASE, "distributed": "fsdp"}))
    assert list(errors) == ["distributed"] and "needs more than one" in errors["distributed"]
    assert spec_errors({**BASE, "distributed": "fsdp", "n_nodes": 2, "batch_size": 8}) == []
    assert dict(spec_errors({**BASE, "distributed": "zero3"}))["distributed"] == "Input should be 'ddp' or 'fsdp'"


def test_qlora_quantization_defaults_to_none_and_takes_4bit_and_8bit():
    assert parse_spec(BASE).quantization == "none"
    assert [parse_spec({**BASE, "quantization": q}).quantization for q in ("4bit", "8bit")] == ["4bit", "8bit"]
    field = next(f for f in form_fields() if f["name"] == "quantization")
    assert field["choices"] == ["none", "4bit", "8bit"] and field["group"] == "advanced"


def test_qlora_quantization_refuses_an_unknown_kind_naming_the_field():
    errors = dict(spec_errors({**BASE, "quantization": "2bit"}))
    assert list(errors) == ["quantization"] and "'4bit'" in errors["quantization"]


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_qlora_quantization_refuses_full_fine_tuning_naming_the_field(quantization):
    errors = dict(spec_errors({**BASE, "adapter": "full", "quantization": quantization}))
    assert list(errors) == ["quantization"]
    assert "needs adapter 'lora'" in errors["quantization"] and "quantization to none" in errors["quantization"]
    assert spec_errors({**BASE, "adapter": "full", "quantization": "none"}) == []

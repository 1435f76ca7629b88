"""Sweeps: expanding a definition, the refusals (nothing stored), cancel, and ranking by a metric."""

import pytest

from tests.factories import make_eval
from training.jobs import JobError
from training.models import Checkpoint, FineTuningJob, Sweep
from training.sweeps import SWEEPABLE, create_sweep, plan, ranking, sweepable_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def spec(base_model, train_file):
    return {"model": "attune-tiny", "training_file": train_file.public_id, "method": "supervised"}


def refused(spec, definition, param, user=None, metadata=None):
    """create_sweep refuses `definition` naming `param`, and stores no sweep and no job."""
    with pytest.raises(JobError) as caught:
        create_sweep(spec, definition, user, metadata=metadata)
    assert caught.value.param == param, caught.value.message
    assert Sweep.objects.count() == 0 and FineTuningJob.objects.count() == 0
    return caught.value.message


def test_the_sweepable_fields_come_from_jobspec_and_follow_the_method():
    assert {"learning_rate_multiplier", "n_epochs", "batch_size", "lora_r", "lora_alpha", "lora_dropout",
            "warmup_ratio", "weight_decay", "seed", "beta", "num_generations", "temperature"} <= set(SWEEPABLE)
    assert not {"n_gpus", "logging_steps", "model", "adapter", "suffix"} & set(SWEEPABLE)
    assert "beta" not in sweepable_for("supervised") and "beta" in sweepable_for("dpo")
    assert "num_generations" in sweepable_for("reinforcement")


def test_a_grid_makes_every_combination_with_its_values(spec):
    planned = plan(spec, {"mode": "grid", "fields": {"learning_rate_multiplier": [0.5, 1, 2], "n_epochs": [1, 2]}})
    assert len(planned.combinations) == 6
    assert planned.combinations[0] == {"learning_rate_multiplier": 0.5, "n_epochs": 1}
    assert planned.combinations[1] == {"learning_rate_multiplier": 0.5, "n_epochs": 2}
    assert planned.combinations[-1] == {"learning_rate_multiplier": 2, "n_epochs": 2}
    assert planned.definition == {"mode": "grid", "n": 6, "seed": None,
                                  "fields": {"learning_rate_multiplier": [0.5, 1, 2], "n_epochs": [1, 2]}}


def test_random_draws_stay_in_their_ranges_ints_as_ints_and_repeat_with_the_seed(spec):
    definition = {"mode": "random", "n": 12, "seed": 42, "fields": {
        "learning_rate_multiplier": {"min": 0.01, "max": 10}, "lora_r": {"min": 4, "max": 64},
        "warmup_ratio": {"min": 0.0, "max": 0.2}}}
    first = plan(spec, definition).combinations
    assert len(first) == 12
    for values in first:
        assert 0.01 <= values["learning_rate_multiplier"] <= 10
        assert isinstance(values["lora_r"], int) and 4 <= values["lora_r"] <= 64
        assert 0.0 <= values["warmup_ratio"] <= 0.2
    assert plan(spec, definition).combinations == first
    assert plan(spec, {**definition, "seed": 43}).combinations != first
    # Log-uniform: of 12 draws between 0.01 and 10, some fall below 0.1, which a uniform draw would
    # (with probability 0.99^12 ≈ 0.89 of none) almost never give.
    assert sum(values["learning_rate_multiplier"] < 0.1 for values in first) >= 2


def test_a_random_sweep_without_a_seed_draws_one_and_stores_it(spec, admin_user):
    sweep = create_sweep(spec, {"mode": "random", "n": 2, "fields": {"lora_r": {"min": 4, "max": 8}}}, admin_user)
    seed = sweep.definition["seed"]
    assert isinstance(seed, int)
    again = plan(spec, sweep.definition).combinations
    assert [job.spec["lora_r"] for job in sweep.jobs.order_by("created_at", "id")] == [v["lora_r"] for v in again]


def test_creating_a_sweep_queues_its_jobs_with_the_values_and_names_the_sweep_in_metadata(spec, admin_user):
    sweep = create_sweep(spec, {"mode": "grid", "fields": {"lora_r": [4, 8], "learning_rate_multiplier": [0.5]}},
                         admin_user, metadata={"team": "support"})
    jobs = list(sweep.jobs.order_by("created_at", "id"))
    assert sweep.public_id.startswith("sweep-") and sweep.created_by == admin_user
    assert [job.status for job in jobs] == ["queued", "queued"]
    assert [job.spec["lora_r"] for job in jobs] == [4, 8]
    assert jobs[0].metadata == {"team": "support", "attune_sweep": sweep.public_id,
                                "attune_sweep_values": "lora_r=4, learning_rate_multiplier=0.5"}
    # One seed for every job, so that they differ only in the swept values.
    assert jobs[0].seed == jobs[1].seed == sweep.spec["seed"]
    assert sweep.metric == "full_valid_loss"


@pytest.mark.parametrize("definition, param, words", [
    ({"fields": {"learning_rate": [1]}}, "sweep.fields.learning_rate", "unknown field"),
    ({"fields": {"adapter": ["lora"]}}, "sweep.fields.adapter", "cannot be swept"),
    ({"fields": {"beta": [0.1, 0.2]}}, "sweep.fields.beta", "applies to DPO and reinforcement jobs only"),
    ({"fields": {"learning_rate_multiplier": [0.5, 1, -2]}}, "sweep.fields.learning_rate_multiplier[2]", "-2"),
    ({"fields": {"lora_r": [8, 1.5]}}, "sweep.fields.lora_r[1]", "1.5"),
    ({"fields": {"lora_r": [8, 8]}}, "sweep.fields.lora_r[1]", "twice"),
    ({"fields": {"lora_r": []}}, "sweep.fields.lora_r", "empty"),
    ({"fields": {}}, "sweep.fields", "at least one"),
    ({"fields": {"lora_r": [4], "lora_alpha": [8], "lora_dropout": [0.1], "warmup_ratio": [0.1]}}, "sweep.fields",
     "at most 3"),
    ({"fields": {"lora_r": list(range(1, 14))}}, "sweep.fields.lora_r", "13 values"),
    ({"fields": {"lora_r": [1, 2, 3, 4], "lora_alpha": [1, 2, 3, 4]}}, "sweep.fields", "16 jobs"),
    ({"mode": "random", "n": 13, "fields": {"lora_r": {"min": 1, "max": 4}}}, "sweep.n", "from 1 to 12"),
    ({"mode": "random", "n": 2, "fields": {"lora_r": {"min": 0, "max": 4}}}, "sweep.fields.lora_r.min", "0"),
    ({"mode": "random", "n": 2, "fields": {"lora_r": {"min": 8, "max": 4}}}, "sweep.fields.lora_r", "above max"),
    ({"mode": "random", "n": 2, "fields": {"lora_r": [1, 2]}}, "sweep.fields.lora_r", "range"),
    ({"mode": "grid", "n": 2, "fields": {"lora_r": [1, 2]}}, "sweep.n", "random sweeps only"),
    ({"mode": "bayes", "fields": {"lora_r": [1, 2]}}, "sweep.mode", "grid or random"),
    ({"fields": {"lora_r": [1]}, "metric": "x"}, "sweep.metric", "Unrecognized"),
])
def test_a_bad_definition_is_refused_naming_its_place_and_nothing_is_made(spec, admin_user, definition, param, words):
    assert words in refused(spec, definition, param, admin_user)


def test_a_combination_that_breaks_a_rule_between_fields_is_refused_naming_the_swept_field(base_model, admin_user):
    from tests.factories import reinforcement_lines, upload

    train = upload(reinforcement_lines(20), "rft.jsonl")
    spec = {"model": "attune-tiny", "training_file": train.public_id, "method": "reinforcement",
            "grader": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                       "reference": "{{item.intent}}", "operation": "eq"}}
    # Each value is fine on its own; 6 completions a step cannot be split into groups of 4.
    message = refused(spec, {"fields": {"batch_size": [8, 6], "num_generations": [2, 4]}},
                      "sweep.fields.num_generations", admin_user)
    assert "batch_size=6, num_generations=4" in message


def test_if_any_job_is_refused_no_job_and_no_sweep_is_stored(spec, admin_user):
    refused({**spec, "training_file": "file-nope"}, {"fields": {"lora_r": [4, 8]}}, "training_file", admin_user)


def test_metadata_leaves_room_for_the_sweeps_pairs(spec, admin_user):
    refused(spec, {"fields": {"lora_r": [4]}}, "metadata", admin_user, metadata={f"k{i}": "v" for i in range(15)})
    refused(spec, {"fields": {"lora_r": [4]}}, "metadata.attune_sweep", admin_user, metadata={"attune_sweep": "x"})


def test_cancelling_a_sweep_cancels_every_job_that_has_not_ended(spec, admin_user):
    sweep = create_sweep(spec, {"fields": {"lora_r": [4, 8, 16]}}, admin_user)
    done, running, queued = sweep.jobs.order_by("created_at", "id")
    FineTuningJob.objects.filter(pk=done.pk).update(status=FineTuningJob.SUCCEEDED)
    FineTuningJob.objects.filter(pk=running.pk).update(status=FineTuningJob.RUNNING)
    cancelled = sweep.cancel(by=admin_user)
    assert {job.pk for job in cancelled} == {running.pk, queued.pk}
    for job in (done, running, queued):
        job.refresh_from_db()
    assert (done.status, running.status, queued.status) == ("succeeded", "cancelled", "cancelled")
    assert running.control == "cancel"  # its worker stops the engine, as for any running job
    assert sweep.cancel() == []


def _checkpoints(job, metrics_by_epoch):
    for epoch, metrics in enumerate(metrics_by_epoch, start=1):
        Checkpoint.objects.create(job=job, epoch=epoch, step=epoch * 10, path=f"x/{job.public_id}/{epoch}",
                                  metrics=metrics)


def test_ranking_by_full_valid_loss_takes_each_jobs_lowest_and_puts_the_lowest_first(spec, admin_user):
    sweep = create_sweep(spec, {"fields": {"lora_r": [4, 8, 16, 32]}}, admin_user)
    a, b, c, d = sweep.jobs.order_by("created_at", "id")
    _checkpoints(a, [{"full_valid_loss": 0.9}, {"full_valid_loss": 0.7}])
    _checkpoints(b, [{"full_valid_loss": 0.5}, {"full_valid_loss": 0.8}])
    _checkpoints(c, [{"full_valid_loss": 1.2}])
    ranked = ranking(sweep)
    assert [row.job.pk for row in ranked] == [b.pk, a.pk, c.pk, d.pk]
    assert [row.value for row in ranked] == [0.5, 0.7, 1.2, None]
    assert ranked[0].values == {"lora_r": 8} and ranked[0].checkpoint.epoch == 1


def test_ranking_by_an_eval_criterion_takes_each_jobs_highest(spec, admin_user):
    eval_obj = make_eval(criteria=("exact", "polite"))
    sweep = create_sweep({**spec, "eval": eval_obj.public_id, "best_checkpoint_metric": "eval:polite"},
                         {"fields": {"learning_rate_multiplier": [0.5, 1, 2]}}, admin_user)
    assert sweep.metric == "eval:polite"
    a, b, c = sweep.jobs.order_by("created_at", "id")
    _checkpoints(a, [{"eval_scores": {"polite": 0.2, "exact": 0.9}}, {"eval_scores": {"polite": 0.4}}])
    _checkpoints(b, [{"eval_scores": {"polite": 0.8}}, {"eval_scores": {"polite": 0.6}}])
    _checkpoints(c, [{"eval_scores": {"polite": 0.5}}])
    assert [(row.job.pk, row.value) for row in ranking(sweep)] == [(b.pk, 0.8), (c.pk, 0.5), (a.pk, 0.4)]
    # Another metric re-ranks: the exact criterion, which only a's first checkpoint has.
    assert [row.job.pk for row in ranking(sweep, "eval:exact")][0] == a.pk

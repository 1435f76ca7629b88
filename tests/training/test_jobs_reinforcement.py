"""Creating reinforcement jobs: their files, their grader (checked as OpenAI checks one, judges included)
and the item fields the grader reads, on every line of both files."""

import json

import pytest

from tests.factories import chat_lines, make_base_model, preference_lines, reinforcement_lines, upload
from training.jobs import JobError, create_job
from training.models import FineTuningJob

pytestmark = pytest.mark.django_db

LABEL = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
         "reference": "{{item.intent}}", "operation": "eq"}


def rft(train_file, grader=None, **extra):
    return {"model": "attune-tiny", "training_file": train_file.public_id, "method": "reinforcement",
            "grader": grader or LABEL, **extra}


def refused(spec, user):
    with pytest.raises(JobError) as caught:
        create_job(spec, user)
    assert FineTuningJob.objects.count() == 0
    return caught.value


@pytest.fixture
def prompts(db):
    return upload(reinforcement_lines(12), "prompts.jsonl")


def test_a_reinforcement_job_on_prompts_is_queued_with_its_grader_stored(base_model, prompts, admin_user):
    job = create_job(rft(prompts), admin_user)
    assert job.status == FineTuningJob.QUEUED
    assert prompts.format == "reinforcement"
    assert job.spec["grader"] == LABEL and job.spec["response_format"] is None
    resolved = job.resolved_spec
    assert resolved["batch_size"] % resolved["num_generations"] == 0


def test_a_reinforcement_job_refuses_chat_and_preference_files_naming_the_param(base_model, prompts, admin_user):
    chat = upload(chat_lines(12), "chat.jsonl")
    error = refused(rft(chat), admin_user)
    assert (error.param, error.code) == ("training_file", "invalid_file_format")
    assert error.message == (f"Training file {chat.public_id} (training_file) holds supervised chat examples "
                             "(conversations that end with an assistant answer), but a reinforcement job needs "
                             "reinforcement prompts (messages that end with a user turn, and the fields the grader "
                             "reads).")
    pairs = upload(preference_lines(12))
    error = refused(rft(prompts, validation_file=pairs.public_id), admin_user)
    assert (error.param, error.code) == ("validation_file", "invalid_file_format")
    assert "Validation file" in error.message and "preference examples" in error.message


@pytest.mark.parametrize("method", ["supervised", "dpo"])
def test_supervised_and_dpo_jobs_refuse_reinforcement_prompts(base_model, prompts, admin_user, method):
    error = refused({"model": "attune-tiny", "training_file": prompts.public_id, "method": method}, admin_user)
    assert (error.param, error.code) == ("training_file", "invalid_file_format")
    assert "holds reinforcement prompts" in error.message and f"a {method} job needs" in error.message


@pytest.mark.parametrize("grader, param, code", [
    ({**LABEL, "operation": "equals"}, "grader.operation", "invalid_value"),
    ({**LABEL, "reference": "{{item.intent"}, None, None),  # not a variable: plain text, no error
    ({**LABEL, "reference": "{{answer}}"}, "grader.reference", "unknown_variable"),
    ({"type": "label_model", "name": "l", "model": "attune-tiny", "input": [{"role": "user", "content": "x"}],
      "labels": ["a"], "passing_labels": ["a"]}, "grader.type", "not_allowed"),
    ({"type": "multi", "name": "m", "calculate_output": "a", "graders": {
        "a": {**LABEL, "name": "a", "operation": "nope"}}}, "grader.graders.a.operation", "invalid_value"),
    ({"type": "python", "name": "p", "source": "def grade(sample):\n    return 1\n"}, "grader.source",
     "invalid_value"),
])
def test_the_grader_is_validated_naming_its_field(base_model, prompts, admin_user, grader, param, code):
    if param is None:
        assert create_job(rft(prompts, grader), admin_user).status == FineTuningJob.QUEUED
        return
    error = refused(rft(prompts, grader), admin_user)
    assert (error.param, error.code) == (param, code), error.message


def score_model(model, content="Grade: {{sample.output_text}} for {{item.intent}}"):
    return {"type": "score_model", "name": "judge", "model": model, "input": [{"role": "user", "content": content}]}


def test_a_model_grader_needs_a_judge_the_studio_knows(base_model, prompts, admin_user):
    error = refused(rft(prompts, score_model("gpt-4o")), admin_user)
    assert (error.param, error.code) == ("grader.model", "model_not_found")
    assert "'gpt-4o' does not exist" in error.message
    nested = {"type": "multi", "name": "m", "calculate_output": "j", "graders": {"j": score_model("nope")}}
    assert refused(rft(prompts, nested), admin_user).param == "grader.graders.j.model"

    assert create_job(rft(prompts, score_model("attune-tiny")), admin_user).status == FineTuningJob.QUEUED
    from evals.models import JudgeEndpoint

    JudgeEndpoint.objects.create(name="lab", base_url="http://127.0.0.1:9/v1")
    assert create_job(rft(prompts, score_model("lab/any-model")), admin_user).status == FineTuningJob.QUEUED


def test_a_line_without_a_field_the_grader_reads_is_refused_naming_line_field_and_grader(base_model, admin_user):
    text = reinforcement_lines(11) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n"
    train = upload(text, "t.jsonl")  # line 12 is blank, line 13 has no intent
    error = refused(rft(train), admin_user)
    assert (error.param, error.code) == ("training_file", "missing_item_field")
    assert error.message == (f"Line 13 of training file t.jsonl ({train.public_id}) has no field 'intent', which "
                             "grader 'label' reads as {{item.intent}}.")


def test_the_validation_file_is_checked_too_and_nested_fields_are_followed(base_model, admin_user):
    grader = {"type": "multi", "name": "both", "calculate_output": "label * judge", "graders": {
        "label": LABEL,
        "judge": score_model("attune-tiny", "Expected {{item.meta.answers[0]}}; got {{sample.output_text}}")}}
    train = upload(reinforcement_lines(12, meta={"answers": ["hi"]}), "t.jsonl")
    valid = upload(reinforcement_lines(5, meta={"answers": ["hi"]}) + reinforcement_lines(5, meta={"answers": []}),
                   "v.jsonl")
    error = refused(rft(train, grader, validation_file=valid.public_id), admin_user)
    assert (error.param, error.code) == ("validation_file", "missing_item_field")
    assert error.message.startswith("Line 6 of validation file v.jsonl")
    assert "no field 'meta.answers[0]', which grader 'judge' reads as {{item.meta.answers[0]}}" in error.message


def test_a_python_grader_reads_the_item_freely(base_model, admin_user):
    train = upload(reinforcement_lines(12), "t.jsonl")
    grader = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return float(item['x'])\n"}
    assert create_job(rft(train, grader), admin_user).status == FineTuningJob.QUEUED


def test_grader_and_response_format_belong_to_reinforcement_only(base_model, admin_user):
    chat = upload(chat_lines(12))
    error = refused({"model": "attune-tiny", "training_file": chat.public_id, "grader": LABEL}, admin_user)
    assert error.param == "grader"


def test_a_reinforcement_job_without_a_grader_is_refused(base_model, prompts, admin_user):
    spec = rft(prompts)
    del spec["grader"]
    assert refused(spec, admin_user).param == "grader"


def test_the_judge_is_checked_through_the_evals_app(base_model, prompts, admin_user, monkeypatch):
    from django.apps import apps

    asked = []
    monkeypatch.setattr(apps.get_app_config("evals"), "judge_exists", lambda name: asked.append(name) or False)
    assert refused(rft(prompts, score_model("attune-tiny")), admin_user).code == "model_not_found"
    assert asked == ["attune-tiny"]


def test_a_second_base_model_can_judge_another(prompts, admin_user):
    make_base_model("attune-tiny")
    make_base_model("judge-base")
    assert create_job(rft(prompts, score_model("judge-base")), admin_user).status == FineTuningJob.QUEUED

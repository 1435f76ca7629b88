"""The new-job and re-run form: generated from JobSpec, errors next to their field, typed values kept."""

import json

import pytest

from dashboard.forms import EXAMPLE_GRADER, JobForm, field_key
from tests.factories import make_data_file
from training.engine.spec import WORKER_FIELDS, JobSpec, form_fields
from training.models import FineTuningJob


@pytest.fixture
def setup(base_model):
    """attune-tiny and three file rows: a training file of 480 examples, a validation file of 60, one with errors."""
    train = make_data_file("train.jsonl")
    valid = make_data_file("valid.jsonl", n_examples=60)
    broken = make_data_file("broken.jsonl", status="error", n_examples=0, format="", n_errors=3,
                            errors=[{"line": 2, "code": "invalid_json", "message": "line 2: not JSON"}])
    return {"base": base_model, "train": train, "valid": valid, "broken": broken}


def form_data(setup, **changes):
    """What the browser sends for the form as first shown, plus `changes`."""
    data = {"model": "attune-tiny", "training_file": setup["train"].public_id,
            "validation_file": setup["valid"].public_id, "method": "supervised", "adapter": "lora",
            "n_epochs__auto": "on", "batch_size__auto": "on", "learning_rate_multiplier__auto": "on",
            "beta__auto": "on", "seed": "", "suffix": "", "lora_r": "16", "lora_alpha": "32",
            "lora_dropout": "0.0", "lora_target_modules": "all-linear", "max_seq_length": "1024",
            "gradient_accumulation_steps": "1", "warmup_ratio": "0.0", "lr_scheduler": "linear",
            "weight_decay": "0.0", "eval_interval": "10", "eval_samples": "16", "keep_last_n": "",
            "logging_steps": "1", "n_gpus": "1", "integrations__mlflow__experiment": "attune"}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def field_html(html, name):
    """The markup of one field, from its container to the next one."""
    start = html.index(f'data-field="{name}"')
    end = html.find('<div class="field', start + 1)
    return html[start:end if end > 0 else None]


@pytest.mark.django_db
def test_the_form_has_every_spec_field_a_person_sets_with_help_and_range(admin_client, setup):
    html = admin_client.get("/jobs/new/").content.decode()
    for meta in form_fields():
        if meta["name"] in WORKER_FIELDS:
            assert f'data-field="{meta["name"]}"' not in html
            continue
        block = field_html(html, meta["name"])
        assert 'class="help"' in block, meta["name"]
        if meta["min"] is not None and meta["max"] is not None:
            low, high = meta["min"], meta["max"]
            text = f"{low} – {high}" if meta["type"] == "int" else f"{low:g} – {high:g}"
            assert f"Range: {text}." in block, meta["name"]
        if meta["auto"] and meta["choices"]:
            # An auto choice (reasoning_effort) offers auto among its options, picked by default.
            assert '<option value="auto" selected>' in block, meta["name"]
        elif meta["auto"]:
            # The switch is on where the spec's default is auto; else the default number is filled in
            # (eval_interval and eval_samples may be auto, but default to numbers).
            switch = block[block.index(f'name="{field_key(meta["name"])}__auto"'):].split(">", 1)[0]
            assert ("checked" in switch) == (meta["default"] == "auto"), meta["name"]
            if meta["default"] != "auto":
                assert f'value="{meta["default"]}"' in block, meta["name"]
        container = block.split(">", 1)[0]  # a field of some methods only names them, for job_form.js
        if meta["methods"]:
            assert f'data-methods="{" ".join(meta["methods"])}"' in container, meta["name"]
        else:
            assert "data-methods" not in container, meta["name"]
    assert 'id="advanced"' in html and 'id="integrations"' in html
    for switch in ("wandb", "mlflow", "tensorboard"):
        assert f'name="integrations__{switch}__enabled"' in html


@pytest.mark.django_db
def test_an_errored_file_is_listed_with_its_status_but_cannot_be_picked(admin_client, setup):
    html = admin_client.get("/jobs/new/").content.decode()
    block = field_html(html, "training_file")
    broken = setup["broken"].public_id
    assert f'<option value="{broken}" disabled>broken.jsonl · {broken} · 3 errors: cannot be used</option>' in block
    assert "480 examples, valid" in block
    resp = admin_client.post("/jobs/new/", form_data(setup, training_file=broken))
    block = field_html(resp.content.decode(), "training_file")
    assert "has 3 error(s) and cannot start a job" in block
    assert not FineTuningJob.objects.exists()


@pytest.mark.django_db
def test_auto_switches_give_auto_and_numbers_give_numbers(setup):
    form = JobForm(form_data(setup, n_epochs__auto=None, n_epochs="2", batch_size__auto=None,
                             batch_size="4", suffix="intents", seed="7"))
    assert form.is_valid(), form.errors
    spec = form.spec
    assert spec["n_epochs"] == 2 and spec["batch_size"] == 4
    # beta is DPO's and reinforcement's: a supervised job's spec leaves it out (JobSpec's default fills it in).
    assert spec["learning_rate_multiplier"] == "auto" and "beta" not in spec
    assert spec["model"] == "attune-tiny" and spec["training_file"] == setup["train"].public_id
    assert spec["suffix"] == "intents" and spec["seed"] == 7 and "integrations" not in spec
    assert spec["lora_target_modules"] == "all-linear" and "job_id" not in spec and "output_dir" not in spec


@pytest.mark.django_db
def test_a_number_typed_while_auto_is_on_is_refused_not_dropped(setup):
    form = JobForm(form_data(setup, n_epochs="4"))
    assert not form.is_valid()
    assert form.errors["n_epochs"] == ["Switch off auto to use 4, or clear the number."]
    form = JobForm(form_data(setup, n_epochs__auto=None))
    assert not form.is_valid() and form.errors["n_epochs"] == ["Give a number, or switch on auto."]


@pytest.mark.django_db
def test_an_out_of_range_value_is_shown_next_to_its_field_and_the_typed_values_stay(admin_client, setup):
    resp = admin_client.post("/jobs/new/", form_data(setup, n_epochs__auto=None, n_epochs="99",
                                                      suffix="my-run", lora_r="8", warmup_ratio="0.9"))
    html = resp.content.decode()
    assert resp.status_code == 200 and not FineTuningJob.objects.exists()
    # The range comes from JobSpec itself, the one definition the API and the engine check too.
    assert "must be an integer from 1 to 50, or &#x27;auto&#x27;" in field_html(html, "n_epochs")
    assert 'value="99"' in field_html(html, "n_epochs")
    assert "less than or equal to 0.5" in field_html(html, "warmup_ratio")
    assert 'value="my-run"' in field_html(html, "suffix") and 'value="8"' in field_html(html, "lora_r")
    # An error in the Advanced section opens it.
    assert 'id="advanced" open' in html


@pytest.mark.django_db
def test_errors_found_by_the_spec_itself_land_on_their_field(setup):
    form = JobForm(form_data(setup, batch_size__auto=None, batch_size="6", gradient_accumulation_steps="4"))
    assert not form.is_valid()
    assert form.errors["batch_size"] == [
        "batch_size (6) must be divisible by gradient_accumulation_steps × n_gpus × n_nodes (4)"]
    form = JobForm(form_data(setup, suffix="bad suffix!"))
    assert not form.is_valid() and "pattern" in form.errors["suffix"][0]


@pytest.mark.django_db
def test_integrations_become_nested_spec_objects_and_typed_values_need_their_switch(setup):
    form = JobForm(form_data(setup, integrations__wandb__enabled="on", integrations__wandb__project="attune",
                             integrations__wandb__tags="demo, lora", integrations__tensorboard__enabled="on"))
    assert form.is_valid(), form.errors
    assert form.spec["integrations"] == {"wandb": {"project": "attune", "tags": ["demo", "lora"]},
                                         "tensorboard": {}}
    form = JobForm(form_data(setup, integrations__wandb__project="attune"))
    assert not form.is_valid()
    assert "Switch on Weights & Biases" in form.errors["integrations__wandb__enabled"][0]
    form = JobForm(form_data(setup, integrations__wandb__enabled="on"))
    assert not form.is_valid() and "required" in form.errors["integrations__wandb__project"][0].lower()


@pytest.mark.django_db
def test_the_raw_spec_view_shows_the_json_that_will_run(admin_client, setup):
    data = form_data(setup, n_epochs__auto=None, n_epochs="2", preview="1")
    fragment = admin_client.post("/jobs/new/", data, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="raw-spec">') and "<html" not in fragment
    spec = json.loads(fragment.split('<pre class="mono spec-json">')[1].split("</pre>")[0].replace("&quot;", '"'))
    assert spec["n_epochs"] == 2 and spec["batch_size"] == "auto"
    # Without JavaScript the button shows the same spec in the page, and creates nothing.
    page = admin_client.post("/jobs/new/", data).content.decode()
    assert "&quot;n_epochs&quot;: 2" in page and not FineTuningJob.objects.exists()
    broken = admin_client.post("/jobs/new/", form_data(setup, seed="-1", preview="1"),
                               headers={"HX-Request": "true"}).content.decode()
    assert "Fix the fields marked" in broken and "seed" in broken


@pytest.mark.django_db
def test_submitting_the_form_creates_the_job_with_the_spec_as_typed(admin_client, setup):
    resp = admin_client.post("/jobs/new/", form_data(setup, n_epochs__auto=None, n_epochs="2",
                                                      suffix="intents", seed="42"))
    job = FineTuningJob.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.public_id}/"
    assert job.spec["n_epochs"] == 2 and job.spec["batch_size"] == "auto" and job.spec["seed"] == 42
    assert job.spec["model"] == "attune-tiny" and job.validation_file == setup["valid"]
    assert job.created_by.username == "alice" and job.parent is None and job.status == "queued"
    # auto resolved for 480 examples: 3 epochs were not asked for, 2 were; batch 8.
    assert job.resolved_spec["n_epochs"] == 2 and job.resolved_spec["batch_size"] == 8


@pytest.mark.django_db
def test_an_empty_seed_gets_a_random_one_stored_with_the_job(admin_client, setup):
    admin_client.post("/jobs/new/", form_data(setup))
    job = FineTuningJob.objects.get()
    assert isinstance(job.spec["seed"], int) and job.seed == job.spec["seed"]


@pytest.mark.django_db
def test_the_rerun_form_holds_the_parent_spec_as_requested_with_auto_kept(admin_client, setup):
    admin_client.post("/jobs/new/", form_data(setup, n_epochs__auto=None, n_epochs="2", suffix="intents",
                                              seed="5", integrations__wandb__enabled="on",
                                              integrations__wandb__project="p", integrations__wandb__tags="a, b"))
    parent = FineTuningJob.objects.get()
    html = admin_client.get(f"/jobs/{parent.public_id}/rerun/").content.decode()
    assert f"Re-run {parent.public_id}" in html
    assert 'value="2"' in field_html(html, "n_epochs") and "checked" not in field_html(html, "n_epochs")
    assert "checked" in field_html(html, "batch_size") and 'value="intents"' in field_html(html, "suffix")
    assert 'value="a, b"' in field_html(html, "integrations.wandb.tags")
    # Unchanged, the form gives back exactly the spec that was stored.
    initial = JobForm.initial_from_spec(parent.spec)
    data = {k: ("on" if v is True else "" if v is None else str(v)) for k, v in initial.items() if v is not False}
    form = JobForm(data)
    assert form.is_valid(), form.errors
    # The fields of other methods are left out of the form's spec; read through JobSpec, it is the stored one.
    assert JobSpec.model_validate(form.spec).model_dump(mode="json", exclude=set(WORKER_FIELDS)) == parent.spec
    assert not {"beta", "num_generations", "grader"} & set(form.spec)
    assert form.spec["integrations"]["wandb"] == {"project": "p", "tags": ["a", "b"]}


@pytest.mark.django_db
def test_a_rerun_with_three_epochs_records_its_parent(admin_client, setup):
    admin_client.post("/jobs/new/", form_data(setup, n_epochs__auto=None, n_epochs="2", seed="5"))
    parent = FineTuningJob.objects.get()
    resp = admin_client.post(f"/jobs/{parent.public_id}/rerun/",
                             form_data(setup, n_epochs__auto=None, n_epochs="3", seed="5"))
    child = FineTuningJob.objects.exclude(pk=parent.pk).get()
    assert resp["Location"] == f"/jobs/{child.public_id}/"
    assert child.parent == parent and child.spec["n_epochs"] == 3 and child.spec["seed"] == 5


@pytest.mark.django_db
def test_an_error_from_job_creation_lands_next_to_its_field(admin_client, setup):
    resp = admin_client.post("/jobs/new/", form_data(
        setup, integrations__tensorboard__enabled="on", integrations__tensorboard__log_dir="../../etc"))
    html = resp.content.decode()
    assert resp.status_code == 200 and not FineTuningJob.objects.exists()
    assert "relative to the job folder" in field_html(html, "integrations.tensorboard.log_dir")


# --- the eval a job runs on each epoch checkpoint, and the metric that marks its best checkpoint ------------

def option_tag(html, value):
    """The opening tag of the option with this value (its attributes in any order)."""
    start = html.index(f'<option value="{value}"')
    return html[start:html.index(">", start) + 1]


@pytest.mark.django_db
def test_the_form_offers_the_evals_with_prompts_and_their_criteria_as_best_metrics(admin_client, setup):
    from tests.factories import make_eval

    scored = make_eval("intents", criteria=("exact", "polite"))
    bare = make_eval("no prompts", criteria=("hidden",), epoch_data_source={})
    html = admin_client.get("/jobs/new/").content.decode()
    block = field_html(html, "eval")
    assert f'<option value="{scored.public_id}">intents ({scored.public_id})</option>' in block
    assert bare.public_id not in html and "selected" in option_tag(block, "")
    metrics = field_html(html, "best_checkpoint_metric")
    for value in ("auto", "full_valid_loss", "eval_mean_score", "eval_pass_rate", "eval:exact", "eval:polite"):
        assert f'value="{value}"' in metrics, value
    assert "eval:hidden" not in metrics
    assert f'data-evals="{scored.public_id}"' in option_tag(metrics, "eval:polite")
    assert "data-evals" not in option_tag(metrics, "full_valid_loss")
    assert "selected" in option_tag(metrics, "auto")


@pytest.mark.django_db
def test_a_job_made_with_an_eval_stores_it_and_its_best_metric_and_a_rerun_keeps_both(admin_client, setup):
    from tests.factories import make_eval

    scored = make_eval("intents", criteria=("exact", "polite"))
    resp = admin_client.post("/jobs/new/", form_data(setup, eval=scored.public_id,
                                                      best_checkpoint_metric="eval:polite"))
    job = FineTuningJob.objects.get()
    assert resp.status_code == 302
    assert job.spec["eval"] == scored.public_id and job.spec["best_checkpoint_metric"] == "eval:polite"
    assert job.best_metric == ("eval:polite", True)
    html = admin_client.get(f"/jobs/{job.public_id}/rerun/").content.decode()
    assert "selected" in option_tag(field_html(html, "eval"), scored.public_id)
    assert "selected" in option_tag(field_html(html, "best_checkpoint_metric"), "eval:polite")
    assert "selected" not in option_tag(field_html(html, "best_checkpoint_metric"), "auto")
    admin_client.post(f"/jobs/{job.public_id}/rerun/", form_data(setup, eval=scored.public_id,
                                                                 best_checkpoint_metric="eval:polite"))
    child = FineTuningJob.objects.exclude(pk=job.pk).get()
    assert child.spec["eval"] == scored.public_id and child.spec["best_checkpoint_metric"] == "eval:polite"


@pytest.mark.django_db
def test_an_unknown_eval_is_refused_on_its_field_and_makes_no_job(admin_client, setup):
    resp = admin_client.post("/jobs/new/", form_data(setup, eval="eval_0123456789abcdef"))
    html = resp.content.decode()
    assert resp.status_code == 200 and not FineTuningJob.objects.exists()
    block = field_html(html, "eval")
    assert "No eval with id &#x27;eval_0123456789abcdef&#x27;" in block and 'aria-invalid="true"' in block
    # The submitted id stays on the page, as an option of its own, so the person sees what was refused.
    tag = option_tag(block, "eval_0123456789abcdef")
    assert "selected" in tag and 'data-unlisted="1"' in tag


@pytest.mark.django_db
def test_a_best_metric_the_eval_cannot_score_is_refused_on_its_field(admin_client, setup):
    from tests.factories import make_eval

    one = make_eval("one", criteria=("exact",))
    make_eval("other", criteria=("polite",))
    html = admin_client.post("/jobs/new/", form_data(setup, eval=one.public_id,
                                                     best_checkpoint_metric="eval:polite")).content.decode()
    assert "has no testing criterion named &#x27;polite&#x27;; it has exact." in field_html(
        html, "best_checkpoint_metric")
    html = admin_client.post("/jobs/new/", form_data(setup, best_checkpoint_metric="eval_pass_rate")).content.decode()
    assert "needs an eval" in field_html(html, "best_checkpoint_metric")
    assert not FineTuningJob.objects.exists()


# --- reinforcement: the grader as JSON, the GRPO settings, fields by method -------------------------------------

@pytest.fixture
def rft_setup(setup):
    """setup's rows plus uploads of 200 reinforcement prompts and of 20, with the `label` the example grader
    reads."""
    from tests.factories import reinforcement_lines, upload

    return {**setup, "train": upload(reinforcement_lines(200, label="greeting"), "prompts.jsonl"),
            "valid": upload(reinforcement_lines(20, label="greeting"), "held-out.jsonl")}


def rft_form_data(setup, **changes):
    """What the browser sends with reinforcement picked (job_form.js leaves out packing, a supervised field), plus
    `changes` (None leaves a field out)."""
    rft = {"method": "reinforcement", "packing": None, "grader": json.dumps(EXAMPLE_GRADER, indent=2),
           "response_format": "", "compute_multiplier__auto": "on", "reasoning_effort": "auto",
           "num_generations__auto": "on", "max_completion_length": "256", "temperature": "1.0", "loss_type": "dapo"}
    return form_data(setup, **{**rft, **changes})


def test_the_example_grader_in_the_help_is_one_a_reinforcement_job_takes():
    from dashboard.forms import HELP_OVERRIDES
    from graders import validate_grader

    assert validate_grader(EXAMPLE_GRADER, context="rft")
    assert json.dumps(EXAMPLE_GRADER) in HELP_OVERRIDES["grader"]


@pytest.mark.django_db
def test_the_reinforcement_form_gives_a_spec_with_the_grader_as_an_object(rft_setup):
    form = JobForm(rft_form_data(rft_setup, num_generations__auto=None, num_generations="4", batch_size__auto=None,
                                 batch_size="16", temperature="0.8", loss_type="grpo", eval_interval__auto="on",
                                 eval_interval=""))
    assert form.is_valid(), form.errors
    spec = form.spec
    assert spec["method"] == "reinforcement" and spec["grader"] == EXAMPLE_GRADER and "response_format" not in spec
    assert (spec["num_generations"], spec["batch_size"], spec["temperature"], spec["loss_type"]) == (4, 16, 0.8, "grpo")
    assert spec["compute_multiplier"] == "auto" and spec["reasoning_effort"] == "auto" and spec["beta"] == "auto"
    # eval_interval may be auto (a quarter of an epoch for reinforcement) but defaults to a number.
    assert spec["eval_interval"] == "auto" and spec["eval_samples"] == 16 and "packing" not in spec


@pytest.mark.django_db
def test_posting_the_reinforcement_form_creates_the_job(admin_client, rft_setup):
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}}}
    resp = admin_client.post("/jobs/new/", rft_form_data(rft_setup, response_format=json.dumps(schema),
                                                          suffix="rft", seed="3"))
    job = FineTuningJob.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.public_id}/"
    assert job.spec["method"] == "reinforcement" and job.spec["grader"] == EXAMPLE_GRADER
    assert job.spec["response_format"] == schema and job.training_file == rft_setup["train"]
    assert job.status == "queued" and job.resolved_spec["best_checkpoint_metric"] == "full_valid_mean_reward"
    assert job.best_metric == ("full_valid_mean_reward", True)


@pytest.mark.django_db
def test_a_grader_that_is_not_json_is_refused_next_to_its_field_and_kept(admin_client, rft_setup):
    resp = admin_client.post("/jobs/new/", rft_form_data(rft_setup, grader='{"type": "string_check",'))
    html = resp.content.decode()
    assert resp.status_code == 200 and not FineTuningJob.objects.exists()
    block = field_html(html, "grader")
    assert "This is not JSON: Expecting property name enclosed in double quotes (line 1, column 25)." in block
    assert "{&quot;type&quot;: &quot;string_check&quot;," in block  # the text typed stays in the textarea
    form = JobForm(rft_form_data(rft_setup, grader="[1, 2]"))
    assert not form.is_valid() and form.errors["grader"] == ["Give a JSON object ({…}), not a JSON list."]
    form = JobForm(rft_form_data(rft_setup, response_format="nope"))
    assert not form.is_valid() and form.errors["response_format"][0].startswith("This is not JSON")


@pytest.mark.django_db
def test_a_grader_the_reinforcement_check_refuses_names_its_fault_next_to_its_field(admin_client, rft_setup):
    bad = json.loads(json.dumps(EXAMPLE_GRADER))
    bad["graders"]["exact"]["operation"] = "equals"
    html = admin_client.post("/jobs/new/", rft_form_data(rft_setup, grader=json.dumps(bad))).content.decode()
    assert "grader.graders.exact.operation &#x27;equals&#x27; is not one of eq, ne, like, ilike" in field_html(
        html, "grader")
    label = {"type": "label_model", "name": "tone", "model": "attune-tiny", "labels": ["kind", "rude"],
             "passing_labels": ["kind"], "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    form = JobForm(rft_form_data(rft_setup, grader=json.dumps(label)))
    assert not form.is_valid()
    assert form.errors["grader"] == ["grader 'tone': label_model cannot be a reinforcement job's grader; put it "
                                     "inside a multi grader"]
    form = JobForm(rft_form_data(rft_setup, grader=""))
    assert not form.is_valid() and form.errors["grader"][0].startswith("grader is required for the reinforcement")
    assert not FineTuningJob.objects.exists()


@pytest.mark.django_db
def test_a_response_format_the_spec_refuses_is_shown_next_to_its_field(rft_setup):
    form = JobForm(rft_form_data(rft_setup, response_format='{"type": "json_object"}'))
    assert not form.is_valid()
    assert form.errors["response_format"] == ["response_format must have type 'json_schema' (a reinforcement answer "
                                              "is graded as text otherwise: leave it out)"]


@pytest.mark.django_db
def test_a_grader_error_from_job_creation_lands_on_the_grader_field(admin_client, rft_setup, monkeypatch):
    """create_job checks a score_model's judge; its JobError names a path inside the grader."""
    from training.models import JobError

    def refuse(spec, user):
        raise JobError("grader.graders.tone.model", "grader.graders.tone.model: no model named 'judge-x'.",
                       "model_not_found")

    monkeypatch.setattr("dashboard.views.create_job", refuse)
    html = admin_client.post("/jobs/new/", rft_form_data(rft_setup)).content.decode()
    assert "no model named &#x27;judge-x&#x27;." in field_html(html, "grader")
    form = JobForm(rft_form_data(rft_setup))
    assert form.is_valid(), form.errors
    form.add_spec_error("grader.input[0].content", "unknown variable")
    form.add_spec_error("response_format.json_schema.schema", "not a schema")
    assert form.errors == {"grader": ["unknown variable"], "response_format": ["not a schema"]}


@pytest.mark.django_db
def test_fields_of_other_methods_stay_out_of_the_spec_and_a_value_typed_in_one_is_refused(rft_setup):
    # As first shown (every field sent, with its default), a supervised job's spec holds none of the others'.
    form = JobForm(rft_form_data(rft_setup, method="supervised", grader=""))
    assert form.is_valid(), form.errors
    assert not {"grader", "response_format", "beta", "num_generations", "temperature", "loss_type",
                "compute_multiplier", "reasoning_effort", "max_completion_length"} & set(form.spec)
    # Hidden by job_form.js, a field is not sent at all: the same.
    assert JobForm(form_data(rft_setup, beta__auto=None)).is_valid()
    # A value typed in one is refused next to it, never dropped unseen.
    form = JobForm(rft_form_data(rft_setup, method="supervised", num_generations__auto=None, num_generations="4",
                                 temperature="0.7"))
    assert not form.is_valid()
    assert form.errors["num_generations"] == ["num_generations applies to reinforcement jobs only: clear it, or pick "
                                              "that method."]
    assert "temperature applies to reinforcement jobs only" in form.errors["temperature"][0]
    assert "grader applies to reinforcement jobs only" in form.errors["grader"][0]
    form = JobForm(form_data(rft_setup, method="dpo", packing="on", beta__auto=None, beta="0.2"))
    assert not form.is_valid() and list(form.errors) == ["packing"]
    form = JobForm(rft_form_data(rft_setup, beta__auto=None, beta="0.04"))
    assert form.is_valid(), form.errors
    assert form.spec["beta"] == 0.04


@pytest.mark.django_db
def test_rerunning_a_reinforcement_job_fills_in_its_grader(admin_client, rft_setup):
    from training.engine.spec import parse_spec

    spec = parse_spec({"model": "attune-tiny", "training_file": rft_setup["train"].public_id, "seed": 4,
                       "method": "reinforcement", "grader": EXAMPLE_GRADER, "num_generations": 4,
                       "batch_size": 8}).model_dump(mode="json", exclude=set(WORKER_FIELDS))
    parent = FineTuningJob.objects.create(base_model=rft_setup["base"], training_file=rft_setup["train"],
                                          spec=spec, seed=4, status="succeeded")
    html = admin_client.get(f"/jobs/{parent.public_id}/rerun/").content.decode()
    assert "&quot;calculate_output&quot;: &quot;0.7 * exact + 0.3 * close&quot;" in field_html(html, "grader")
    assert '<option value="reinforcement" selected>' in field_html(html, "method")
    assert 'value="4"' in field_html(html, "num_generations")
    initial = JobForm.initial_from_spec(parent.spec)
    data = {k: ("on" if v is True else "" if v is None else str(v)) for k, v in initial.items() if v is not False}
    form = JobForm(data)
    assert form.is_valid(), form.errors
    assert form.spec["grader"] == EXAMPLE_GRADER and form.spec["num_generations"] == 4
    assert JobSpec.model_validate(form.spec).model_dump(mode="json", exclude=set(WORKER_FIELDS)) == parent.spec


@pytest.mark.django_db
def test_the_best_metric_offers_the_full_valid_reward_for_reinforcement_jobs(admin_client, rft_setup):
    metrics = field_html(admin_client.get("/jobs/new/").content.decode(), "best_checkpoint_metric")
    assert 'data-methods="reinforcement"' in option_tag(metrics, "full_valid_mean_reward")
    assert 'data-methods="supervised dpo"' in option_tag(metrics, "full_valid_loss")
    form = JobForm(rft_form_data(rft_setup, best_checkpoint_metric="full_valid_mean_reward"))
    assert form.is_valid(), form.errors
    form = JobForm(form_data(rft_setup, best_checkpoint_metric="full_valid_mean_reward"))
    assert not form.is_valid()
    assert "full_valid_mean_reward is a reinforcement job's" in form.errors["best_checkpoint_metric"][0]

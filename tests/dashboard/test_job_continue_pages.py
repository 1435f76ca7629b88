"""Fine-tuning a fine-tuned model in the browser: the form lists the snapshots, "Fine-tune further" opens it on
one, and the job page shows the chain of snapshots its weights come from."""

from urllib.parse import quote

import pytest

from tests import factories
from tests.dashboard.test_forms_job import field_html, form_data
from training.models import FineTuningJob


@pytest.fixture
def setup(base_model, admin_user):
    parent = factories.make_finished_job(admin_user, suffix="intents")
    return {"base": base_model, "parent": parent, "train": factories.make_data_file("train.jsonl"),
            "valid": factories.make_data_file("valid.jsonl", n_examples=60)}


@pytest.mark.django_db
def test_the_form_lists_base_models_then_fine_tuned_snapshots(admin_client, setup):
    block = field_html(admin_client.get("/jobs/new/").content.decode(), "model")
    parent = setup["parent"]
    assert '<optgroup label="Base models">' in block and '<optgroup label="Fine-tuned models">' in block
    assert block.index("attune-tiny") < block.index(parent.fine_tuned_model)
    assert f'value="{parent.checkpoints.get(epoch=1).model_name}"' in block
    assert 'value="attune-tiny" selected' in block


@pytest.mark.django_db
def test_fine_tune_further_opens_the_form_on_the_snapshot_and_makes_a_job_on_it(admin_client, setup):
    parent = setup["parent"]
    page = admin_client.get(f"/jobs/{parent.public_id}/").content.decode()
    link = f'/jobs/new/?model={quote(parent.fine_tuned_model, safe="")}'
    assert f'href="{link}" id="fine-tune-further"' in page
    block = field_html(admin_client.get(link).content.decode(), "model")
    assert f'value="{parent.fine_tuned_model}" selected' in block

    resp = admin_client.post("/jobs/new/", form_data(setup, model=parent.fine_tuned_model))
    job = FineTuningJob.objects.exclude(pk=parent.pk).get()
    assert resp.status_code == 302 and job.init_checkpoint == parent.checkpoints.get(is_final=True)
    page = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    chain = page[page.index('id="starting-chain"'):]
    chain = chain[:chain.index("</p>")]
    assert "attune-tiny" in chain and parent.fine_tuned_model in chain and "this job" in chain
    parent_page = admin_client.get(f"/jobs/{parent.public_id}/").content.decode()
    assert job.public_id in parent_page[parent_page.index('id="trained-further"'):]


@pytest.mark.django_db
def test_a_refused_snapshot_request_lands_on_its_field(admin_client, setup):
    resp = admin_client.post("/jobs/new/", form_data(setup, model=setup["parent"].fine_tuned_model, lora_r="8"))
    assert resp.status_code == 200 and FineTuningJob.objects.count() == 1
    assert "training continues that adapter" in field_html(resp.content.decode(), "lora_r")
    resp = admin_client.post("/jobs/new/", form_data(setup, model="ft:attune-tiny::nothing1"))
    assert "Unknown fine-tuned model" in field_html(resp.content.decode(), "model")

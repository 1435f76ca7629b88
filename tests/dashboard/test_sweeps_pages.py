"""The new-job form's Sweep section (preview, errors on its fields), the sweeps list and a sweep's page."""

import json
import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.dashboard.test_forms_job import form_data
from tests.factories import make_data_file
from training.models import Checkpoint, FineTuningJob, Sweep
from training.sweeps import create_sweep


@pytest.fixture
def setup(base_model):
    return {"base": base_model, "train": make_data_file("train.jsonl"),
            "valid": make_data_file("valid.jsonl", n_examples=60)}


def sweep_data(setup, mode="grid", rows=(), **changes):
    """The form as the browser sends it with the Sweep section's rows: (field, values) for a grid, (field, min,
    max) for a random sweep."""
    data = form_data(setup, **changes)
    data["sweep-mode"] = mode
    for i, row in enumerate(rows, start=1):
        data[f"sweep-field_{i}"] = row[0]
        if mode == "grid":
            data[f"sweep-values_{i}"] = row[1]
        else:
            data[f"sweep-min_{i}"], data[f"sweep-max_{i}"] = row[1], row[2]
    return data


def preview(admin_client, data):
    return admin_client.post("/jobs/new/", {**data, "preview": "1"}, headers={"HX-Request": "true"})


def test_the_form_has_a_collapsed_sweep_section(admin_client, setup):
    html = admin_client.get("/jobs/new/").content.decode()
    assert re.search(r'<details class="card" id="sweep">', html)
    assert 'name="sweep-field_3"' in html and 'name="sweep-field_4"' not in html
    assert '<option value="learning_rate_multiplier">' in html and '<option value="n_gpus">' not in html


def test_the_preview_shows_how_many_jobs_and_their_values(admin_client, setup):
    data = sweep_data(setup, rows=[("lora_r", "4, 8"), ("learning_rate_multiplier", "0.5, 1, 2")])
    resp = preview(admin_client, data)
    html = resp.content.decode()
    assert resp.status_code == 200 and "Sweep: 6 jobs" in html
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>(.*?)</tr>", html)
    assert len(rows) == 6
    assert re.findall(r'<td class="num">([^<]*)</td>', rows[1][1]) == ["4", "1"]
    assert Sweep.objects.count() == 0 and FineTuningJob.objects.count() == 0


def test_a_random_preview_shows_its_draws_and_seed(admin_client, setup):
    data = sweep_data(setup, "random", [("lora_r", "4", "64")], **{"sweep-n": "5", "sweep-seed": "7"})
    html = preview(admin_client, data).content.decode()
    assert "Sweep: 5 jobs" in html and "seed <span class=\"mono\">7</span>" in html


def test_submitting_a_sweep_creates_its_jobs_and_opens_its_page(admin_client, setup):
    resp = admin_client.post("/jobs/new/", sweep_data(setup, rows=[("lora_r", "4, 8, 16")]))
    sweep = Sweep.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/sweeps/{sweep.public_id}/"
    assert sorted(job.spec["lora_r"] for job in sweep.jobs.all()) == [4, 8, 16]
    assert sweep.spec["training_file"] == setup["train"].public_id


@pytest.mark.parametrize("rows, key, words", [
    ([("lora_r", "4, 0")], "values_1", "sweep.fields.lora_r[1]"),
    ([("learning_rate_multiplier", "1, abc")], "values_1", "'abc'"),
    ([("beta", "0.1, 0.2")], "field_1", "DPO and reinforcement jobs only"),
    ([("lora_r", "")], "values_1", "empty"),
    ([("lora_r", "1, 2, 3, 4"), ("lora_alpha", "1, 2, 3, 4")], "__all__", "16 jobs"),
])
def test_a_bad_sweep_lands_on_its_field_and_makes_nothing(admin_client, setup, rows, key, words):
    resp = admin_client.post("/jobs/new/", sweep_data(setup, rows=rows))
    assert resp.status_code == 200
    errors = resp.context["sweep_form"].errors
    assert any(words in message for message in errors[key]), errors
    assert Sweep.objects.count() == 0 and FineTuningJob.objects.count() == 0


def test_too_many_random_draws_land_on_the_draws_field(admin_client, setup):
    data = sweep_data(setup, "random", [("lora_r", "4", "8")], **{"sweep-n": "13", "sweep-seed": "1"})
    resp = admin_client.post("/jobs/new/", data)
    assert "from 1 to 12" in resp.context["sweep_form"].errors["n"][0]
    assert Sweep.objects.count() == 0


def test_without_a_swept_field_the_form_makes_one_job(admin_client, setup):
    resp = admin_client.post("/jobs/new/", sweep_data(setup))
    assert resp.status_code == 302 and FineTuningJob.objects.count() == 1 and Sweep.objects.count() == 0


@pytest.fixture
def sweep(setup, admin_user):
    """A sweep of four lora_r values: two succeeded, one running, one queued; checkpoints with known losses."""
    made = create_sweep({"model": "attune-tiny", "training_file": setup["train"].public_id,
                         "validation_file": setup["valid"].public_id}, {"fields": {"lora_r": [4, 8, 16, 32]}},
                        admin_user)
    jobs = list(made.jobs.order_by("created_at", "id"))
    losses = {0: [0.9, 0.6], 1: [0.4, 0.5], 2: [0.3]}
    for i, values in losses.items():
        for epoch, loss in enumerate(values, start=1):
            Checkpoint.objects.create(job=jobs[i], epoch=epoch, step=epoch * 10, path=f"x/{i}/{epoch}",
                                      metrics={"full_valid_loss": loss})
    FineTuningJob.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(status="succeeded")
    FineTuningJob.objects.filter(pk=jobs[2].pk).update(status="running")
    made.ordered = jobs
    return made


def test_the_sweep_page_ranks_its_jobs_by_the_lowest_loss(admin_client, sweep):
    html = admin_client.get(f"/sweeps/{sweep.public_id}/").content.decode()
    order = re.findall(r'<tr data-job="(ftjob-\w+)">', html)
    a, b, c, d = sweep.ordered
    # c (running) has the lowest loss, 0.3; then b 0.4, a 0.6; d has no checkpoint yet.
    assert order == [c.public_id, b.public_id, a.public_id, d.public_id]
    assert "lowest is best" in html and "0.3000" in html


def test_the_sweep_page_hands_the_plot_its_data(admin_client, sweep):
    resp = admin_client.get(f"/sweeps/{sweep.public_id}/")
    html = resp.content.decode()
    data = json.loads(re.search(r'<script id="sweep-plot-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    assert data["dimensions"] == [{"label": "lora_r", "values": [16, 8, 4]}]
    assert data["metric"] == {"label": "full_valid_loss", "values": [0.3, 0.4, 0.6]}
    assert data["higher"] is False
    assert "plotly/plotly.min.js" in html and "js/sweep.js" in html


def test_the_sweep_page_links_compare_rerun_of_the_best_finished_job_and_cancel(admin_client, sweep):
    html = admin_client.get(f"/sweeps/{sweep.public_id}/").content.decode()
    a, b, c, d = sweep.ordered
    compare = re.search(r'<a class="button" href="([^"]+)" id="compare-sweep"', html).group(1).replace("&amp;", "&")
    assert urlparse(compare).path == "/jobs/compare/"
    assert parse_qs(urlparse(compare).query)["jobs"] == [c.public_id, b.public_id, a.public_id, d.public_id]
    assert admin_client.get(compare).status_code == 200
    # b is the best job that has succeeded (c, better, is still running).
    assert f'href="/jobs/{b.public_id}/rerun/" id="rerun-best"' in html
    assert f'action="/sweeps/{sweep.public_id}/cancel/"' in html and "csrfmiddlewaretoken" in html


def test_the_page_ranks_by_another_metric_when_asked(admin_client, sweep):
    a, b, c, d = sweep.ordered
    Checkpoint.objects.filter(job=a).update(metrics={"full_valid_loss": 1.0, "eval_mean_score": 0.9})
    resp = admin_client.get(f"/sweeps/{sweep.public_id}/", {"metric": "eval_mean_score"})
    assert resp.context["metric"] == "eval_mean_score"
    assert resp.context["ranked"][0].job.pk == a.pk
    # An unknown metric falls back to the sweep's.
    assert admin_client.get(f"/sweeps/{sweep.public_id}/", {"metric": "nope"}).context["metric"] == "full_valid_loss"


def test_cancelling_the_sweep_cancels_the_jobs_that_have_not_ended(admin_client, sweep):
    resp = admin_client.post(f"/sweeps/{sweep.public_id}/cancel/")
    assert resp.status_code == 302
    statuses = [job.status for job in sweep.jobs.order_by("created_at", "id")]
    assert statuses == ["succeeded", "succeeded", "cancelled", "cancelled"]
    html = admin_client.get(f"/sweeps/{sweep.public_id}/").content.decode()
    assert "Cancelled 2 jobs" in html and 'id="cancel-sweep"' not in html


def test_the_sweeps_list_shows_each_sweep_and_the_jobs_list_links_to_it(admin_client, sweep):
    html = admin_client.get("/sweeps/").content.decode()
    assert f'href="/sweeps/{sweep.public_id}/"' in html and "lora_r" in html
    assert 'href="/sweeps/" id="sweeps-link"' in admin_client.get("/jobs/").content.decode()


def test_evaluators_get_403_on_the_sweep_pages(evaluator_client, sweep):
    assert evaluator_client.get("/sweeps/").status_code == 403
    assert evaluator_client.get(f"/sweeps/{sweep.public_id}/").status_code == 403
    assert evaluator_client.post(f"/sweeps/{sweep.public_id}/cancel/").status_code == 403
    assert sweep.jobs.filter(status="cancelled").count() == 0

"""Jobs list, job detail, controls and compare, through the real URLs with rows made directly."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from training.models import BaseModel, Checkpoint, FineTuningJob, JobEvent, MetricPoint

SPEC = {"model": "attune-tiny", "training_file": None, "method": "supervised", "adapter": "lora",
        "n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": "auto", "beta": "auto", "seed": 7}


def make_job(base_model, train_file, user=None, status="succeeded", minutes_ago=0, **fields):
    spec = dict(SPEC, training_file=train_file.public_id, **fields.pop("spec", {}))
    return FineTuningJob.objects.create(
        base_model=base_model, training_file=train_file, created_by=user, status=status, spec=spec,
        suffix=spec.get("suffix") or "", seed=spec["seed"],
        created_at=timezone.now() - timedelta(minutes=minutes_ago), **fields)


@pytest.fixture
def trained_job(base_model, train_file, admin_user):
    """A finished two-epoch job with curves, events and two checkpoints."""
    job = make_job(base_model, train_file, admin_user, spec={"suffix": "intents", "n_epochs": 2},
                   fine_tuned_model="ft:attune-tiny:intents:abcdefgh", step=120, total_steps=120, epoch=2.0,
                   resolved_spec=dict(SPEC, training_file=train_file.public_id, n_epochs=2,
                                      learning_rate_multiplier=1.0, beta=0.1),
                   started_at=timezone.now() - timedelta(minutes=5), finished_at=timezone.now())
    for step in range(1, 121):
        MetricPoint.objects.create(job=job, scope="train", step=step, epoch=step / 60, loss=3 - step / 60,
                                   accuracy=step / 200, learning_rate=2e-4 * (1 - step / 120))
    for step in (60, 120):
        MetricPoint.objects.create(job=job, scope="full", step=step, epoch=step / 60, loss=2.5 - step / 100,
                                   accuracy=0.3 + step / 1000)
        Checkpoint.objects.create(job=job, epoch=step // 60, step=step, path=f"jobs/{job.public_id}/ckpt-{step}",
                                  bytes=2_500_000, is_final=step == 120,
                                  metrics={"train_loss": 1.5, "train_mean_token_accuracy": 0.6,
                                           "valid_loss": 1.7, "valid_mean_token_accuracy": 0.55,
                                           "full_valid_loss": 2.5 - step / 100,
                                           "full_valid_mean_token_accuracy": 0.3 + step / 1000})
    JobEvent.objects.create(job=job, message="Fine-tuning job started")
    JobEvent.objects.create(job=job, message="The job has successfully completed")
    return job


@pytest.mark.django_db
def test_the_jobs_list_shows_newest_first_with_status_model_method_and_owner(admin_client, base_model, train_file,
                                                                             admin_user):
    old = make_job(base_model, train_file, admin_user, status="failed", minutes_ago=30)
    new = make_job(base_model, train_file, admin_user, status="running", spec={"adapter": "full", "suffix": "v2"},
                   step=30, total_steps=120)
    html = admin_client.get("/jobs/").content.decode()
    assert html.index(new.public_id) < html.index(old.public_id)
    row = html[html.index(f'data-job="{new.public_id}"'):html.index(f'data-job="{old.public_id}"')]
    assert "running" in row and "attune-tiny" in row and "v2" in row and "supervised · full" in row
    assert "30/120" in row and "alice" in row
    # A running job on the page keeps the table refreshing itself.
    assert 'hx-trigger="every 5s"' in html


@pytest.mark.django_db
def test_the_jobs_list_filters_by_status_and_model(admin_client, base_model, train_file):
    other = BaseModel.objects.create(name="other-model", source="other")
    done = make_job(base_model, train_file, status="succeeded")
    failed = make_job(base_model, train_file, status="failed")
    elsewhere = FineTuningJob.objects.create(base_model=other, training_file=train_file, status="succeeded",
                                             spec=dict(SPEC, model="other-model"))
    html = admin_client.get("/jobs/", {"status": "failed"}).content.decode()
    assert failed.public_id in html and done.public_id not in html and elsewhere.public_id not in html
    html = admin_client.get("/jobs/", {"model": "other-model"}).content.decode()
    assert elsewhere.public_id in html and done.public_id not in html and failed.public_id not in html
    html = admin_client.get("/jobs/", {"status": "succeeded", "model": "attune-tiny"}).content.decode()
    assert done.public_id in html and failed.public_id not in html and elsewhere.public_id not in html
    # Nothing on the page can change any more: no polling.
    assert "every 5s" not in html


@pytest.mark.django_db
def test_the_jobs_list_is_paginated_and_keeps_the_filters_in_the_page_links(admin_client, base_model, train_file):
    jobs = [make_job(base_model, train_file, status="succeeded", minutes_ago=i) for i in range(30)]
    first = admin_client.get("/jobs/", {"status": "succeeded"}).content.decode()
    assert jobs[0].public_id in first and jobs[29].public_id not in first
    assert "?status=succeeded&page=2" in first and "30 jobs" in first
    second = admin_client.get("/jobs/", {"status": "succeeded", "page": 2}).content.decode()
    assert jobs[29].public_id in second and jobs[0].public_id not in second


@pytest.mark.django_db
def test_htmx_asks_the_jobs_list_for_its_table_only(admin_client, base_model, train_file):
    job = make_job(base_model, train_file)
    resp = admin_client.get("/jobs/", {"status": "succeeded"}, headers={"HX-Request": "true"})
    html = resp.content.decode()
    assert job.public_id in html and '<form method="get" action="/jobs/compare/" id="job-table"' in html
    assert "<html" not in html


@pytest.mark.django_db
def test_the_job_page_shows_status_model_name_hyperparameters_files_checkpoints_and_events(admin_client,
                                                                                           trained_job):
    html = admin_client.get(f"/jobs/{trained_job.public_id}/").content.decode()
    assert 'id="fine-tuned-model">ft:attune-tiny:intents:abcdefgh</code>' in html
    assert "data-copy=" in html and ">succeeded<" in html
    # Hyperparameters as requested and as resolved; learning rate = base rate × multiplier.
    table = html[html.index('id="hyperparameters"'):]
    assert "<td>auto</td><td>1.0</td>" in table and "0.0002" in table
    assert "train.jsonl" in html and trained_job.training_file.public_id in html
    # One row per checkpoint with its six metrics, newest (final) first.
    rows = html[html.index('id="job-checkpoints"'):]
    assert rows.index('data-epoch="2"') < rows.index('data-epoch="1"')
    assert "1.3000" in rows and "0.4200" in rows and "1.9000" in rows  # full-validation metrics
    assert "2.4 MB" in rows
    # Events newest first, and the websocket that streams the rest.
    assert html.index("successfully completed") < html.index("Fine-tuning job started")
    assert f'data-ws-path="/ws/jobs/{trained_job.public_id}/"' in html
    assert "plotly/plotly.min.js" in html and "js/job.js" in html


@pytest.mark.django_db
def test_checkpoints_link_to_the_playground_and_to_their_download(admin_client, trained_job):
    html = admin_client.get(f"/jobs/{trained_job.public_id}/").content.decode()
    final = trained_job.checkpoints.get(is_final=True)
    playground = reverse("playground")
    assert f'href="{playground}?snapshot=ft%3Aattune-tiny%3Aintents%3Aabcdefgh"' in html
    download = reverse("checkpoint_download", args=[final.public_id])
    assert f'href="{download}"' in html


@pytest.mark.django_db
def test_the_job_page_shows_its_lineage_both_ways(admin_client, base_model, train_file, trained_job):
    child = make_job(base_model, train_file, status="queued", parent=trained_job, spec={"n_epochs": 3})
    parent_html = admin_client.get(f"/jobs/{trained_job.public_id}/").content.decode()
    lineage = parent_html[parent_html.index('id="lineage"'):]
    assert f'href="/jobs/{child.public_id}/"' in lineage
    child_html = admin_client.get(f"/jobs/{child.public_id}/").content.decode()
    assert f'id="parent-link">{trained_job.public_id}</a>' in child_html
    assert f"/jobs/compare/?jobs={trained_job.public_id}&amp;jobs={child.public_id}" in child_html


@pytest.mark.django_db
def test_htmx_refreshes_the_header_and_checkpoints_as_fragments(admin_client, trained_job):
    url = f"/jobs/{trained_job.public_id}/"
    header = admin_client.get(url, {"part": "header"}, headers={"HX-Request": "true"}).content.decode()
    assert header.startswith('<section class="card job-header" id="job-header"') and "<html" not in header
    table = admin_client.get(url, {"part": "checkpoints"}, headers={"HX-Request": "true"}).content.decode()
    assert 'id="job-checkpoints"' in table and "<html" not in table and table.count("data-checkpoint=") == 2


@pytest.mark.django_db
def test_a_running_job_shows_progress_and_time_left(admin_client, base_model, train_file):
    job = make_job(base_model, train_file, status="running", step=30, total_steps=120, epoch=0.5,
                   tokens_per_second=1234.4, started_at=timezone.now() - timedelta(minutes=1))
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert 'value="0.25"' in html and "step 30 of 120" in html and "1234 tokens/s" in html
    # A quarter done in a minute: about three minutes left.
    assert "about 2 min 5" in html or "about 3 min 0" in html
    assert 'id="cancel-job"' in html and 'id="pause-job"' in html and "hx-confirm=" in html
    # The jobs list says it too, from the worker's estimated_finish when it has one.
    FineTuningJob.objects.filter(pk=job.pk).update(estimated_finish=timezone.now() + timedelta(minutes=7, seconds=30))
    row = admin_client.get("/jobs/").content.decode().split(f'data-job="{job.public_id}"')[1].split("</tr>")[0]
    assert "30/120 · about 7 min 2" in row or "30/120 · about 7 min 3" in row


@pytest.mark.django_db
def test_a_finished_job_has_no_cancel_or_pause_buttons(admin_client, trained_job):
    html = admin_client.get(f"/jobs/{trained_job.public_id}/").content.decode()
    assert 'id="cancel-job"' not in html and 'id="pause-job"' not in html and 'id="rerun"' in html


@pytest.mark.django_db
def test_an_admin_cancels_a_queued_job_with_the_button(admin_client, base_model, train_file):
    job = make_job(base_model, train_file, status="queued")
    resp = admin_client.post(f"/jobs/{job.public_id}/cancel/")
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.public_id}/"
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.events.filter(message__contains="cancelled by alice").exists()


@pytest.mark.django_db
def test_cancelling_a_finished_job_says_why_and_changes_nothing(admin_client, trained_job):
    resp = admin_client.post(f"/jobs/{trained_job.public_id}/cancel/", follow=True)
    trained_job.refresh_from_db()
    assert trained_job.status == "succeeded"
    assert "is succeeded; only a job that is" in resp.content.decode()


@pytest.mark.django_db
def test_pause_then_resume_through_htmx_returns_the_new_header(admin_client, base_model, train_file):
    job = make_job(base_model, train_file, status="queued")
    header = admin_client.post(f"/jobs/{job.public_id}/pause/", headers={"HX-Request": "true"}).content.decode()
    job.refresh_from_db()
    assert job.status == "paused" and 'id="resume-job"' in header and 'data-status="paused"' in header
    admin_client.post(f"/jobs/{job.public_id}/resume/", headers={"HX-Request": "true"})
    job.refresh_from_db()
    assert job.status == "queued"


@pytest.mark.django_db
def test_the_controls_answer_only_post(admin_client, base_model, train_file):
    job = make_job(base_model, train_file, status="queued")
    assert admin_client.get(f"/jobs/{job.public_id}/cancel/").status_code == 405
    job.refresh_from_db()
    assert job.status == "queued"


JOB_PAGES = ["/jobs/", "/jobs/new/", "/jobs/compare/", "/jobs/{id}/", "/jobs/{id}/rerun/",
             "/jobs/{id}/cancel/", "/jobs/{id}/pause/", "/jobs/{id}/resume/"]


@pytest.mark.django_db
@pytest.mark.parametrize("page", JOB_PAGES)
def test_evaluators_get_403_and_anonymous_users_go_to_login_on_every_job_page(client, evaluator_user, base_model,
                                                                              train_file, page):
    job = make_job(base_model, train_file, status="queued")
    url = page.format(id=job.public_id)
    method = client.post if url.endswith(("/cancel/", "/pause/", "/resume/")) else client.get
    resp = method(url)
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")
    client.force_login(evaluator_user)
    assert method(url).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"


@pytest.mark.django_db
def test_compare_overlays_the_curves_and_lists_the_spec_fields_that_differ(admin_client, base_model, train_file,
                                                                           trained_job):
    other = make_job(base_model, train_file, spec={"n_epochs": 3, "batch_size": 4}, parent=trained_job)
    Checkpoint.objects.create(job=other, epoch=1, step=120, path="x", metrics={"full_valid_loss": 1.25,
                                                                               "full_valid_mean_token_accuracy": 0.5})
    MetricPoint.objects.create(job=other, scope="train", step=1, loss=2.0, accuracy=0.1)
    resp = admin_client.get("/jobs/compare/", {"jobs": [trained_job.public_id, other.public_id]})
    html = resp.content.decode()
    differences = html[html.index('id="spec-differences"'):html.index("</table>", html.index('id="spec-differences"'))]
    assert ">n_epochs<" in differences and ">batch_size<" in differences and ">suffix<" in differences
    assert ">adapter<" not in differences and ">model<" not in differences
    full = html[html.index('id="full-validation"'):]
    assert "1.9000 / 0.3600" in full and "1.3000 / 0.4200" in full and "1.2500 / 0.5000" in full and "2.5000" not in full
    series = json.loads(html[html.index('id="compare-series"'):].split(">", 1)[1].split("</script>")[0])
    assert [s["id"] for s in series] == [trained_job.public_id, other.public_id]
    assert len({s["colour"] for s in series}) == 2
    assert len(series[0]["curves"]["train_loss"]["x"]) == 120 and series[0]["curves"]["full_valid_loss"]["x"] == [60, 120]
    assert series[1]["curves"]["train_loss"] == {"x": [1], "y": [2.0]} and "valid_loss" not in series[1]["curves"]


def _json_script(html, element_id):
    return json.loads(html[html.index(f'id="{element_id}"'):].split(">", 1)[1].split("</script>")[0])


@pytest.mark.django_db
def test_the_chart_pages_carry_the_trace_names_the_websocket_uses(admin_client, base_model, train_file, trained_job):
    from dashboard.consumers import TRACES

    other = make_job(base_model, train_file)
    job_page = admin_client.get(f"/jobs/{trained_job.public_id}/").content.decode()
    compare_page = admin_client.get("/jobs/compare/", {"jobs": [trained_job.public_id, other.public_id]})
    assert _json_script(job_page, "trace-names") == TRACES
    assert _json_script(compare_page.content.decode(), "trace-names") == TRACES
    assert TRACES["sampled"]["loss"] == "valid_loss" and TRACES["full"]["accuracy"] == "full_valid_accuracy"


def test_the_chart_scripts_name_no_trace_of_their_own():
    """job.js and compare_runs.js read the trace names from the page; a figure's own name (loss,
    learning_rate) is the metric's field, not a trace name."""
    from pathlib import Path

    from dashboard.consumers import POINT_FIELDS, TRACES

    names = {name for fields in TRACES.values() for name in fields.values()} - set(POINT_FIELDS)
    static = Path(__file__).resolve().parents[2] / "static" / "js"
    for script in ("job.js", "compare_runs.js"):
        text = (static / script).read_text()
        assert [name for name in sorted(names) if f'"{name}"' in text] == [], script


@pytest.mark.django_db
def test_compare_thins_a_long_curve_to_a_thousand_points(admin_client, base_model, train_file, trained_job):
    long_job = make_job(base_model, train_file)
    MetricPoint.objects.bulk_create([MetricPoint(job=long_job, scope="train", step=s, loss=1 + (s == 4321) * 8)
                                     for s in range(1, 5001)])
    html = admin_client.get("/jobs/compare/", {"jobs": [trained_job.public_id, long_job.public_id]}).content.decode()
    series = json.loads(html[html.index('id="compare-series"'):].split(">", 1)[1].split("</script>")[0])
    curve = series[1]["curves"]["train_loss"]
    assert len(curve["x"]) == 1000 and curve["x"][0] == 1 and curve["x"][-1] == 5000
    assert 4321 in curve["x"]  # the spike survives the thinning


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, 5])
def test_compare_refuses_fewer_than_two_or_more_than_four_jobs(admin_client, base_model, train_file, count):
    ids = [make_job(base_model, train_file).public_id for _ in range(count)]
    html = admin_client.get("/jobs/compare/", {"jobs": ids}).content.decode()
    assert f"Pick 2 to 4 jobs to compare ({count} picked)." in html and "compare-series" not in html


@pytest.mark.django_db
def test_compare_names_a_job_that_does_not_exist(admin_client, base_model, train_file):
    job = make_job(base_model, train_file)
    html = admin_client.get("/jobs/compare/", {"jobs": [job.public_id, "ftjob-nope"]}).content.decode()
    assert "No such job: ftjob-nope." in html


@pytest.mark.django_db
def test_the_jobs_list_and_job_page_cost_the_same_queries_for_many_rows(admin_client, base_model, train_file,
                                                                        trained_job, django_assert_max_num_queries):
    for i in range(40):
        make_job(base_model, train_file, status="running", minutes_ago=i + 1)
    for epoch in range(3, 13):
        Checkpoint.objects.create(job=trained_job, epoch=epoch, step=epoch * 60, path="x", metrics={})
    # session + user + filter choices + count + page rows: no query per row.
    with django_assert_max_num_queries(8):
        admin_client.get("/jobs/")
    with django_assert_max_num_queries(12):
        admin_client.get(f"/jobs/{trained_job.public_id}/")


# --- reinforcement jobs: rewards in place of token accuracy ------------------------------------------------

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.label}}",
          "operation": "eq"}


@pytest.fixture
def rft_job(base_model, train_file, admin_user):
    return make_rft_job(base_model, train_file, admin_user)


def make_rft_job(base_model, train_file, user=None):
    """A finished two-epoch reinforcement job whose first epoch had the higher full-validation reward."""
    job = make_job(base_model, train_file, user, step=4, total_steps=4, epoch=2.0,
                   spec={"method": "reinforcement", "grader": GRADER, "suffix": "rft"})
    for step in range(1, 5):
        MetricPoint.objects.create(job=job, scope="train", step=step, epoch=step / 2, loss=0.01, reward=step / 10,
                                   frac_reward_zero_std=0.5, completion_tokens_mean=12.0, parse_error_rate=0.0,
                                   grader_error_rate=0.0, grader_scores={"exact": step / 10})
    for epoch, reward in ((1, 0.7), (2, 0.6)):
        MetricPoint.objects.create(job=job, scope="full", step=2 * epoch, epoch=epoch, reward=reward,
                                   parse_error_rate=0.125, grader_scores={"exact": reward})
        Checkpoint.objects.create(job=job, epoch=epoch, step=2 * epoch, path=f"jobs/{job.public_id}/ckpt-{epoch}",
                                  bytes=1000, is_final=epoch == 2,
                                  metrics={"step": 2 * epoch, "train_loss": 0.01, "train_mean_reward": 0.2 * epoch,
                                           "valid_reward_mean": 0.3 * epoch, "full_valid_mean_reward": reward,
                                           "full_valid_mean_parse_error": 0.125})
    return job


@pytest.mark.django_db
def test_a_reinforcement_jobs_page_charts_its_rewards_and_explains_them(admin_client, rft_job):
    from dashboard.views import JOB_CHARTS

    html = admin_client.get(f"/jobs/{rft_job.public_id}/").content.decode()
    for chart in ("chart-reward", "chart-graders", "chart-errors", "chart-zero-std", "chart-completion-tokens",
                  "chart-loss", "chart-lr"):
        assert f'id="{chart}"' in html, chart
    assert 'id="chart-accuracy"' not in html and 'id="chart-reward-margin"' not in html
    assert "a group whose rewards are all equal teaches nothing" in html[html.index('id="chart-zero-std-help"'):]
    assert _json_script(html, "job-charts") == JOB_CHARTS["reinforcement"]
    # Each chart draws metric point fields the trace names know, in some scope.
    from dashboard.consumers import TRACES

    fields = {field for scope in ("train", "sampled", "full") for field in TRACES[scope]}
    assert {f for chart in JOB_CHARTS["reinforcement"] for f in chart["figures"]} <= fields
    # No script or style inline (CSP): the page's data is in json_script blocks.
    assert "<style" not in html and "style=" not in html
    tags = ["<script" + rest.split(">", 1)[0] for rest in html.split("<script")[1:]]
    assert tags and all(tag.startswith(("<script src=", '<script id="')) for tag in tags), tags


@pytest.mark.django_db
def test_a_reinforcement_jobs_checkpoints_show_rewards_and_the_best_has_the_highest_full_valid_reward(
        admin_client, rft_job):
    html = admin_client.get(f"/jobs/{rft_job.public_id}/").content.decode()
    table = html[html.index('id="job-checkpoints"'):html.index("</section>", html.index('id="job-checkpoints"'))]
    for heading in ("Train mean reward", "Valid mean reward", "Full valid mean reward", "Full valid parse errors"):
        assert heading in table
    assert "Train loss" not in table and "Full valid acc." not in table
    first = table[table.index('data-epoch="1"'):table.index("</tr>", table.index('data-epoch="1"'))]
    assert 'class="badge best"' in first and "0.7000" in first and "0.3000" in first and "0.1250" in first
    second = table[table.index('data-epoch="2"'):table.index("</tr>", table.index('data-epoch="2"'))]
    assert 'class="badge best"' not in second
    assert "full_valid_mean_reward</span>\n    (highest is best)" in table


@pytest.mark.django_db
def test_compare_charts_the_rewards_of_reinforcement_runs(admin_client, base_model, train_file, rft_job,
                                                          trained_job):
    other = make_job(base_model, train_file, spec={"method": "reinforcement", "grader": GRADER}, parent=rft_job)
    MetricPoint.objects.create(job=other, scope="train", step=1, loss=0.02, reward=0.25,
                               grader_scores={"exact": 0.25})
    Checkpoint.objects.create(job=other, epoch=1, step=2, path="x", metrics={"full_valid_mean_reward": 0.5,
                                                                           "full_valid_mean_parse_error": 0.0})
    html = admin_client.get("/jobs/compare/", {"jobs": [rft_job.public_id, other.public_id]}).content.decode()
    assert 'id="compare-reward" data-figure="reward"' in html and 'id="compare-parse_error_rate"' in html
    assert 'id="compare-accuracy"' not in html and 'id="compare-loss"' in html
    series = _json_script(html, "compare-series")
    assert series[0]["curves"]["train_mean_reward"]["y"] == [0.1, 0.2, 0.3, 0.4]
    assert series[0]["curves"]["full_valid_mean_reward"] == {"x": [2, 4], "y": [0.7, 0.6]}
    assert series[1]["curves"]["train_grader:exact"] == {"x": [1], "y": [0.25]}
    full = html[html.index('id="full-validation"'):html.index("</table>", html.index('id="full-validation"'))]
    assert full.count("mean reward / parse errors") == 2
    assert "0.7000 / 0.1250" in full and "0.5000 / 0.0000" in full
    # A supervised run next to a reinforcement one: both charts, each run in the one that has its figure.
    mixed = admin_client.get("/jobs/compare/", {"jobs": [trained_job.public_id, rft_job.public_id]}).content.decode()
    assert 'id="compare-accuracy"' in mixed and 'id="compare-reward"' in mixed
    full = mixed[mixed.index('id="full-validation"'):]
    assert "loss / acc." in full and "mean reward / parse errors" in full

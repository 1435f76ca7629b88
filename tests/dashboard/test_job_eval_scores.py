"""A job that names an eval: its scores per epoch in the checkpoints table, the chart and compare runs, and the
best checkpoint marked by the job's best_checkpoint_metric. Checkpoints and eval runs are rows made directly."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from evals.models import EvalRun
from tests.dashboard.test_jobs_pages import make_job
from tests.factories import make_eval
from training.models import Checkpoint


@pytest.fixture
def intents_eval(db):
    return make_eval("intents", criteria=("exact", "polite"))


def add_checkpoint(job, epoch, full_valid_loss, scores=None, pass_rate=None, **fields):
    """A checkpoint at step 60 × epoch; `scores` ({criterion: mean}) as evals/epochs.py writes them."""
    metrics = {"train_loss": 1.0, "full_valid_loss": full_valid_loss}
    if scores is not None:
        metrics.update({"eval_run_id": f"evalrun_{job.pk}{epoch}", "eval_scores": scores, "eval_errored": 0,
                        "eval_mean_score": sum(scores.values()) / len(scores), "eval_pass_rate": pass_rate})
    return Checkpoint.objects.create(job=job, epoch=epoch, step=60 * epoch, path=f"jobs/{job.public_id}/e{epoch}",
                                     metrics=metrics, **fields)


def add_run(eval_obj, checkpoint, status, **fields):
    return EvalRun.objects.create(eval=eval_obj, job=checkpoint.job, checkpoint=checkpoint, status=status,
                                  data_source={"type": "completions"}, **fields)


def eval_job(base_model, train_file, eval_obj, metric="auto"):
    return make_job(base_model, train_file, spec={"eval": eval_obj.public_id, "best_checkpoint_metric": metric})


def row_html(html, checkpoint):
    start = html.index(f'data-checkpoint="{checkpoint.public_id}"')
    return html[start:html.index("</tr>", start)]


def best_rows(html, checkpoints):
    return [c.epoch for c in checkpoints if 'class="badge best"' in row_html(html, c)]


def json_script(html, element_id):
    return json.loads(html[html.index(f'id="{element_id}"'):].split(">", 1)[1].split("</script>")[0])


@pytest.mark.django_db
def test_the_checkpoints_table_shows_the_eval_scores_per_epoch_and_marks_the_highest_mean_best(
        admin_client, base_model, train_file, intents_eval):
    job = eval_job(base_model, train_file, intents_eval)
    first = add_checkpoint(job, 1, 2.0, {"exact": 0.4, "polite": 0.6}, pass_rate=0.5)
    second = add_checkpoint(job, 2, 1.5, {"exact": 0.7, "polite": 0.9}, pass_rate=0.75)
    third = add_checkpoint(job, 3, 1.2, {"exact": 0.6, "polite": 0.6}, pass_rate=0.6)
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    for heading in ("Eval mean", "Pass rate", ">exact<", ">polite<"):
        assert heading in html, heading
    row = row_html(html, second)
    assert "0.800" in row and "75%" in row and "0.700" in row and "0.900" in row
    assert "0.500" in row_html(html, first) and "50%" in row_html(html, first)
    # auto with an eval: the highest eval_mean_score, although epoch 3 has the lowest validation loss.
    assert best_rows(html, [first, second, third]) == [2]
    assert 'title="Best checkpoint by eval_mean_score (highest is best)"' in row
    legend = html[html.index('id="best-legend"'):]
    assert "eval_mean_score" in legend[:300] and "highest is best" in legend[:300]


@pytest.mark.django_db
def test_without_an_eval_the_lowest_full_validation_loss_is_best_and_no_eval_column_is_shown(
        admin_client, base_model, train_file):
    job = make_job(base_model, train_file)
    checkpoints = [add_checkpoint(job, 1, 2.0), add_checkpoint(job, 2, 1.1), add_checkpoint(job, 3, 1.4)]
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert best_rows(html, checkpoints) == [2]
    assert "Best checkpoint by full_valid_loss (lowest is best)" in html
    assert "Eval mean" not in html and 'id="chart-eval"' not in html and 'id="eval-curves"' not in html


@pytest.mark.django_db
def test_a_job_with_an_eval_can_still_mark_its_best_by_full_validation_loss(admin_client, base_model, train_file,
                                                                             intents_eval):
    job = eval_job(base_model, train_file, intents_eval, metric="full_valid_loss")
    checkpoints = [add_checkpoint(job, 1, 0.9, {"exact": 0.1, "polite": 0.1}, 0.1),
                   add_checkpoint(job, 2, 1.5, {"exact": 0.9, "polite": 0.9}, 0.9)]
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert best_rows(html, checkpoints) == [1]


@pytest.mark.django_db
def test_best_by_one_testing_criterion_reads_that_criterions_mean(admin_client, base_model, train_file,
                                                                  intents_eval):
    job = eval_job(base_model, train_file, intents_eval, metric="eval:polite")
    checkpoints = [add_checkpoint(job, 1, 2.0, {"exact": 0.9, "polite": 0.2}, 0.5),
                   add_checkpoint(job, 2, 1.5, {"exact": 0.1, "polite": 0.8}, 0.4),
                   add_checkpoint(job, 3, 1.0, {"exact": 0.9, "polite": 0.5}, 0.7)]
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert best_rows(html, checkpoints) == [2]
    assert "Best checkpoint by eval:polite (highest is best)" in html


@pytest.mark.django_db
def test_an_epoch_whose_eval_run_has_not_ended_says_queued_or_running_and_the_table_refreshes_itself(
        admin_client, base_model, train_file, intents_eval):
    job = eval_job(base_model, train_file, intents_eval)
    scored = add_checkpoint(job, 1, 2.0, {"exact": 0.5, "polite": 0.5}, 0.5)
    running = add_checkpoint(job, 2, 1.5)
    queued = add_checkpoint(job, 3, 1.2)
    add_run(intents_eval, running, EvalRun.IN_PROGRESS, n_items=5, n_done=2)
    add_run(intents_eval, queued, EvalRun.QUEUED)
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert ">running 2/5<" in row_html(html, running) and ">queued<" in row_html(html, queued)
    assert "0.500" in row_html(html, scored)
    # The only scored checkpoint is the best so far.
    assert best_rows(html, [scored, running, queued]) == [1]
    assert 'hx-trigger="job-checkpoint delay:300ms, every 10s"' in html


@pytest.mark.django_db
def test_once_every_run_has_ended_the_table_stops_refreshing_and_a_failed_run_says_so(
        admin_client, base_model, train_file, intents_eval):
    job = eval_job(base_model, train_file, intents_eval)
    long_ago = timezone.now() - timedelta(hours=1)
    scored = add_checkpoint(job, 1, 2.0, {"exact": 0.5, "polite": 0.5}, 0.5, created_at=long_ago)
    failed = add_checkpoint(job, 2, 1.5, created_at=long_ago)
    add_run(intents_eval, failed, EvalRun.FAILED, error={"code": "run_failed", "message": "the judge is down"},
            finished_at=long_ago)
    fragment = admin_client.get(f"/jobs/{job.public_id}/", {"part": "checkpoints"}, HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert html.startswith('<section class="card" id="job-checkpoints"')
    assert ">failed<" in row_html(html, failed) and 'title="the judge is down"' in row_html(html, failed)
    assert "0.500" in row_html(html, scored) and "every 10s" not in html


@pytest.mark.django_db
def test_the_fragment_the_page_reloads_carries_scores_that_arrived_since(admin_client, base_model, train_file,
                                                                        intents_eval):
    """The job page reloads the checkpoints fragment when a checkpoint message brings an eval_run_id its row
    does not have yet (static/js/job.js): the row names its run, and the reloaded fragment holds the scores."""
    job = eval_job(base_model, train_file, intents_eval)
    checkpoint = add_checkpoint(job, 1, 2.0)
    add_run(intents_eval, checkpoint, EvalRun.IN_PROGRESS)
    part = {"part": "checkpoints"}
    before = admin_client.get(f"/jobs/{job.public_id}/", part, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-eval-run=""' in row_html(before, checkpoint) and "running" in row_html(before, checkpoint)
    checkpoint.metrics = {**checkpoint.metrics, "eval_run_id": "evalrun_x", "eval_mean_score": 0.625,
                          "eval_pass_rate": 0.5, "eval_scores": {"exact": 0.5, "polite": 0.75}}
    checkpoint.save(update_fields=["metrics"])
    after = admin_client.get(f"/jobs/{job.public_id}/", part, HTTP_HX_REQUEST="true").content.decode()
    row = row_html(after, checkpoint)
    assert 'data-eval-run="evalrun_x"' in row and "0.625" in row and "0.750" in row and "running" not in row


@pytest.mark.django_db
def test_the_eval_chart_and_its_data_are_in_the_page_under_the_trace_names(admin_client, base_model, train_file,
                                                                           intents_eval):
    from dashboard.consumers import TRACES

    job = eval_job(base_model, train_file, intents_eval)
    add_checkpoint(job, 1, 2.0, {"exact": 0.4, "polite": 0.6}, 0.5)
    add_checkpoint(job, 2, 1.5)
    add_checkpoint(job, 3, 1.2, {"exact": 0.8, "polite": 1.0}, 1.0)
    html = admin_client.get(f"/jobs/{job.public_id}/").content.decode()
    assert 'id="chart-eval" data-title="Eval score per epoch"' in html
    curves = json_script(html, "eval-curves")
    mean, rate = TRACES["eval"]["mean_score"], TRACES["eval"]["pass_rate"]
    assert curves[mean] == {"x": [1, 3], "y": [0.5, 0.9], "step": [60, 180]}
    assert curves[rate] == {"x": [1, 3], "y": [0.5, 1.0], "step": [60, 180]}
    assert json_script(html, "trace-names")["eval"] == {"mean_score": "eval_mean_score",
                                                        "pass_rate": "eval_pass_rate"}


@pytest.mark.django_db
def test_the_checkpoint_message_carries_the_eval_scores_the_chart_reads(base_model, train_file, intents_eval):
    """job.js reads a checkpoint message's metrics under the eval trace names."""
    from dashboard.consumers import TRACES, job_history

    job = eval_job(base_model, train_file, intents_eval)
    add_checkpoint(job, 1, 2.0, {"exact": 0.4, "polite": 0.6}, 0.5)
    history = job_history(job)
    metrics = history["checkpoints"][0]["metrics"]
    assert metrics[TRACES["eval"]["mean_score"]] == 0.5 and metrics[TRACES["eval"]["pass_rate"]] == 0.5
    assert set(history["points"]) == {"train", "sampled", "full"}


@pytest.mark.django_db
def test_compare_runs_shows_each_jobs_eval_scores_per_epoch_with_its_best_marked(admin_client, base_model,
                                                                                train_file, intents_eval):
    a = eval_job(base_model, train_file, intents_eval)
    b = eval_job(base_model, train_file, intents_eval, metric="eval_pass_rate")
    add_checkpoint(a, 1, 2.0, {"exact": 0.4, "polite": 0.6}, 0.5)
    add_checkpoint(a, 2, 1.5, {"exact": 0.8, "polite": 0.8}, 0.25)
    add_checkpoint(b, 1, 2.0, {"exact": 0.9, "polite": 0.9}, 0.4)
    add_checkpoint(b, 2, 1.5, {"exact": 0.2, "polite": 0.2}, 0.6)
    add_checkpoint(b, 3, 1.4)
    html = admin_client.get("/jobs/compare/", {"jobs": [a.public_id, b.public_id]}).content.decode()
    table = html[html.index('id="eval-scores"'):]
    table = table[:table.index("</table>")]
    rows = {epoch: table[table.index(f'<tr data-epoch="{epoch}">'):] for epoch in (1, 2, 3)}
    rows = {epoch: row[:row.index("</tr>")] for epoch, row in rows.items()}
    cells = {epoch: row.split('<td class="num">')[2:] for epoch, row in rows.items()}
    assert "0.500 / 50%" in cells[1][0] and "0.900 / 40%" in cells[1][1]
    assert "0.800 / 25%" in cells[2][0] and "0.200 / 60%" in cells[2][1]
    assert cells[3][0].startswith("—") and "— / —" in cells[3][1]
    # Each job's own best: a by its mean score (epoch 2), b by its pass rate (epoch 2 too, not epoch 1).
    assert [e for e in (1, 2, 3) if "badge best" in cells[e][0]] == [2]
    assert [e for e in (1, 2, 3) if "badge best" in cells[e][1]] == [2]
    assert "best by <span class=\"mono\">eval_pass_rate</span> (highest)" in table
    assert 'id="evals-differ"' not in html
    series = json_script(html, "compare-series")
    assert series[0]["eval"]["eval_mean_score"] == {"x": [1, 2], "y": [0.5, 0.8], "step": [60, 120]}
    assert series[1]["eval"]["eval_pass_rate"]["y"] == [0.4, 0.6]
    assert 'id="compare-eval"' in html


@pytest.mark.django_db
def test_compare_runs_says_when_the_jobs_run_different_evals_and_leaves_eval_out_when_none_does(
        admin_client, base_model, train_file, intents_eval):
    other = make_eval("other", criteria=("exact",))
    a, b = eval_job(base_model, train_file, intents_eval), eval_job(base_model, train_file, other)
    html = admin_client.get("/jobs/compare/", {"jobs": [a.public_id, b.public_id]}).content.decode()
    assert 'id="evals-differ"' in html
    plain = [make_job(base_model, train_file), make_job(base_model, train_file)]
    html = admin_client.get("/jobs/compare/", {"jobs": [j.public_id for j in plain]}).content.decode()
    assert 'id="eval-scores"' not in html and 'id="compare-eval"' not in html

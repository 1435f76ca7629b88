"""The eval scores of a job's epoch checkpoints in a real Chromium: the job page's eval chart and table, a score
that arrives as a checkpoint message, the compare chart, and the new-job form's best-metric options.

Rows are made directly and the pages served by pytest-django's live server (no ASGI): the page's websocket is
replaced by a stand-in the test delivers messages through, in the protocol of dashboard/consumers.py.
"""

import pytest

from evals.models import EvalRun
from tests.browser import browser_marks, log_in, open_page, shot
from tests.dashboard.test_job_eval_scores import add_checkpoint, add_run, eval_job
from tests.factories import chat_lines, make_base_model, make_eval, make_user, upload
from training.live import checkpoint_payload

pytestmark = [*browser_marks, pytest.mark.django_db(transaction=True)]

FAKE_SOCKET = """
  window.fakeSockets = [];
  window.WebSocket = function (url) { this.url = url; window.fakeSockets.push(this);
    setTimeout(() => this.onopen && this.onopen(), 10); };
  window.WebSocket.prototype.send = function () {};
  window.deliver = function (message) {
    window.fakeSockets[window.fakeSockets.length - 1].onmessage({ data: JSON.stringify(message) }); };
"""


def chart_data(page, chart):
    return page.evaluate(f"() => document.getElementById('{chart}').data.map(t => [t.name, t.x, t.y])")


def test_eval_scores_draw_arrive_live_and_compare_in_the_browser(live_server, monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the rows below are written from it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    make_user("admin")
    base, train = make_base_model(), upload(chat_lines(20))
    intents = make_eval("intents", criteria=("exact", "polite"))
    job = eval_job(base, train, intents)
    add_checkpoint(job, 1, 2.0, {"exact": 0.4, "polite": 0.6}, 0.5)
    add_checkpoint(job, 2, 1.5, {"exact": 0.7, "polite": 0.9}, 0.75)
    third = add_checkpoint(job, 3, 1.2)
    add_run(intents, third, EvalRun.IN_PROGRESS, n_items=5, n_done=2)
    other = eval_job(base, train, intents, metric="eval_pass_rate")
    add_checkpoint(other, 1, 2.0, {"exact": 0.9, "polite": 0.9}, 0.4)

    with open_page(timeout_ms=20_000) as page:
        page.add_init_script(FAKE_SOCKET)
        log_in(page, live_server.url, "alice", "alice-password")

        page.goto(live_server.url + f"/jobs/{job.public_id}/")
        page.wait_for_function("() => document.getElementById('chart-eval').data")
        assert chart_data(page, "chart-eval") == [["mean score", [1, 2], [0.5, 0.8]],
                                                  ["pass rate", [1, 2], [0.5, 0.75]]]
        row = f'[data-checkpoint="{third.public_id}"]'
        assert "running 2/5" in page.inner_text(row)

        # The run ends: evals/epochs.py writes the scores, then relays the checkpoint.
        third.metrics = {**third.metrics, "eval_run_id": "evalrun_live", "eval_mean_score": 0.95,
                         "eval_pass_rate": 0.9, "eval_scores": {"exact": 1.0, "polite": 0.9}}
        third.save(update_fields=["metrics"])
        third.job = job
        page.evaluate("message => window.deliver(message)", {"kind": "checkpoint", "data": checkpoint_payload(third)})
        page.wait_for_function(f"() => document.querySelector('{row}').dataset.evalRun === 'evalrun_live'")
        assert chart_data(page, "chart-eval")[0] == ["mean score", [1, 2, 3], [0.5, 0.8, 0.95]]
        assert "0.950" in page.inner_text(row) and "90%" in page.inner_text(row)
        assert page.inner_text(f"{row} .badge.best") == "best"
        shot(page, "job-eval-scores.png")

        page.goto(live_server.url + f"/jobs/compare/?jobs={job.public_id}&jobs={other.public_id}")
        page.wait_for_function("() => document.getElementById('compare-eval').data")
        assert [t[1:] for t in chart_data(page, "compare-eval")] == [
            [[1, 2, 3], [0.5, 0.8, 0.95]], [[1, 2, 3], [0.5, 0.75, 0.9]], [[1], [0.9]], [[1], [0.4]]]
        shot(page, "compare-eval-scores.png")

        # The form offers the eval-based metrics only with an eval picked, and falls back to auto.
        page.goto(live_server.url + "/jobs/new/")
        page.click("#advanced summary")
        page.select_option("#id_eval", intents.public_id)
        page.select_option("#id_best_checkpoint_metric", "eval:polite")
        page.select_option("#id_eval", "")
        assert page.input_value("#id_best_checkpoint_metric") == "auto"
        disabled = page.evaluate("() => Array.from(document.getElementById('id_best_checkpoint_metric').options)"
                                 ".filter(o => o.disabled).map(o => o.value)")
        # full_valid_mean_reward too: a supervised job has no rewards.
        assert disabled == ["full_valid_mean_reward", "eval_mean_score", "eval_pass_rate", "eval:exact", "eval:polite"]
    assert page.errors == []

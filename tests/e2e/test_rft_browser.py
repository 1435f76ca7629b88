"""A reinforcement job in a real Chromium: its reward charts drawn from the history (a grader that appears live
gets its traces), and the new-job form showing each method's fields only.

Rows are made directly and the pages served by pytest-django's live server (no ASGI): the page's websocket is
replaced by a stand-in the test delivers messages through, the history built as dashboard/consumers.py builds it.
"""

import pytest

from dashboard.consumers import job_history
from tests.browser import browser_marks, log_in, open_page, shot
from tests.dashboard.test_jobs_pages import make_rft_job
from tests.e2e.test_job_eval_browser import FAKE_SOCKET, chart_data
from tests.factories import chat_lines, make_base_model, make_user, upload

pytestmark = [*browser_marks, pytest.mark.django_db(transaction=True)]


def visible(page, name):
    return page.is_visible(f'[data-field="{name}"]')


def test_a_reinforcement_job_charts_its_rewards_and_the_form_shows_each_methods_fields(live_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    make_user("admin")
    job = make_rft_job(make_base_model(), upload(chat_lines(20)))

    with open_page(timeout_ms=20_000) as page:
        page.add_init_script(FAKE_SOCKET)
        log_in(page, live_server.url, "alice", "alice-password")
        page.goto(live_server.url + f"/jobs/{job.public_id}/")
        page.wait_for_function("() => window.fakeSockets && window.fakeSockets.length")
        page.evaluate("message => window.deliver(message)", {"kind": "history", "data": job_history(job)})
        page.wait_for_function("() => document.getElementById('chart-reward').data.some(t => t.x.length)")
        assert chart_data(page, "chart-reward") == [["train", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]],
                                                    ["valid (sampled)", [], []],
                                                    ["full valid (epoch end)", [2, 4], [0.7, 0.6]]]
        assert chart_data(page, "chart-graders") == [["exact · train", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]],
                                                     ["exact · full valid (epoch end)", [2, 4], [0.7, 0.6]]]
        errors = [name for name, _x, _y in chart_data(page, "chart-errors")]
        assert errors[:2] == ["parse errors · train", "parse errors · valid (sampled)"]
        assert "grader errors · full valid (epoch end)" in errors
        assert chart_data(page, "chart-zero-std")[0][2] == [0.5] * 4
        assert "teaches nothing" in page.inner_text("#chart-zero-std-help")

        # A grader seen for the first time (a resumed job with another grader): its traces join the chart.
        page.evaluate("message => window.deliver(message)", {"kind": "metric", "data": {
            "scope": "train", "step": 5, "epoch": 2.5, "loss": 0.01, "reward": 0.5, "grader_scores":
            {"exact": 0.5, "close": 0.9}}})
        page.wait_for_function("() => document.getElementById('chart-graders').data.length === 3")
        assert chart_data(page, "chart-graders")[0] == ["close · train", [5], [0.9]]
        assert chart_data(page, "chart-graders")[1][1] == [1, 2, 3, 4, 5]
        assert chart_data(page, "chart-reward")[0][1] == [1, 2, 3, 4, 5]
        shot(page, "job-reinforcement.png")

        page.goto(live_server.url + "/jobs/new/")
        page.click("#advanced summary")
        assert not visible(page, "grader") and not visible(page, "beta") and visible(page, "packing")
        page.select_option("#id_method", "reinforcement")
        assert visible(page, "grader") and visible(page, "response_format") and visible(page, "num_generations")
        assert visible(page, "beta") and not visible(page, "packing") and page.is_disabled("#id_packing")
        # Shown again, a number under an auto switch stays disabled while its switch is on.
        assert page.is_disabled("#id_num_generations") and page.is_enabled("#id_num_generations__auto")
        shot(page, "job-form-reinforcement.png")
        page.select_option("#id_best_checkpoint_metric", "full_valid_mean_reward")
        page.select_option("#id_method", "dpo")
        assert visible(page, "beta") and not visible(page, "grader") and page.is_disabled("#id_grader")
        assert page.input_value("#id_best_checkpoint_metric") == "auto"
        page.select_option("#id_method", "supervised")
        assert not visible(page, "beta") and visible(page, "packing") and page.is_enabled("#id_packing")
        shot(page, "job-form-supervised.png")
    assert page.errors == []

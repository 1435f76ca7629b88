"""The Evals pages in Chromium, served by pytest-django's live server: the new-eval form's grader rows
follow their type and rows are added; Try it answers through htmx; the results table renders; no script
or style is blocked by the Content-Security-Policy. Screenshots go to test-output/screenshots/."""

import pytest

from tests.browser import browser_marks, log_in, open_page, shot
from tests.evals.test_pages import make_run

pytestmark = browser_marks


@pytest.fixture
def browser_page(live_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own rows are made in it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with open_page(viewport=(1280, 900)) as page:
        yield page


def test_the_new_eval_form_and_the_results_table_in_a_browser(browser_page, live_server, admin_user, eval_obj,
                                                              snapshot_names):
    from playwright.sync_api import expect

    page = browser_page
    log_in(page, live_server.url, "alice", "alice-password")
    page.goto(live_server.url + "/evals/new/")
    row = page.locator("[data-grader-row]").first
    expect(row.locator("[data-field=reference]")).to_be_visible()
    expect(row.locator("[data-field=source]")).to_be_hidden()
    page.fill("input[name=name]", "intent accuracy")
    row.locator("[data-field=reference] input").fill("{{item.answer}}")
    page.click("#add-grader")
    second = page.locator("[data-grader-row]").nth(1)
    second.locator("select[name=grader-1-type]").select_option("python")
    expect(second.locator("[data-field=source]")).to_be_visible()
    second.locator("textarea[name=grader-1-source]").fill("def grade(sample, item):\n    return len(sample['output_text']) / 10\n")
    page.fill("textarea[name=try_sample]", "yes")
    page.fill("textarea[name=try_item]", '{"answer": "yes"}')
    page.click("#try-box button")
    expect(page.locator("#try-result tr[data-grader=string_check] [data-score]")).to_have_text("1.000")
    shot(page, "evals-new.png")

    make_run(eval_obj, "attune-tiny", [(1, 1.0), (0, 0.8), (1, 0.9)])
    make_run(eval_obj, "attune-small", [(0, 0.2), (0, 0.4), (1, 0.3)])
    page.goto(live_server.url + f"/evals/{eval_obj.public_id}/")
    expect(page.locator("table.results tbody tr")).to_have_count(2)
    shot(page, "evals-results.png")
    assert page.errors == []

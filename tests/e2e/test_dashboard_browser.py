"""The dashboard in a real Chromium against a real studio (`manage.py serve`, in-process worker, demo data).

One story, as an admin lives it: log in; create a 2-epoch LoRA job through the form; watch the loss
chart gain points while it trains; reload in the middle and find the earlier points still there; drop
the websocket and see it come back with nothing doubled; see both checkpoints with their
full-validation metrics and the final state without a reload; re-run it with 3 epochs and see the
lineage both ways; compare the two jobs; cancel the re-run. Each page is saved as a screenshot under
test-output/screenshots/.
"""


import pytest

from tests.browser import browser_marks, log_in, open_page, shot

pytestmark = browser_marks


@pytest.fixture
def browser_page(studio):
    with open_page(timeout_ms=20_000) as page:
        yield page


def trace_x(page, chart, index):
    return page.evaluate(f"() => Array.from((document.getElementById('{chart}').data[{index}] || {{x: []}}).x)")


def test_an_admin_trains_watches_reruns_and_compares_in_the_browser(studio, browser_page):
    page = browser_page
    url = studio.url

    # Log in: the start page of an admin is the jobs list.
    log_in(page, url, "admin", studio.password)
    page.wait_for_url(url + "/jobs/")

    # The new-job form: attune-tiny (quick on 2 cores) on the demo files, LoRA, 2 epochs. Batch 32 keeps
    # the matrices large enough to be quick, and a 10× learning rate makes the fall visible in two epochs.
    page.goto(url + "/jobs/new/")
    assert page.input_value("#id_model") == "smollm2-135m"  # the default base: the real pretrained one
    page.select_option("#id_model", "attune-tiny")
    options = page.eval_on_selector_all("#id_training_file option", "os => os.map(o => [o.value, o.textContent])")
    train_id = next(v for v, label in options if "demo-intents-train" in label)
    valid_id = next(v for v, label in options if "demo-intents-valid" in label)
    page.select_option("#id_training_file", train_id)
    page.select_option("#id_validation_file", valid_id)
    page.select_option("#id_adapter", "lora")
    page.uncheck("#id_n_epochs__auto")
    page.fill("#id_n_epochs", "2")
    page.uncheck("#id_batch_size__auto")
    page.fill("#id_batch_size", "32")
    page.uncheck("#id_learning_rate_multiplier__auto")
    page.fill("#id_learning_rate_multiplier", "10")
    page.fill("#id_suffix", "e2e")
    page.fill("#id_seed", "7")
    page.locator("#raw-spec pre", has_text='"n_epochs": 2').wait_for()
    raw = page.inner_text("#raw-spec")
    assert '"batch_size": 32' in raw and '"learning_rate_multiplier": 10' in raw and '"beta"' not in raw  # DPO's
    shot(page, "job-new.png")
    page.click("#create-job")
    page.wait_for_url(url + "/jobs/ftjob-*/")
    job_url = page.url
    job_id = job_url.rstrip("/").rsplit("/", 1)[-1]

    # It trains: the loss chart gains points while the job runs.
    page.wait_for_function("() => document.getElementById('stream-state').textContent === 'live'")
    page.wait_for_function("() => document.getElementById('chart-loss').data[0].x.length >= 3", timeout=240_000)
    first = trace_x(page, "chart-loss", 0)
    page.wait_for_function(f"() => document.getElementById('chart-loss').data[0].x.length > {len(first)}",
                           timeout=120_000)
    assert page.inner_text("#job-status") == "running"
    shot(page, "job-detail-training.png")

    # Reload in the middle: the earlier points are still there, none twice.
    before = trace_x(page, "chart-loss", 0)
    page.reload()
    page.wait_for_function(f"() => document.getElementById('chart-loss').data[0].x.length >= {len(before)}")
    after = trace_x(page, "chart-loss", 0)
    assert set(before) <= set(after) and len(after) == len(set(after))

    # The socket drops: the page reconnects by itself and still draws every point once.
    page.evaluate("() => window.attuneJobStream.socket.close()")
    page.wait_for_function("() => window.attuneJobStream.connects >= 2", timeout=15_000)
    page.wait_for_function("() => document.getElementById('stream-state').textContent !== 'connecting…'")

    # The job ends: final state, both checkpoints with full-validation metrics, without a reload.
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'succeeded'",
                           timeout=480_000)
    page.wait_for_selector("#fine-tuned-model")
    assert page.inner_text("#fine-tuned-model").startswith("ft:attune-tiny:e2e:")
    page.wait_for_function("() => document.querySelectorAll('#job-checkpoints tr[data-checkpoint]').length === 2")
    for epoch in (1, 2):
        cells = page.eval_on_selector_all(f"#job-checkpoints tr[data-epoch='{epoch}'] td.metric",
                                          "tds => tds.map(td => td.textContent.trim())")
        assert len(cells) == 6 and all(c != "—" for c in cells[4:]), cells  # full_valid_loss / accuracy
        float(cells[4]), float(cells[5])
    # Every logged step once: no gap left by the reload or the reconnect, and no double.
    loss_x = trace_x(page, "chart-loss", 0)
    assert sorted(loss_x) == list(range(1, max(loss_x) + 1)) and max(loss_x) == 26  # 400 examples, 13 steps of 32 an epoch
    assert len(trace_x(page, "chart-loss", 2)) == 2  # the full-validation markers, one per epoch end
    assert page.inner_text("#stream-state") == "finished"
    assert not page.locator("#cancel-job").count()
    shot(page, "job-detail.png")

    # Re-run with 3 epochs: the form holds the spec as requested.
    page.click("#rerun")
    page.wait_for_url(job_url + "rerun/")
    assert page.input_value("#id_n_epochs") == "2" and not page.is_checked("#id_n_epochs__auto")
    assert page.is_checked("#id_beta__auto") and page.input_value("#id_suffix") == "e2e"
    assert page.input_value("#id_learning_rate_multiplier") == "10.0"
    page.fill("#id_n_epochs", "3")
    page.locator("#raw-spec pre", has_text='"n_epochs": 3').wait_for()  # the raw spec follows the form
    shot(page, "job-rerun.png")
    page.click("#create-job")
    page.wait_for_url(url + "/jobs/ftjob-*/")
    child_url = page.url
    child_id = child_url.rstrip("/").rsplit("/", 1)[-1]
    assert child_id != job_id and page.inner_text("#parent-link") == job_id
    page.goto(job_url)
    assert child_id in page.inner_text("#reruns")

    # Compare the two from the jobs list, once the re-run has a few points of its own.
    page.goto(child_url)
    page.wait_for_function("() => document.getElementById('chart-loss').data[0].x.length >= 2", timeout=240_000)
    page.goto(url + "/jobs/")
    shot(page, "jobs.png")
    page.check(f"#pick-{job_id}")
    page.check(f"#pick-{child_id}")
    page.click("#job-table button[type=submit]")
    page.wait_for_url(url + "/jobs/compare/?*")
    page.wait_for_function("() => document.getElementById('compare-loss').data")
    names = page.evaluate("() => document.getElementById('compare-loss').data.map(t => t.name)")
    assert any(job_id[:12] in n for n in names) and any(child_id[:12] in n for n in names)
    colours = page.evaluate("() => new Set(document.getElementById('compare-loss').data.map(t => t.line.color)).size")
    assert colours == 2
    differences = page.inner_text("#spec-differences")
    assert "n_epochs" in differences and "adapter" not in differences
    assert page.locator("#full-validation tbody tr").count() >= 2
    shot(page, "compare.png")

    # Cancel the re-run, confirming the dialog: the header shows it without a reload.
    page.goto(child_url)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'cancelled'")

    assert not page.errors, page.errors

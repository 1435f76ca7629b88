"""The whole loop in a real Chromium against a real studio (`manage.py serve`, in-process worker, demo data),
as one admin lives it:

1. fine-tune the demo (attune-tiny, quick on 2 cores), reading the estimate before launch;
2. rate base against fine-tuned in a blind rating task, judging each answer against the prompt's intent;
3. build a preference file from those ratings, and "Fine-tune on it";
4. run DPO on top of the fine-tuned snapshot, whose job page shows the chain;
5. sweep two learning rates, the form saying how many jobs that makes;
6. pick the best on the sweep page, and re-run it.

Each page is saved as a screenshot under test-output/screenshots/.
"""

import difflib
import json
from urllib.parse import unquote

import pytest

from tests.browser import browser_marks, log_in, open_page, shot

pytestmark = browser_marks

N_PROMPTS = 14  # a preference file needs 10 pairs; a few prompts may come out a tie


@pytest.fixture
def browser_page(studio):
    with open_page(timeout_ms=20_000) as page:
        yield page


def pick_demo_files(page):
    options = page.eval_on_selector_all("#id_training_file option", "os => os.map(o => [o.value, o.textContent])")
    train = next(v for v, label in options if "demo-intents-train" in label)
    valid = next(v for v, label in options if "demo-intents-valid" in label)
    page.select_option("#id_training_file", train)
    page.select_option("#id_validation_file", valid)


def set_number(page, name, value):
    if page.is_checked(f"#id_{name}__auto"):
        page.uncheck(f"#id_{name}__auto")
    page.fill(f"#id_{name}", str(value))


def read_estimate(page):
    """The "Before launch" block once it has a token count: {label: text}."""
    page.locator("#job-estimate dd").first.wait_for()
    page.wait_for_function("() => /^[0-9]/.test(document.querySelector('#job-estimate dd').textContent)")
    labels = page.locator("#job-estimate dt").all_inner_texts()
    return dict(zip(labels, page.locator("#job-estimate dd").all_inner_texts(), strict=True))


def wait_for_status(page, status, timeout=480_000):
    page.wait_for_function(f"() => document.getElementById('job-status').textContent === '{status}'",
                           timeout=timeout)


def job_id_of(page):
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def rate_blind(page, expected_by_prompt, labels):
    """Rate the prompt on the page as a person would: the answer that is the prompt's intent (or, when neither
    is, the one nearer to it) is best and scores 5, the other 2; answers alike are a tie."""
    prompt = page.locator(".turn.user").last.evaluate(  # the turn's own text, without its role label
        "el => Array.from(el.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('')").strip()
    expected = expected_by_prompt[prompt]
    columns = page.locator("section.column")
    texts = {int(columns.nth(i).get_attribute("data-position")): columns.nth(i).locator(".output").inner_text().strip()
             for i in range(columns.count())}

    def merit(text):
        return (text == expected, text in labels, difflib.SequenceMatcher(None, text, expected).ratio())

    ranked = sorted(texts, key=lambda position: merit(texts[position]), reverse=True)
    best, other = ranked[0], ranked[1]
    if merit(texts[best]) == merit(texts[other]):
        for position in texts:
            page.check(f"input[name=score_{position}][value='3']")
        page.check("input[name=verdict][value=tie]")
        return False
    page.check(f"input[name=score_{best}][value='5']")
    page.check(f"input[name=score_{other}][value='2']")
    page.check(f"input[name=verdict][value='best:{best}']")
    return True


def test_one_person_closes_the_loop_in_the_browser(studio, browser_page, tmp_path):
    page = browser_page
    url = studio.url
    log_in(page, url, "admin", studio.password)
    page.wait_for_url(url + "/jobs/")

    # 1. Fine-tune the demo. The form says what it will cost before launch.
    page.goto(url + "/jobs/new/")
    page.select_option("#id_model", "attune-tiny")
    pick_demo_files(page)
    set_number(page, "n_epochs", 2)
    set_number(page, "batch_size", 32)
    set_number(page, "learning_rate_multiplier", 10)
    page.fill("#id_suffix", "loop")
    page.locator("#raw-spec pre", has_text='"n_epochs": 2').wait_for()
    estimate = read_estimate(page)
    tokens = int(estimate["Tokens to train"].split()[0])
    assert tokens > 0 and "2 epochs" in estimate["Tokens to train"]
    assert "MB" in estimate["Checkpoint disk"] or "KB" in estimate["Checkpoint disk"]
    shot(page, "loop-1-new-job.png")
    page.click("#create-job")
    page.wait_for_url(url + "/jobs/ftjob-*/")
    sft_url, sft_id = page.url, job_id_of(page)
    wait_for_status(page, "succeeded")
    page.reload()
    tuned = unquote(page.get_attribute("#fine-tune-further", "href").split("model=", 1)[1])
    assert tuned.startswith("ft:attune-tiny:loop:")

    # 2. Rate base against fine-tuned, blind, on held-out prompts the training never saw.
    heldout = next(studio.home.rglob("demo-intents-heldout.jsonl")).read_text().splitlines()[:N_PROMPTS]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(heldout) + "\n")
    expected = {}
    for line in heldout:
        row = json.loads(line)
        expected[row["messages"][-1]["content"].strip()] = row["expected"]
    labels = set(expected.values())
    page.goto(url + "/playground/tasks/new/")
    page.fill("input[name=name]", "base vs loop")
    page.check("#snapshot-list input[value='attune-tiny']")
    page.check(f"#snapshot-list input[value='{tuned}']")
    page.check("input[name=prompt_source][value=upload]")
    page.set_input_files("input[name=prompts_file]", str(prompts))
    page.locator("label", has_text="admin").locator("input[name=evaluators]").check()
    page.fill("input[name=temperature]", "0")
    page.fill("input[name=max_tokens]", "8")
    page.click("button[type=submit].primary")
    page.wait_for_url(url + "/playground/tasks/rtask_*/")
    task_url = page.url
    page.locator("#task-progress .badge.ok").wait_for(timeout=240_000)
    page.reload()
    page.click("text=Rate (0/")
    preferred = 0
    for _ in range(N_PROMPTS):
        page.locator("section.column").first.wait_for()
        preferred += rate_blind(page, expected, labels)
        if preferred == 1:
            shot(page, "loop-2-rate.png")
        page.click("text=Save and next")
    page.wait_for_url(task_url)
    assert preferred >= 10, f"only {preferred} of {N_PROMPTS} prompts had a better answer"

    # 3. A preference file from those ratings, then "Fine-tune on it".
    page.click("#make-preference-file")
    assert page.inner_text("#preference-counts").startswith(f"{preferred} pair")
    shot(page, "loop-3-preferences.png")
    page.click("#store-preferences")
    page.wait_for_url(url + "/datasets/file-*/")
    assert task_url.rstrip("/").rsplit("/", 1)[-1] in page.inner_text("#file-origin")
    page.click("text=Fine-tune on it")
    page.wait_for_url(url + "/jobs/new/?*")
    assert page.input_value("#id_method") == "dpo"

    # 4. DPO on top of the fine-tuned snapshot: it continues the snapshot's adapter.
    page.select_option("#id_model", tuned)
    estimate = read_estimate(page)
    assert int(estimate["Tokens to train"].split()[0]) > 0
    shot(page, "loop-4-dpo.png")
    page.click("#create-job")
    page.wait_for_url(url + "/jobs/ftjob-*/")
    dpo_url = page.url
    chain = page.inner_text("#starting-chain")
    assert chain.startswith("Trained from attune-tiny") and tuned in chain
    wait_for_status(page, "succeeded")
    page.goto(sft_url)
    assert job_id_of(page) == sft_id and dpo_url.rstrip("/").rsplit("/", 1)[-1] in page.inner_text("#trained-further")

    # 5. Sweep two learning rates of the demo job. This time the estimate has a time, learned from step 1.
    page.goto(url + "/jobs/new/")
    page.select_option("#id_model", "attune-tiny")
    pick_demo_files(page)
    set_number(page, "n_epochs", 1)
    set_number(page, "batch_size", 32)
    page.fill("#id_suffix", "sweep")
    page.click("#sweep summary")
    page.select_option("#id_sweep-field_1", "learning_rate_multiplier")
    page.fill("#id_sweep-values_1", "1, 10")
    page.locator("#sweep-plan h3", has_text="Sweep: 2 jobs").wait_for()
    estimate = read_estimate(page)
    assert estimate[next(k for k in estimate if k.startswith("Time"))].startswith("about")
    shot(page, "loop-5-sweep.png")
    page.click("#create-job")
    page.wait_for_url(url + "/sweeps/sweep-*/")
    sweep_url = page.url
    for _ in range(120):
        if page.inner_text("#sweep-status") == "ended":
            break
        page.wait_for_timeout(5_000)
        page.goto(sweep_url)
    assert page.inner_text("#sweep-status") == "ended"
    assert page.locator("#sweep-jobs .badge", has_text="succeeded").count() == 2

    # 6. Pick the best: ranked by full_valid_loss, lowest first; re-run it.
    rows = page.eval_on_selector_all("#sweep-jobs tbody tr", "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent.trim()))")
    ranked = [(row[0], float(row[3]), float(row[4])) for row in rows]  # rank, learning_rate_multiplier, loss
    assert [rank for rank, _, _ in ranked] == ["1", "2"] and ranked[0][2] <= ranked[1][2]
    assert sorted(lr for _, lr, _ in ranked) == [1.0, 10.0]
    page.wait_for_function("() => document.getElementById('sweep-plot').data")
    shot(page, "loop-6-sweep-ranked.png")
    page.click("#rerun-best")
    page.wait_for_url(url + "/jobs/ftjob-*/rerun/")
    assert float(page.input_value("#id_learning_rate_multiplier")) == ranked[0][1]

    assert not page.errors, page.errors

"""`auto` works on the real pretrained base, smollm2-135m, for a task unlike the demo, driven through the
official `openai` SDK against a live studio: every hyperparameter left at `auto`, the fine-tuned model
answers held-out prompts that the base model gets wrong.

Chromium then saves the job page and the playground's first screen (base, fine-tuned and epoch 1 on a
held-out city, names shown) for the README's tour.

The task: name a city's country by its two-letter ISO code. The held-out cities never appear in the
training file, so a right answer needs what the pretrained model knows about the city, in the format the
fine-tune taught.
"""

import json
import random
import time

from openai import OpenAI

from tests.browser import CHROMIUM, CHROMIUM_ARGS, browser_marks, shot

pytestmark = browser_marks  # slow, and Chromium for the pages the README shows

SYSTEM = "Answer with the two-letter ISO code of the city's country, nothing else."
WORDINGS = ["{city}", "Which country is {city} in?", "city: {city}", "Where is {city}?",
            "{city} is in which country?", "country of {city}"]
TRAINING_CITIES = {
    "Paris": "FR", "Lyon": "FR", "Berlin": "DE", "Munich": "DE", "Hamburg": "DE", "Madrid": "ES",
    "Barcelona": "ES", "Rome": "IT", "Milan": "IT", "Naples": "IT", "London": "GB", "Manchester": "GB",
    "Dublin": "IE", "Lisbon": "PT", "Porto": "PT", "Amsterdam": "NL", "Brussels": "BE", "Vienna": "AT",
    "Zurich": "CH", "Geneva": "CH", "Stockholm": "SE", "Oslo": "NO", "Copenhagen": "DK", "Helsinki": "FI",
    "Warsaw": "PL", "Prague": "CZ", "Budapest": "HU", "Athens": "GR", "Istanbul": "TR", "Moscow": "RU",
    "Cairo": "EG", "Nairobi": "KE", "Lagos": "NG", "Johannesburg": "ZA", "Tokyo": "JP", "Osaka": "JP",
    "Seoul": "KR", "Beijing": "CN", "Shanghai": "CN", "Mumbai": "IN", "Delhi": "IN", "Bangkok": "TH",
    "Jakarta": "ID", "Manila": "PH", "Sydney": "AU", "Melbourne": "AU", "Auckland": "NZ", "Toronto": "CA",
    "Vancouver": "CA", "New York": "US", "Chicago": "US", "Mexico City": "MX", "Bogota": "CO", "Lima": "PE",
    "Santiago": "CL", "Buenos Aires": "AR", "Sao Paulo": "BR", "Rio de Janeiro": "BR",
}
HELDOUT_CITIES = {
    "Marseille": "FR", "Frankfurt": "DE", "Seville": "ES", "Venice": "IT", "Edinburgh": "GB",
    "Rotterdam": "NL", "Kyoto": "JP", "Busan": "KR", "Bangalore": "IN", "Perth": "AU", "Montreal": "CA",
    "Los Angeles": "US", "Boston": "US", "Krakow": "PL", "Salzburg": "AT", "Brasilia": "BR",
}


def chat(city, wording="{city}", code=None):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": wording.format(city=city)}]
    return messages + ([{"role": "assistant", "content": code}] if code else [])


def training_lines(n=100, seed=0):
    rng = random.Random(seed)
    pairs = sorted({(city, wording) for city in TRAINING_CITIES for wording in WORDINGS})
    return [json.dumps({"messages": chat(city, wording, TRAINING_CITIES[city])}) + "\n"
            for city, wording in rng.sample(pairs, n)]


def exact_match(client, model, cities):
    hits = 0
    for city, code in cities.items():
        reply = client.chat.completions.create(model=model, messages=chat(city), max_tokens=8, temperature=0)
        hits += reply.choices[0].message.content.strip() == code
    return hits / len(cities)


def test_auto_hyperparameters_teach_the_real_model_a_task_of_its_own(studio, tmp_path):
    assert not set(HELDOUT_CITIES) & set(TRAINING_CITIES)
    key = studio.manage("create_api_key", "admin").stdout.strip()
    client = OpenAI(base_url=studio.url + "/v1", api_key=key, max_retries=0, timeout=300)
    train_path = tmp_path / "country-codes.jsonl"
    train_path.write_text("".join(training_lines()))
    with open(train_path, "rb") as fh:
        train = client.files.create(file=fh, purpose="fine-tune")
    assert client.files.wait_for_processing(train.id).status == "processed"

    started = time.monotonic()
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train.id, suffix="codes")
    resolved = job.method.supervised.hyperparameters
    # 100 examples: 3 epochs (100 × 3 ≥ 100), batch 2 (100 // 50), the supervised LoRA rate × 1.
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (3, 2, 1.0)
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() - started < 900, f"{job.id} still {job.status} after 15 minutes"
        time.sleep(2)
    assert job.status == "succeeded", job.error
    print(f"country codes on smollm2-135m, auto: trained in {time.monotonic() - started:.0f} s")

    before = exact_match(client, "smollm2-135m", HELDOUT_CITIES)
    after = exact_match(client, job.fine_tuned_model, HELDOUT_CITIES)
    print(f"held-out exact match: base {before:.0%}, fine-tuned {after:.0%}")
    assert before <= 0.25 and after >= 0.5 and after - before >= 0.5  # measured: 0 % → 75 %

    shoot_the_tour(studio, job)


def shoot_the_tour(studio, job):
    """The job page, and the playground's first screen (the base model, this job's final checkpoint
    and its first epoch) answering a held-out city with the names shown."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(studio.url + "/login/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", studio.password)
        page.click("button[type=submit]")
        page.goto(f"{studio.url}/jobs/{job.id}/")
        expect(page.locator("#chart-loss .main-svg").first).to_be_visible()
        shot(page, "job-detail-smollm2.png")

        page.goto(studio.url + "/playground/")
        expect(page.locator("#snapshot-chips .chip")).to_have_count(3)  # base, final, epoch 1
        page.fill("#system-prompt", SYSTEM)
        page.fill(".turn-content", "Marseille")
        page.fill("input[name=temperature]", "0")
        page.fill("input[name=max_tokens]", "32")
        page.uncheck("#blind")
        page.click("#run")
        # Three snapshots of smollm2-135m answer on a 2-core CPU: seconds, more on a loaded machine (expect's own
        # timeout is 5 s; the page's default above covers actions only).
        expect(page.locator(".column[data-done='1']")).to_have_count(3, timeout=120_000)
        texts = page.locator(".column .output").all_inner_texts()
        assert "FR" in [t.strip() for t in texts], texts
        shot(page, "playground-compare-smollm2.png")
        browser.close()

"""The compare page over HTTP: start, stream, rate, reveal; blind mode and who may see what."""

import json

import pytest

from playground.models import Comparison, Output, Rating


def _start(client, names, blind=True, **params):
    data = {"snapshots": json.dumps(names), "blind": "on" if blind else "",
            "messages": json.dumps([{"role": "user", "content": "where is my order 1234"}]),
            "temperature": 0, "max_tokens": 6, **params}
    return client.post("/playground/compare/", data)


def _stream(client, url):
    resp = client.get(url)
    assert resp.status_code == 200, resp.content
    body = b"".join(resp).decode()  # the stream is async; iterating the response drains it
    return body, [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def _rating_form(n, best=0):
    form = {f"score_{i}": 5 - i for i in range(n)}
    form["comment_0"] = "clear"
    form["verdict"] = f"best:{best}"
    return form


def test_blind_mode_hides_names_in_the_page_answer_and_stream_until_rated(admin_client, snapshots):
    names = snapshots.names
    start = _start(admin_client, names)
    assert start.status_code == 200
    started = start.json()
    raw = start.content.decode()
    body, events = _stream(admin_client, started["stream_url"])
    page = admin_client.get(started["page_url"]).content.decode()
    for name in names:
        assert name not in raw and name not in body and name not in page
    assert [c["label"] for c in started["columns"]] == ["Model A", "Model B", "Model C", "Model D"]
    assert events[-1] == {"finished": True}
    assert sum(1 for e in events if e.get("done")) == 4

    rated = admin_client.post(started["rate_url"], _rating_form(4))
    assert rated.status_code == 200
    revealed = {c["position"]: c["snapshot"] for c in rated.json()["columns"]}
    assert sorted(revealed.values()) == sorted(names)
    page = admin_client.get(started["page_url"]).content.decode()
    assert all(name in page for name in names)


TIMING = ("n_tokens", "ttft_ms", "tokens_per_second")


def test_blind_outputs_carry_no_timing_until_the_names_show(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2]).json()
    _, events = _stream(admin_client, started["stream_url"])
    done = [e for e in events if e.get("done")]
    assert len(done) == 2 and not any(key in e for e in done for key in TIMING)
    _, replayed = _stream(admin_client, started["stream_url"])
    assert not any(key in e for e in replayed for key in TIMING)
    page = admin_client.get(started["page_url"]).content.decode()
    assert "tokens</div>" not in page and "tok/s" not in page
    rated = admin_client.post(started["rate_url"], _rating_form(2)).json()
    assert all(c["n_tokens"] > 0 for c in rated["columns"])
    assert "tokens</div>" in admin_client.get(started["page_url"]).content.decode()


def test_an_open_comparison_shows_its_timing_as_it_streams(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2], blind=False).json()
    _, events = _stream(admin_client, started["stream_url"])
    assert all(e["n_tokens"] > 0 and "ttft_ms" in e for e in events if e.get("done"))


def test_a_failed_output_does_not_name_its_snapshot_until_rated(admin_client, snapshots):
    gone = snapshots.checkpoints[0]
    names = [gone.model_name, snapshots.names[-1]]
    started = _start(admin_client, names).json()
    gone.delete()  # after the start: the output fails with "The model '<name>' does not exist."
    body, events = _stream(admin_client, started["stream_url"])
    page = admin_client.get(started["page_url"]).content.decode()
    failed = [e for e in events if e.get("status") == "error"]
    assert len(failed) == 1 and failed[0]["error"] == Output.BLIND_ERROR
    for name in names:
        assert name not in body and name not in page
    assert Output.objects.get(comparison__public_id=started["id"], snapshot_name=gone.model_name).error

    rated = admin_client.post(started["rate_url"], _rating_form(2)).json()
    reason = next(c["error"] for c in rated["columns"] if c["snapshot"] == gone.model_name)
    assert gone.model_name in reason and "does not exist" in reason
    assert reason in admin_client.get(started["page_url"]).content.decode().replace("&#x27;", "'")


def test_a_blind_rating_cannot_change_once_the_names_are_shown(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2]).json()
    _stream(admin_client, started["stream_url"])
    assert admin_client.post(started["rate_url"], _rating_form(2, best=0)).status_code == 200
    again = admin_client.post(started["rate_url"], _rating_form(2, best=1))
    assert again.status_code == 409 and "final" in again.json()["errors"]["__all__"][0]
    rating = Rating.objects.get(comparison__public_id=started["id"])
    assert rating.best.position == 0


def test_positions_and_scores_are_stored_as_shown(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:3]).json()
    _stream(admin_client, started["stream_url"])
    admin_client.post(started["rate_url"], _rating_form(3, best=2))
    comparison = Comparison.objects.get(public_id=started["id"])
    rating = Rating.objects.get(comparison=comparison)
    shown = comparison.ordered_outputs
    assert rating.shown_order == [o.public_id for o in shown]
    assert rating.best == shown[2] and rating.verdict == "best"
    assert [(s.position, s.score, s.output_id) for s in rating.scores.all()] == [
        (0, 5, shown[0].pk), (1, 4, shown[1].pk), (2, 3, shown[2].pk)]
    assert all(o.status == Output.DONE and o.n_tokens > 0 for o in shown)


def test_an_admin_may_compare_with_names_shown(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2], blind=False).json()
    assert [c["snapshot"] for c in started["columns"]] == snapshots.names[:2]


def test_evaluators_cannot_search_or_run_snapshots(evaluator_client, snapshots):
    assert evaluator_client.get("/playground/").status_code == 403
    search = evaluator_client.get("/playground/snapshots/", {"q": ""})
    assert search.status_code == 403 and b"ftjob-" not in search.content
    assert _start(evaluator_client, snapshots.names[:2]).status_code == 403
    assert not Comparison.objects.exists()
    home = evaluator_client.get("/")
    assert home.status_code == 302 and home["Location"] == "/playground/tasks/"
    assert 'href="/playground/"' not in evaluator_client.get("/playground/tasks/").content.decode()


def test_rating_waits_until_every_output_has_finished(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2]).json()
    early = admin_client.post(started["rate_url"], _rating_form(2))
    assert early.status_code == 409 and "finished" in early.content.decode()
    assert not Rating.objects.exists()


def test_a_rating_without_every_score_names_the_missing_one(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2]).json()
    _stream(admin_client, started["stream_url"])
    resp = admin_client.post(started["rate_url"], {"score_0": 4, "verdict": "tie"})
    assert resp.status_code == 400 and "Model B" in resp.json()["errors"]["score_1"]
    resp = admin_client.post(started["rate_url"], {"score_0": 4, "score_1": 9, "verdict": "best:"})
    assert "1 to 5" in resp.json()["errors"]["score_1"] and "verdict" in resp.json()["errors"]


@pytest.mark.parametrize("snapshots_value, message", [
    ("[]", "at least one"), ('["nope"]', "Unknown model(s): nope"), ("not json", "JSON"),
    (json.dumps(["tiny"] * 2), "twice"), (json.dumps([f"m{i}" for i in range(9)]), "at most 8"),
])
def test_bad_snapshot_choices_are_refused_with_a_reason(admin_client, snapshots, snapshots_value, message):
    resp = admin_client.post("/playground/compare/", {
        "snapshots": snapshots_value, "messages": json.dumps([{"role": "user", "content": "hi"}])})
    assert resp.status_code == 400 and message in " ".join(resp.json()["errors"]["snapshots"])


def test_bad_sampling_values_are_refused_on_their_field(admin_client, snapshots):
    resp = _start(admin_client, ["tiny"], top_p=5)
    assert resp.status_code == 400 and "top_p" in resp.json()["errors"]


def test_nobody_else_can_stream_rate_or_read_a_comparison(admin_client, evaluator_user, snapshots):
    from django.test import Client

    started = _start(admin_client, ["tiny"]).json()
    evaluator_client = Client()
    evaluator_client.force_login(evaluator_user)
    assert evaluator_client.get(started["stream_url"]).status_code == 403
    assert evaluator_client.get(started["page_url"]).status_code == 403
    assert evaluator_client.post(started["rate_url"], _rating_form(1)).status_code == 403


def test_a_finished_stream_replays_from_the_database(admin_client, snapshots):
    started = _start(admin_client, snapshots.names[:2]).json()
    _, first = _stream(admin_client, started["stream_url"])
    _, again = _stream(admin_client, started["stream_url"])
    done = lambda events: sorted((e["position"], e["text"]) for e in events if e.get("done"))  # noqa: E731
    assert done(first) == done(again)


def test_the_playground_preselects_the_snapshot_in_the_query(admin_client, snapshots):
    name = snapshots.checkpoints[1].model_name
    page = admin_client.get("/playground/", {"snapshot": name}).content.decode()
    assert f'"name": "{name}"' in page
    page = admin_client.get("/playground/", {"snapshot": "ft:nope"}).content.decode()
    assert "does not exist" in page


def test_snapshot_search_filters_by_epoch(admin_client, snapshots):
    found = admin_client.get("/playground/snapshots/", {"q": snapshots.job.public_id, "epoch": 2}).json()["data"]
    assert [s["epoch"] for s in found] == [2]
    assert admin_client.get("/playground/snapshots/", {"epoch": "two"}).status_code == 400


def test_the_first_screen_offers_base_fine_tuned_and_an_earlier_epoch_on_a_heldout_prompt(
        admin_client, snapshots, settings):
    import re

    from training.demo import heldout_path
    from training.demo_data import SYSTEM_PROMPT

    settings.ATTUNE_DEFAULT_BASE_MODEL = snapshots.base.name
    heldout_path().parent.mkdir(parents=True, exist_ok=True)
    heldout_path().write_text(json.dumps({"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                                       {"role": "user", "content": "scrap order 12345"}],
                                          "expected": "cancel_order"}) + "\n")
    page = admin_client.get("/playground/").content.decode()
    picked = json.loads(re.search(r'id="preselected-data" type="application/json">(.*?)</script>', page).group(1))
    first, last = snapshots.checkpoints[0], snapshots.checkpoints[-1]
    assert [s["name"] for s in picked] == [snapshots.base.name, last.model_name, first.model_name]
    assert SYSTEM_PROMPT.replace("'", "&#x27;") in page and '"scrap order 12345"' in page
    # Asked for one snapshot, the page offers that one alone.
    page = admin_client.get("/playground/", {"snapshot": first.model_name}).content.decode()
    picked = json.loads(re.search(r'id="preselected-data" type="application/json">(.*?)</script>', page).group(1))
    assert [s["name"] for s in picked] == [first.model_name]

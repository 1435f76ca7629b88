"""Malformed input to the playground's pages and the chat route: a clear 4xx naming the field, never a 500."""

import io
import json

import pytest

from playground.forms import read_prompts

DEEP = "[" * 100_000 + "]" * 100_000


def test_prompt_files_read_as_people_write_them():
    rows = [{"prompt": "where is my order\u2028please"}, {"prompt": "page\x0cbreak and \x85 next line"}]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    prompts, errors = read_prompts(b"\xef\xbb\xbf" + text.encode())  # a BOM, CRLF, separators inside strings
    assert errors == [] and [p["messages"][0]["content"] for p in prompts] == [r["prompt"] for r in rows]
    prompts, errors = read_prompts((json.dumps(rows[0]) + "\n" + DEEP + "\n").encode())
    assert len(prompts) == 1 and errors == ["line 2: arrays or objects nested too deeply to read."]


@pytest.mark.parametrize("field", ["snapshots", "messages"])
def test_the_compare_form_refuses_json_nested_too_deep(admin_client, snapshots, field):
    data = {"snapshots": json.dumps(snapshots.names[:2]), "messages": json.dumps([{"role": "user", "content": "hi"}]),
            "temperature": 0, "max_tokens": 4, field: DEEP}
    resp = admin_client.post("/playground/compare/", data)
    assert resp.status_code == 400 and field in resp.json()["errors"]


def test_the_compare_form_sees_the_same_snapshot_twice_through_spaces(admin_client, snapshots):
    name = snapshots.names[0]
    resp = admin_client.post("/playground/compare/", {"snapshots": json.dumps([name, f" {name}"]),
                                                       "messages": json.dumps([{"role": "user", "content": "hi"}])})
    assert resp.status_code == 400 and "twice" in resp.json()["errors"]["snapshots"][0]


def _task_form(snapshots, evaluators, **extra):
    upload = io.BytesIO(b'{"prompt": "where is my order"}\n')
    upload.name = "prompts.jsonl"
    return {"name": "t", "snapshots": snapshots, "prompt_source": "upload", "prompts_file": upload,
            "evaluators": evaluators, "temperature": 0, "max_tokens": 4, **extra}


def test_the_task_form_refuses_a_snapshot_twice_and_an_impossible_evaluator_id(admin_client, snapshots,
                                                                               evaluator_user):
    twice = admin_client.post("/playground/tasks/new/", _task_form([snapshots.names[0]] * 2, [evaluator_user.pk]))
    assert twice.status_code == 400 and "picked twice" in twice.content.decode()
    huge = admin_client.post("/playground/tasks/new/", _task_form(snapshots.names[:2], ["9" * 30]))
    assert huge.status_code == 400 and "is not a valid value" in huge.content.decode()


NOT_WHOLE = ["²", "9" * 5000, "-1", "0.0"]


def test_numbers_in_urls_and_verdicts_are_whole_ascii_numbers(admin_client, snapshots):
    started = admin_client.post("/playground/compare/", {
        "snapshots": json.dumps(snapshots.names[:2]), "messages": json.dumps([{"role": "user", "content": "hi"}]),
        "temperature": 0, "max_tokens": 2}).json()
    b"".join(admin_client.get(started["stream_url"]))
    for value in NOT_WHOLE:
        assert admin_client.get("/playground/snapshots/", {"epoch": value}).status_code == 400
        rated = admin_client.post(started["rate_url"], {"score_0": 3, "score_1": 3, "verdict": f"best:{value}"})
        assert rated.status_code == 400 and "verdict" in rated.json()["errors"]


def test_a_task_item_number_that_is_not_one_says_so(admin_client, snapshots, admin_user, monkeypatch):
    from playground.generation import generate_outputs
    from playground.models import RatingTask

    monkeypatch.setattr("playground.generation.start_generation", lambda task: generate_outputs(task.pk))
    assert admin_client.post("/playground/tasks/new/", _task_form(snapshots.names[:2], [admin_user.pk])
                             ).status_code == 302
    task = RatingTask.objects.get()
    for value in NOT_WHOLE:
        for method in (admin_client.get, admin_client.post):
            resp = method(f"/playground/tasks/{task.public_id}/rate/", {"item": value})
            assert resp.status_code == 400 and b"item must be a prompt number from 0 to 0" in resp.content


def test_the_chat_route_answers_400_for_a_max_tokens_beyond_the_context(client, admin_user, snapshots):
    from api.models import ApiKey

    key = ApiKey.issue(admin_user, "tests")[1]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    resp = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_tokens"
    assert "context" in resp.json()["error"]["message"]
    body.update(max_tokens=3, temperature=1e-300)  # as small as a number gets: greedy, not NaN probabilities
    resp = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")
    assert resp.status_code == 200, resp.content[:300]

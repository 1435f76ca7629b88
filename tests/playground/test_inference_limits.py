"""What one user can make the inference backend hold: loaded models within a memory budget, prompts within a
token cap, generations within a per-user limit."""

import asyncio
import json

import pytest

from playground.inference import InferenceError, SamplingParams, collect
from playground.snapshots import Snapshot
from tests.api_client import ApiClient, assert_error

SHORT = SamplingParams(temperature=0, max_tokens=2)
MESSAGES = [{"role": "user", "content": "where is my order 1234"}]


def run(backend, snapshots, messages=MESSAGES):
    return asyncio.run(collect(backend.generate(snapshots, messages, SHORT), len(snapshots)))


def _model_mb(folder):
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def test_loaded_models_past_the_memory_budget_are_unloaded_least_recently_used_first(tiny_models):
    from playground.inference.builtin import BuiltinBackend

    one_and_a_half = 1.5 * _model_mb(tiny_models.base)
    backend = BuiltinBackend(max_full_models=4, max_loaded_mb=one_and_a_half)
    base = Snapshot.from_paths("tiny", tiny_models.base)
    full = Snapshot.from_paths("full", tiny_models.base, tiny_models.full)
    lora = Snapshot.from_paths("lora", tiny_models.base, tiny_models.adapters[0])
    assert run(backend, [base, lora])[0].type == "done"
    assert backend.loaded_summary()["bases"] == [str(tiny_models.base)]
    assert run(backend, [full])[0].type == "done"
    # Two models do not fit: the base model, used longest ago, went.
    assert backend.loaded_summary()["bases"] == [] and backend.loaded_summary()["full"] == [str(tiny_models.full)]
    assert [e.type for e in run(backend, [base, lora])] == ["done", "done"]
    assert backend.loaded_summary() == {"bases": [str(tiny_models.base)], "full": [],
                                        "adapters": {str(tiny_models.base): [lora.key]}}


def test_a_model_bigger_than_the_whole_budget_still_loads_alone(tiny_models):
    from playground.inference.builtin import BuiltinBackend

    backend = BuiltinBackend(max_loaded_mb=0.001)
    assert run(backend, [Snapshot.from_paths("full", tiny_models.base, tiny_models.full)])[0].type == "done"
    assert run(backend, [Snapshot.from_paths("tiny", tiny_models.base)])[0].type == "done"
    assert backend.loaded_summary()["full"] == [] and backend.loaded_summary()["bases"] == [str(tiny_models.base)]


def test_the_budget_and_the_prompt_cap_come_from_settings_and_are_checked(settings):
    from playground import inference

    settings.INFERENCE_MAX_LOADED_MB = 300
    settings.INFERENCE_MAX_PROMPT_TOKENS = 100
    kept, inference._backend = inference._backend, None
    try:
        backend = inference.get_backend()
        assert (backend.max_loaded_mb, backend.max_prompt_tokens) == (300, 100)
    finally:
        inference._backend = kept
    with pytest.raises(InferenceError, match="INFERENCE_MAX_LOADED_MB must be at least 1"):
        inference.make_backend("builtin", max_loaded_mb=0)
    with pytest.raises(InferenceError, match="INFERENCE_MAX_PROMPT_TOKENS must be at least 1"):
        inference.make_backend("builtin", max_prompt_tokens=0)


def test_a_prompt_past_the_token_cap_is_refused_naming_messages(tiny_models):
    from playground.inference.builtin import BuiltinBackend

    backend = BuiltinBackend(max_prompt_tokens=8)
    event = run(backend, [Snapshot.from_paths("tiny", tiny_models.base)],
                messages=[{"role": "user", "content": "order " * 50}])[0]
    assert event.type == "error" and event.param == "messages"
    assert "INFERENCE_MAX_PROMPT_TOKENS" in event.error and "more than the 8" in event.error


@pytest.fixture
def capped_backend():
    from playground import inference
    from playground.inference.builtin import BuiltinBackend

    kept, inference._backend = inference._backend, BuiltinBackend(max_prompt_tokens=8)
    yield inference._backend
    inference._backend = kept


@pytest.fixture
def admin_api(client, admin_user):
    return ApiClient.for_user(client, admin_user)


def test_chat_completions_answer_a_prompt_past_the_cap_with_a_400_naming_messages(admin_api, snapshots,
                                                                                   capped_backend):
    resp = admin_api.post("/v1/chat/completions", {"model": "tiny", "max_tokens": 2,
                                                   "messages": [{"role": "user", "content": "order " * 50}]})
    assert_error(resp, 400, param="messages")
    assert "INFERENCE_MAX_PROMPT_TOKENS" in resp.json()["error"]["message"]


def _start(client, names):
    return client.post("/playground/compare/", {
        "snapshots": json.dumps(names), "blind": "on", "temperature": 0, "max_tokens": 2,
        "messages": json.dumps(MESSAGES)}).json()


def test_a_user_past_their_concurrent_generations_gets_a_429_naming_the_limit(admin_client, admin_user, snapshots,
                                                                               settings):
    from playground.inference.limits import running

    settings.INFERENCE_MAX_CONCURRENT_PER_USER = 1
    first, second = _start(admin_client, ["tiny"]), _start(admin_client, ["tiny"])
    held = admin_client.get(first["stream_url"])  # streaming, not read yet
    assert held.status_code == 200 and running(admin_user) == 1
    refused = admin_client.get(second["stream_url"])
    assert refused.status_code == 429
    assert "INFERENCE_MAX_CONCURRENT_PER_USER=1" in refused.json()["error"]["message"]
    b"".join(held)  # the first stream ends: its slot is free again
    assert running(admin_user) == 0
    answered = admin_client.get(second["stream_url"])
    assert answered.status_code == 200
    answered.close()  # a client that leaves before reading gives its slot back too
    assert running(admin_user) == 0


def test_chat_completions_share_the_per_user_limit(admin_api, admin_client, admin_user, snapshots, settings):
    from playground.inference.limits import running

    settings.INFERENCE_MAX_CONCURRENT_PER_USER = 1
    body = {"model": "tiny", "max_tokens": 2, "messages": MESSAGES}
    held = admin_api.post("/v1/chat/completions", {**body, "stream": True})
    assert held.status_code == 200 and running(admin_user) == 1
    assert_error(admin_api.post("/v1/chat/completions", body), 429, code="rate_limit_exceeded")
    assert admin_client.get(_start(admin_client, ["tiny"])["stream_url"]).status_code == 429
    b"".join(held)
    assert admin_api.post("/v1/chat/completions", body).status_code == 200
    assert running(admin_user) == 0

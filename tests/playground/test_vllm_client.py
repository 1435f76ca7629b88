"""The vllm backend against a real `manage.py serve_inference` server speaking vLLM's protocol."""

import asyncio
import subprocess
import sys

import httpx
import pytest

from playground.inference import SamplingParams, collect
from playground.inference.vllm import VLLMBackend
from playground.snapshots import Snapshot
from tests.playground.tiny_models import answers, tiny_snapshots
from tests.servers import ROOT, free_port, post_oversized_body, stop_studio, studio_env, wait_until_serving

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "where is my order 1234"}]
GREEDY = SamplingParams(temperature=0, max_tokens=10)


def _serve(tiny_models, tmp_path_factory, *extra):
    from django.conf import settings

    port = free_port()
    log = tmp_path_factory.mktemp("serve-inference") / "serve.log"
    env = studio_env(settings.ATTUNE_HOME)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve_inference", "--port", str(port), "--model", str(tiny_models.base),
         "--served-model-name", "tiny", "--max-lora-rank", "16", *extra],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(process, url + "/v1/models", log, "serve_inference", seconds=120)
    return process, url


@pytest.fixture(scope="module")
def inference_server(tiny_models, tmp_path_factory):
    process, url = _serve(tiny_models, tmp_path_factory)
    yield url
    stop_studio(process)


@pytest.fixture(scope="module")
def vllm_like_server(tiny_models, tmp_path_factory):
    """/v1/models as vLLM lists it: no max_lora_rank, so the client learns the limit from the refusal."""
    process, url = _serve(tiny_models, tmp_path_factory, "--no-list-max-lora-rank", "--max-lora-rank", "8")
    yield url
    stop_studio(process)


def run(backend, snapshots, params=GREEDY):
    return answers(backend, snapshots, MESSAGES, params)


def test_the_client_loads_each_adapter_once_under_a_fresh_name_and_generates(inference_server, tiny_models,
                                                                            builtin_backend):
    snapshots = tiny_snapshots(tiny_models)
    client = VLLMBackend(inference_server)
    remote = run(client, snapshots)
    local = run(builtin_backend, snapshots)
    assert [e.type for e in remote] == ["done"] * 3, [e.error for e in remote]
    assert [e.text for e in remote] == [e.text for e in local]
    assert all(e.n_tokens > 0 and e.ttft_s is not None for e in remote if e.text)
    assert any(e.text for e in remote)

    listed = httpx.get(inference_server + "/v1/models").json()["data"]
    adapters = [m for m in listed if m["parent"] == "tiny"]
    assert len(adapters) == 2
    run(client, snapshots)  # asked again: nothing new is loaded
    assert len([m for m in httpx.get(inference_server + "/v1/models").json()["data"] if m["parent"]]) == 2

    # A second client (a restarted studio) never reuses a name: the server could serve a stale cache.
    run(VLLMBackend(inference_server), snapshots[1:2])
    names = [m["id"] for m in httpx.get(inference_server + "/v1/models").json()["data"] if m["parent"]]
    assert len(names) == len(set(names)) == 3


def test_an_adapter_above_the_servers_max_lora_rank_is_refused_clearly(inference_server, tiny_models):
    big = Snapshot.from_paths("big", tiny_models.base, tiny_models.big_adapter, base_model="tiny")
    event = run(VLLMBackend(inference_server), [big])[0]
    assert event.type == "error"
    assert "rank 32" in event.error and "max_lora_rank 16" in event.error and "--max-lora-rank 32" in event.error
    # The server refuses it too, in vLLM's words, when asked directly.
    resp = httpx.post(inference_server + "/v1/load_lora_adapter",
                      json={"lora_name": "big-direct", "lora_path": str(tiny_models.big_adapter)})
    assert resp.status_code == 400 and "LoRA rank 32 is greater than max_lora_rank 16" in resp.text


def test_full_weights_and_other_bases_are_refused_with_a_reason(inference_server, tiny_models):
    full = Snapshot.from_paths("full", tiny_models.base, tiny_models.full, base_model="tiny")
    other = Snapshot.from_paths("other", "/elsewhere/model")
    events = run(VLLMBackend(inference_server), [full, other])
    assert "its own vLLM server" in events[0].error
    assert "serves 'tiny'" in events[1].error


def test_the_server_speaks_the_openai_protocol(inference_server, tiny_models):
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=inference_server + "/v1", api_key="unused")
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=5)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=5,
                                                 stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    resp = httpx.post(inference_server + "/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert resp.status_code == 404
    resp = httpx.post(inference_server + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"})
    assert resp.status_code == 400 and "must lie under" in resp.text


def test_a_rank_the_server_does_not_list_is_refused_by_the_server_as_clearly(vllm_like_server, tiny_models):
    assert "max_lora_rank" not in httpx.get(vllm_like_server + "/v1/models").json()["data"][0]
    big = Snapshot.from_paths("big", tiny_models.base, tiny_models.big_adapter, base_model="tiny")
    small = Snapshot.from_paths("small", tiny_models.base, tiny_models.adapters[0], base_model="tiny")
    events = run(VLLMBackend(vllm_like_server), [big, small])
    # The limit named is the server's own (8), learnt from its refusal, not an assumed 16.
    assert events[0].type == "error" and "rank 32" in events[0].error and "max_lora_rank 8" in events[0].error
    assert "--max-lora-rank 32" in events[0].error
    assert events[1].type == "done"


def test_an_error_inside_the_stream_ends_the_output_as_an_error(inference_server, tiny_models):
    too_long = SamplingParams(temperature=0, max_tokens=4000)  # more than the model's context
    event = run(VLLMBackend(inference_server), tiny_snapshots(tiny_models)[:1], params=too_long)[0]
    assert event.type == "error" and "context" in event.error


def test_two_requests_for_a_new_adapter_load_it_once(inference_server, tiny_models):
    snapshot = Snapshot.from_paths("once", tiny_models.base, tiny_models.adapters[2], base_model="tiny")
    client = VLLMBackend(inference_server)

    async def both():
        return await asyncio.gather(*(collect(client.generate([snapshot], MESSAGES, GREEDY), 1) for _ in range(2)))

    assert all(r[0].type == "done" for r in asyncio.run(both()))
    listed = httpx.get(inference_server + "/v1/models").json()["data"]
    assert len([m for m in listed if m.get("root") == str(tiny_models.adapters[2])]) == 1


def test_the_server_refuses_malformed_stream_options(inference_server):
    resp = httpx.post(inference_server + "/v1/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "stream": True, "stream_options": ["include_usage"]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "stream_options"


def test_a_body_over_the_limit_is_refused_before_the_server_reads_it(inference_server):
    status, sent = post_oversized_body(inference_server, "/v1/chat/completions")
    assert status == 413 and sent < 64 * 1024 * 1024
    assert httpx.get(inference_server + "/health").status_code == 200

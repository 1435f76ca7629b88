"""The built-in backend and snapshot names, on tiny models made in the test."""

import asyncio

import pytest

from playground.inference import InferenceError, SamplingParams, collect
from playground.snapshots import BASE, FULL, LORA, UnknownModel, list_snapshots, resolve_snapshot

MESSAGES = [{"role": "system", "content": "Answer with one intent."},
            {"role": "user", "content": "where is my order 1234"}]
GREEDY = SamplingParams(temperature=0, max_tokens=12)


def run(backend, snapshots, messages=MESSAGES, params=GREEDY):
    return asyncio.run(collect(backend.generate(snapshots, messages, params), len(snapshots)))


def test_every_snapshot_kind_resolves_by_its_model_name(snapshots):
    base = resolve_snapshot("tiny")
    assert base.kind == BASE
    first = resolve_snapshot(snapshots.checkpoints[0].model_name)
    assert (first.kind, first.epoch, first.lora_rank) == (LORA, 1, 4)
    assert first.name.endswith(":ckpt-step-10")
    final = resolve_snapshot(snapshots.job.fine_tuned_model)
    assert final.checkpoint_id == snapshots.checkpoints[-1].public_id and final.is_final
    assert resolve_snapshot(snapshots.full_checkpoint.model_name).kind == FULL


@pytest.mark.parametrize("name", ["", "nope", "ft:tiny:intents:XXXXXXXX", "ft:tiny:intents:XXXXXXXX:ckpt-step-10"])
def test_an_unknown_model_name_is_a_clear_error(snapshots, name):
    with pytest.raises(UnknownModel, match="does not exist"):
        resolve_snapshot(name)


def test_snapshots_are_found_by_job_suffix_and_epoch(snapshots):
    by_job = list_snapshots(job=snapshots.job.public_id)
    assert [s.epoch for s in by_job] == [3, 2, 1]
    assert [s.epoch for s in list_snapshots(suffix="intents", epoch=2)] == [2]
    assert {s.name for s in list_snapshots(query="full")} == {snapshots.full_checkpoint.model_name}
    assert "tiny" in {s.name for s in list_snapshots()}
    pasted = snapshots.checkpoints[1].model_name
    assert [s.name for s in list_snapshots(query=pasted)] == [pasted]


def test_greedy_text_of_each_snapshot_is_the_same_batched_or_alone(snapshots, builtin_backend):
    chosen = [resolve_snapshot(n) for n in snapshots.names] + [resolve_snapshot(snapshots.full_checkpoint.model_name)]
    together = run(builtin_backend, chosen)
    assert all(e.type == "done" for e in together), [e.error for e in together]
    texts = [e.text for e in together]
    assert len(set(texts)) >= 4, texts  # the adapters really change the answers
    for snapshot, batched in zip(chosen, together, strict=True):
        alone = run(builtin_backend, [snapshot])[0]
        assert alone.text == batched.text, snapshot.name
        assert alone.n_tokens == batched.n_tokens > 0


def test_lora_snapshots_share_one_loaded_base_and_full_weights_load_apart(snapshots, builtin_backend):
    chosen = [resolve_snapshot(n) for n in snapshots.names]
    run(builtin_backend, chosen)
    loaded = builtin_backend.loaded_summary()
    base_path = chosen[0].base_path
    assert base_path in loaded["bases"]
    assert len(loaded["adapters"][base_path]) >= 3
    run(builtin_backend, [resolve_snapshot(snapshots.full_checkpoint.model_name)])
    assert chosen[0].base_path not in builtin_backend.loaded_summary()["full"]


def test_full_weight_models_beyond_the_limit_are_unloaded_oldest_first(tiny_models):
    from playground.inference.builtin import BuiltinBackend
    from playground.snapshots import Snapshot

    backend = BuiltinBackend(max_full_models=1)
    first = Snapshot.from_paths("full-a", tiny_models.base, tiny_models.full)
    second = Snapshot.from_paths("full-b", tiny_models.full, tiny_models.base)  # the base folder as full weights
    run(backend, [first], params=SamplingParams(temperature=0, max_tokens=2))
    run(backend, [second], params=SamplingParams(temperature=0, max_tokens=2))
    assert backend.loaded_summary()["full"] == [str(tiny_models.base)]


def test_stream_sends_deltas_that_add_up_to_the_final_text(snapshots, builtin_backend):
    chosen = [resolve_snapshot("tiny"), resolve_snapshot(snapshots.checkpoints[0].model_name)]

    async def gather():
        parts, finals = {}, {}
        async for event in builtin_backend.generate(chosen, MESSAGES, GREEDY):
            if event.type == "delta":
                parts.setdefault(event.index, []).append(event.text)
            else:
                finals[event.index] = event
        return parts, finals

    parts, finals = asyncio.run(gather())
    for index, final in finals.items():
        assert "".join(parts.get(index, [])) == final.text
        assert final.ttft_s is not None and final.elapsed_s >= final.ttft_s


def test_a_seed_makes_sampling_repeatable(snapshots, builtin_backend):
    chosen = [resolve_snapshot(n) for n in snapshots.names]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, seed=7)
    assert [e.text for e in run(builtin_backend, chosen, params=params)] == \
        [e.text for e in run(builtin_backend, chosen, params=params)]


def test_a_prompt_longer_than_the_context_fails_that_request_with_a_reason(snapshots, builtin_backend):
    long = [{"role": "user", "content": "order " * 2000}]
    event = run(builtin_backend, [resolve_snapshot("tiny")], messages=long,
                params=SamplingParams(temperature=0, max_tokens=8))[0]
    assert event.type == "error" and "exceeds the model's context" in event.error


@pytest.mark.parametrize("data, param", [
    ({"temperature": 3}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"), ({"seed": -1}, "seed"), ({"max_tokens": 2.5}, "max_tokens"),
])
def test_bad_sampling_parameters_name_the_parameter(data, param):
    with pytest.raises(InferenceError) as caught:
        SamplingParams.from_dict(data)
    assert caught.value.param == param and param in caught.value.message


@pytest.mark.parametrize("messages, param", [
    ([], "messages"), ([{"role": "user"}], "messages[0].content"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "messages[1].role"),
])
def test_bad_conversations_name_the_message(messages, param):
    from playground.inference import validate_messages

    with pytest.raises(InferenceError) as caught:
        validate_messages(messages)
    assert caught.value.param == param


def _stream(tokenizer, rows, interval):
    """Feed a _RowStreamer two rows of tokens, step by step, as generate() does; what it hands over."""
    import threading

    import torch

    from playground.inference.base import Timer
    from playground.inference.builtin import _RowStreamer

    bursts = []
    streamer = _RowStreamer(tokenizer, [0, 1], {tokenizer.eos_token_id}, lambda *e: bursts.append(e), Timer(),
                            threading.Event(), interval=interval)
    streamer.put(torch.zeros(2, 3, dtype=torch.long))  # the prompt
    for step in zip(*rows, strict=True):
        streamer.put(torch.tensor(step))
    streamer.end()
    return bursts


def test_stream_text_goes_out_in_bursts_with_first_text_and_end_at_once(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    words = tokenizer("where is my order and when will it arrive", add_special_tokens=False)["input_ids"]
    assert len(words) >= 6
    rows = [words[:6], words[:3] + [tokenizer.eos_token_id] * 3]

    every_token = _stream(tokenizer, rows, interval=0)
    held = _stream(tokenizer, rows, interval=3600)

    for bursts in (every_token, held):
        events = [e for burst in bursts for e in burst]
        for index, ids in ((0, words[:6]), (1, words[:3])):
            done = [e for e in events if e.index == index and e.type == "done"]
            assert len(done) == 1 and done[0].text == tokenizer.decode(ids, skip_special_tokens=True)
            assert "".join(e.text for e in events if e.index == index and e.type == "delta") == done[0].text
    assert len(every_token) >= 6  # one hand-over per step
    # Held: both rows' first text at once, row 1's end when it stops, then the rest of row 0 as ONE delta
    # with its end.
    assert [[(e.index, e.type) for e in burst] for burst in held] == [
        [(0, "delta"), (1, "delta")], [(0, "delta"), (1, "delta"), (1, "done")], [(0, "delta"), (0, "done")]]


def test_loading_a_model_leaves_the_event_loop_free(tiny_models, monkeypatch):
    """The loader waits for a signal only the event loop can send: a load that held the loop would never end."""
    import threading

    from playground.inference import builtin
    from playground.snapshots import Snapshot

    released = threading.Event()
    real = builtin._load_model

    def load_when_released(path, trust_remote_code=False):
        assert released.wait(60), "the event loop did not run while the model loaded"
        return real(path, trust_remote_code)

    monkeypatch.setattr(builtin, "_load_model", load_when_released)
    backend = builtin.BuiltinBackend()

    async def main():
        answer = asyncio.ensure_future(collect(backend.generate([Snapshot.from_paths("tiny", tiny_models.base)],
                                                                MESSAGES, GREEDY), 1))
        await asyncio.sleep(0.05)
        released.set()
        return await answer

    assert asyncio.run(main())[0].type == "done"


def test_the_full_model_limit_comes_from_settings_and_is_checked(settings):
    from playground import inference

    settings.INFERENCE_MAX_FULL_MODELS = 3
    kept, inference._backend = inference._backend, None
    try:
        assert inference.get_backend().max_full_models == 3
    finally:
        inference._backend = kept
    with pytest.raises(InferenceError, match="INFERENCE_MAX_FULL_MODELS must be at least 1"):
        inference.make_backend("builtin", max_full_models=0)


def test_vllm_without_a_url_runs_its_own_servers_from_settings_which_are_checked(settings, tmp_path):
    from playground import inference
    from playground.inference.vllm_servers import ServerSettings

    settings.INFERENCE_BACKEND, settings.VLLM_URL = "vllm", ""
    settings.VLLM_COMMAND, settings.VLLM_MAX_LORAS, settings.VLLM_IDLE_SECONDS = "/opt/vllm/bin/python -m vllm", 4, 60
    kept, inference._backend = inference._backend, None
    try:
        backend = inference.get_backend()
        assert backend.pool is not None and backend.url == ""
        assert backend.pool.settings.command == ["/opt/vllm/bin/python", "-m", "vllm"]
        assert backend.pool.settings.max_loras == 4 and backend.pool.settings.idle_seconds == 60
        assert inference.backend_servers() == []  # none started before a prompt asks
    finally:
        inference.close_backend()
        inference._backend = kept
    assert inference.make_backend("vllm", url="http://gpu-host:8100/v1").url == "http://gpu-host:8100"
    for field, value, message in (("max_loras", 0, "VLLM_MAX_LORAS must be at least 1"),
                                  ("max_lora_rank", 0, "VLLM_MAX_LORA_RANK must be at least 1"),
                                  ("start_timeout", 0, "VLLM_START_TIMEOUT must be at least 1")):
        servers = ServerSettings(command=["vllm"], log_dir=tmp_path, **{field: value})
        with pytest.raises(InferenceError, match=message):
            inference.make_backend("vllm", servers=servers)

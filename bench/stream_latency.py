"""Live-stream latency and history replay of the job websocket.

    .venv/bin/python bench/stream_latency.py [--points 2000] [--replay 50000]

1. Latency, engine line → stored → websocket client: a worker thread hands
   `--points` metrics lines, one every 5 ms, to `JobRun.handle_line` (the
   code the worker runs for each engine stdout line: rows written to the
   database, then relayed), while the real `JobConsumer` (through the
   websocket router, with an in-process communicator) receives them. p50 /
   p95 / max over all points, with the in-memory channel layer (the embedded
   default: worker thread and consumer in one process) and with Redis
   (channels_redis; a redis-server is started on a free port when the
   Debian package is installed). Goal: p95 ≤ 50 ms.
   Baseline: the same number of bare `group_send`s to the same consumer,
   nothing stored (the channel layer's own cost); the ratio is printed.
2. Replay: `--replay` stored points (one job) → a new client's `history`
   message (read, downsampled to ≤ 1,000 points per trace, sent), median of
   5 connects. Goal ≤ 1 s. Baseline: reading the same rows from the
   database without building a message; the ratio is printed.

Runs against a fresh SQLite data folder in a temporary directory.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time

import _django  # bench/, the script's folder

_django.setup("attune-bench-")

from channels.layers import channel_layers  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

INTERVAL_S = 0.005


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def use_layer(config):
    settings.CHANNEL_LAYERS = {"default": config}
    channel_layers.backends.clear()
    from training.live import relay

    relay.loop = None


def make_job(user):
    from training.models import BaseModel, DataFile, FineTuningJob

    base, _ = BaseModel.objects.get_or_create(name="attune-tiny", defaults={"source": "attune-tiny"})
    data = DataFile.objects.create(filename="t.jsonl", path="t.jsonl", status="processed", n_examples=20)
    return FineTuningJob.objects.create(base_model=base, training_file=data, status="running", worker="bench",
                                        created_by=user, resolved_spec={"n_epochs": 1}, total_steps=10**6)


def communicator(job, user):
    from dashboard.routing import websocket_urlpatterns

    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/{job.public_id}/")
    comm.scope["user"] = user
    return comm


async def measure_pipeline(job, user, n_points):
    """Latency of JobRun.handle_line → consumer, per point, in ms."""
    from asgiref.sync import sync_to_async

    from training.job_run import JobRun

    comm = communicator(job, user)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.receive_json_from(timeout=30)  # history
    run = JobRun(job, "bench")
    sent = {}

    def produce():
        from django.db import connection

        for step in range(1, n_points + 1):
            sent[step] = time.perf_counter()
            run.handle_line({"type": "metrics", "step": step, "total_steps": n_points, "epoch": step / n_points,
                             "train_loss": 1.0 / step, "train_mean_token_accuracy": 0.5,
                             "learning_rate": 1e-4, "tokens_per_second": 1000.0})
            time.sleep(INTERVAL_S)
        connection.close()

    producer = threading.Thread(target=produce)
    producer.start()
    latencies, seen = [], 0
    while seen < n_points:
        message = await comm.receive_json_from(timeout=30)
        if message["kind"] != "metric":
            continue
        latencies.append((time.perf_counter() - sent[message["data"]["step"]]) * 1000)
        seen += 1
    await sync_to_async(producer.join, thread_sensitive=False)()
    await comm.disconnect()
    return latencies


async def measure_bare_layer(job, user, n_points):
    """Baseline: group_send of the same messages, nothing stored, from a thread, in ms."""
    from training.live import publish

    comm = communicator(job, user)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.receive_json_from(timeout=30)
    sent = {}

    def produce():
        for step in range(1, n_points + 1):
            sent[step] = time.perf_counter()
            publish(job, "metric", {"scope": "train", "step": step, "loss": 1.0})
            time.sleep(INTERVAL_S)

    producer = threading.Thread(target=produce)
    producer.start()
    latencies = []
    while len(latencies) < n_points:
        message = await comm.receive_json_from(timeout=30)
        latencies.append((time.perf_counter() - sent[message["data"]["step"]]) * 1000)
    producer.join()
    await comm.disconnect()
    return latencies


async def measure_replay(job, user, repeats=5):
    times = []
    for _ in range(repeats):
        comm = communicator(job, user)
        start = time.perf_counter()
        connected, _ = await comm.connect(timeout=30)
        assert connected
        history = await comm.receive_json_from(timeout=60)
        times.append(time.perf_counter() - start)
        await comm.disconnect()
    return times, history


def start_redis():
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def report_latency(name, pipeline, bare):
    p95, base95 = percentile(pipeline, 95), percentile(bare, 95)
    print(f"{name:10} line→stored→client  p50 {statistics.median(pipeline):6.1f} ms   p95 {p95:6.1f} ms   "
          f"max {max(pipeline):6.1f} ms   (goal p95 ≤ 50 ms: {'met' if p95 <= 50 else 'NOT met'})")
    print(f"{name:10} bare group_send     p50 {statistics.median(bare):6.1f} ms   p95 {base95:6.1f} ms   "
          f"ratio p95 pipeline/bare {p95 / max(base95, 1e-6):.1f}×")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--replay", type=int, default=50000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    from training.models import MetricPoint

    user = User.objects.create(username="bench-admin", is_staff=True)
    print(f"stream latency: {args.points} points, one every {INTERVAL_S * 1000:.0f} ms; "
          f"replay: {args.replay} stored points")

    layers = [("in-memory", {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}})]
    redis_process, redis_url = start_redis()
    if redis_url:
        layers.append(("redis", {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                 "CONFIG": {"hosts": [redis_url], "capacity": 5000}}))
    else:
        print("redis: skipped (apt-get install redis-server)")
    try:
        for name, config in layers:
            use_layer(config)
            job = make_job(user)
            pipeline = asyncio.run(measure_pipeline(job, user, args.points))
            bare = asyncio.run(measure_bare_layer(make_job(user), user, args.points))
            report_latency(name, pipeline, bare)
    finally:
        if redis_process is not None:
            redis_process.send_signal(signal.SIGTERM)
            redis_process.wait()

    use_layer(layers[0][1])
    job = make_job(user)
    MetricPoint.objects.bulk_create(
        [MetricPoint(job=job, scope="train", step=s, loss=1.0 / s, accuracy=0.5, learning_rate=1e-4)
         for s in range(1, args.replay + 1)], batch_size=5000)
    start = time.perf_counter()
    rows = list(MetricPoint.objects.filter(job=job).order_by("step").values_list(
        "scope", "step", "loss", "accuracy", "learning_rate"))
    read_s = time.perf_counter() - start
    times, history = asyncio.run(measure_replay(job, user))
    replay_s = statistics.median(times)
    sizes = {k: len(v["x"]) for k, v in history["data"]["traces"].items() if v["x"]}
    print(f"replay     {len(rows)} points → history in {replay_s * 1000:.0f} ms (median of {len(times)}; "
          f"goal ≤ 1000 ms: {'met' if replay_s <= 1 else 'NOT met'}); trace sizes {sizes}")
    print(f"replay     baseline: reading the rows alone {read_s * 1000:.0f} ms; ratio {replay_s / read_s:.1f}×")
    shutil.rmtree(os.environ["ATTUNE_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()

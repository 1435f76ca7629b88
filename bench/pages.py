"""Server time of the job pages with a realistic amount of data.

With 1,000 jobs and one job of 10,000 metric points (plus its events and
checkpoints) in a fresh SQLite database, it times in one process:

- the jobs list (page 1, and filtered by status), the job detail page of the
  big job, and the compare page of two big jobs, against an empty jobs list
  as the baseline (the same view and template with no row to show; the login
  page is printed too, as the floor of any page);
- the websocket history replay of the big job (connect → the `history`
  message received), against the same replay for a job with no points.

Prints p50 / p95 in milliseconds and the ratio of each p95 to its
baseline's. Goal: p95 ≤ 150 ms for pages.

    .venv/bin/python bench/pages.py [--runs 40]
"""

import argparse
import asyncio
import statistics
import time

import _django  # bench/, the script's folder

_django.setup("attune-bench-pages-")

from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from config.access import make_user  # noqa: E402
from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob, JobEvent, MetricPoint  # noqa: E402

N_JOBS = 1000
N_POINTS = 10_000
STATUSES = ["succeeded", "failed", "cancelled", "running", "queued"]


def populate():
    call_command("migrate", verbosity=0)
    admin, _ = make_user("bench", "admin", password="bench-password")
    base = BaseModel.objects.create(name="attune-tiny", source="attune-tiny")
    train = DataFile.objects.create(filename="train.jsonl", path="x", status="processed", n_examples=480,
                                    format="chat")
    spec = {"model": "attune-tiny", "training_file": train.public_id, "method": "supervised", "adapter": "lora",
            "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", "beta": "auto",
            "seed": 1}
    now = timezone.now()
    FineTuningJob.objects.bulk_create([
        FineTuningJob(base_model=base, training_file=train, created_by=admin, status=STATUSES[i % 5],
                      spec=dict(spec, seed=i, suffix=f"run{i}"), suffix=f"run{i}", seed=i, step=i % 300,
                      total_steps=300, created_at=now - timezone.timedelta(minutes=i))
        for i in range(N_JOBS)], batch_size=500)
    big = [make_big_job(base, train, admin, spec, tag) for tag in ("a", "b")]
    empty = FineTuningJob.objects.create(base_model=base, training_file=train, created_by=admin, status="queued",
                                         spec=spec)
    return admin, big, empty


def make_big_job(base, train, admin, spec, tag):
    """10,000 points: 9,000 training steps, 990 sampled evaluations (every 9 steps), 10 epoch ends."""
    job = FineTuningJob.objects.create(base_model=base, training_file=train, created_by=admin, status="succeeded",
                                       spec=dict(spec, n_epochs=10, suffix=f"big-{tag}"), suffix=f"big-{tag}",
                                       step=9000, total_steps=9000, epoch=10, fine_tuned_model=f"ft:x:big-{tag}:t")
    points = [MetricPoint(job=job, scope="train", step=s, epoch=s / 900, loss=3 / (1 + s / 500), accuracy=s / 9000,
                          learning_rate=2e-4 * (1 - s / 9000), tokens_per_second=1000) for s in range(1, 9001)]
    points += [MetricPoint(job=job, scope="sampled", step=s, epoch=s / 900, loss=3.2 / (1 + s / 500),
                           accuracy=s / 9500) for s in range(9, 9001, 9)][:990]
    points += [MetricPoint(job=job, scope="full", step=e * 900, epoch=e, loss=3 / (1 + e), accuracy=e / 11)
               for e in range(1, 11)]
    points = points[:N_POINTS]
    MetricPoint.objects.bulk_create(points, batch_size=2000)
    Checkpoint.objects.bulk_create([
        Checkpoint(job=job, epoch=e, step=e * 900, path=f"jobs/{job.public_id}/e{e}", bytes=5_000_000,
                   is_final=e == 10, metrics={"step": e * 900, "train_loss": 1.0, "train_mean_token_accuracy": 0.7,
                                              "valid_loss": 1.1, "valid_mean_token_accuracy": 0.6,
                                              "full_valid_loss": 1.2, "full_valid_mean_token_accuracy": 0.6})
        for e in range(1, 11)])
    JobEvent.objects.bulk_create([JobEvent(job=job, message=f"Step {s}/9000: training loss=1.0", type="metrics",
                                           dedupe_key=f"m{s}") for s in range(1, 9001, 18)]
                                 + [JobEvent(job=job, message=f"Checkpoint {e} written") for e in range(1, 11)])
    return job


def timed(fn, runs):
    fn()  # warm: templates compiled, connections open
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]


def page(client, url, expect=200):
    def get():
        resp = client.get(url)
        assert resp.status_code == expect, (url, resp.status_code)
        return resp

    return get


def history_replay(user, job):
    """Connect to the job's websocket through the real consumer and wait for the `history` message."""
    from channels.testing import WebsocketCommunicator

    from config.asgi import application  # noqa: F401  (the app wiring, as served)
    from dashboard.consumers import JobConsumer

    async def once():
        communicator = WebsocketCommunicator(JobConsumer.as_asgi(), f"/ws/jobs/{job.public_id}/")
        communicator.scope["user"] = user
        communicator.scope["url_route"] = {"args": (), "kwargs": {"job_id": job.public_id}}
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        message = await communicator.receive_json_from(timeout=30)
        assert message["kind"] == "history"
        await communicator.disconnect()
        return message

    def run():
        return asyncio.run(once())

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()

    started = time.perf_counter()
    admin, (big, big_b), empty = populate()
    print(f"database: {FineTuningJob.objects.count()} jobs, {MetricPoint.objects.filter(job=big).count()} metric "
          f"points in {big.public_id} (built in {time.perf_counter() - started:.1f} s)")

    anonymous = Client()
    client = Client()
    client.force_login(admin)
    # No job is validating files: the same list view and template, with no row.
    base_p50, base_p95 = timed(page(client, "/jobs/?status=validating_files"), args.runs)
    header = f"{'p50 ms':>9}{'p95 ms':>9}{'p50 / base':>12}{'p95 / base':>12}"
    print(f"\n{'page':<42}{header}")
    print(f"{'empty jobs list (baseline)':<42}{base_p50:>9.1f}{base_p95:>9.1f}{1:>11.2f}×{1:>11.2f}×")
    rows = [
        ("login page (anonymous)", "/login/"),
        ("jobs list, page 1", "/jobs/"),
        ("jobs list, status=failed, page 3", "/jobs/?status=failed&page=3"),
        ("job detail (10,000 points)", f"/jobs/{big.public_id}/"),
        ("compare 2 jobs (10,000 points each)", f"/jobs/compare/?jobs={big.public_id}&jobs={big_b.public_id}"),
    ]
    worst = 0
    for label, url in rows:
        p50, p95 = timed(page(anonymous if "anonymous" in label else client, url), args.runs)
        worst = max(worst, p95) if label.startswith("job") else worst
        print(f"{label:<42}{p50:>9.1f}{p95:>9.1f}{p50 / base_p50:>11.2f}×{p95 / base_p95:>11.2f}×")

    ws_runs = max(10, args.runs // 2)
    empty_p50, empty_p95 = timed(history_replay(admin, empty), ws_runs)
    big_p50, big_p95 = timed(history_replay(admin, big), ws_runs)
    history = history_replay(admin, big)()["data"]
    sizes = {name: len(t["x"]) for name, t in history["traces"].items()}
    print(f"\n{'websocket history replay':<42}{header}")
    print(f"{'job with no points (baseline)':<42}{empty_p50:>9.1f}{empty_p95:>9.1f}{1:>11.2f}×{1:>11.2f}×")
    print(f"{'job with 10,000 points':<42}{big_p50:>9.1f}{big_p95:>9.1f}{big_p50 / empty_p50:>11.2f}×"
          f"{big_p95 / empty_p95:>11.2f}×")
    print(f"  points sent per trace: {sizes}")
    print(f"\ngoal: pages p95 ≤ 150 ms — slowest list/detail page p95 {worst:.1f} ms: "
          f"{'met' if worst <= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Generating a rating task's outputs in the background.

A daemon thread of the web process works through the task's items in
order, one batch (all snapshots) per prompt, storing each output as it
finishes and a heartbeat with the progress. Items already generated are
skipped, so a task whose thread died with its process (a restart) is
finished by starting it again: the task page offers that once the
heartbeat is stale.
"""

import asyncio
import logging
import threading

from django.db import close_old_connections
from django.utils import timezone

from playground.inference import InferenceError, SamplingParams, collect, get_backend
from playground.models import Output, RatingTask
from playground.snapshots import UnknownModel, resolve_snapshot

log = logging.getLogger(__name__)

_running = set()
_running_lock = threading.Lock()


def start_generation(task, retry_failed=False):
    """Start (or restart) the background generation of a task; False if it is already running here.

    `retry_failed`: also generate again the items with a failed output that nobody has rated yet."""
    with _running_lock:
        if task.pk in _running:
            return False
        _running.add(task.pk)
    RatingTask.objects.filter(pk=task.pk).update(status=RatingTask.GENERATING, heartbeat_at=timezone.now(),
                                                 error="")
    thread = threading.Thread(target=_run, args=(task.pk, retry_failed), name=f"rating-task-{task.public_id}",
                              daemon=True)
    thread.start()
    return thread


def _run(task_pk, retry_failed=False):
    try:
        generate_outputs(task_pk, retry_failed)
    except Exception as exc:  # the task page shows what went wrong
        log.exception("Generating the outputs of rating task %s failed", task_pk)
        RatingTask.objects.filter(pk=task_pk).update(status=RatingTask.FAILED, error=f"{type(exc).__name__}: {exc}")
    finally:
        with _running_lock:
            _running.discard(task_pk)
        close_old_connections()


def retryable_items(task):
    """Items with a failed output and no rating: generating them again loses nobody's work."""
    return task.items.filter(outputs__status=Output.ERROR, ratings__isnull=True).distinct()


def generate_outputs(task_pk, retry_failed=False):
    """Generate every missing output of a task, then mark it ready. Runs in any thread."""
    task = RatingTask.objects.get(pk=task_pk)
    try:
        snapshots = [resolve_snapshot(name) for name in task.snapshot_names]
        params = SamplingParams.from_dict(task.params)
    except (UnknownModel, InferenceError) as exc:
        task.status, task.error = RatingTask.FAILED, str(exc)
        task.save(update_fields=["status", "error"])
        return
    backend = get_backend()
    done = 0
    retry = set(retryable_items(task).values_list("pk", flat=True)) if retry_failed else set()
    for item in task.items.order_by("index"):
        if item.generated and item.pk not in retry:
            done += 1
            continue
        item.outputs.all().delete()
        outputs = Output.objects.bulk_create([Output(item=item, position=i, snapshot_name=s.name)
                                              for i, s in enumerate(snapshots)])
        finals = asyncio.run(collect(backend.generate(snapshots, item.messages, params), len(snapshots)))
        for output, event in zip(outputs, finals, strict=True):
            output.record(event)
        done += 1
        RatingTask.objects.filter(pk=task.pk).update(n_generated=done, heartbeat_at=timezone.now())
    RatingTask.objects.filter(pk=task.pk, status=RatingTask.GENERATING).update(
        status=RatingTask.READY, heartbeat_at=timezone.now())

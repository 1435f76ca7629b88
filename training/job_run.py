"""One claimed job's run: the engine's process, its stdout lines stored, cancel and pause carried out,
the heartbeat, and the end.

- Store: each stdout line becomes MetricPoint / JobEvent / Checkpoint rows.
  Storing is idempotent: a metric point is keyed by (scope, step), an event
  by a dedupe key, a checkpoint by its epoch, so the lines a resumed engine
  replays update rows instead of doubling them. Each stored row is then
  relayed to the channel-layer group `job-<id>` (training/live.py).
- Control: the page or the API sets the job's `control`; every heartbeat
  (HEARTBEAT_S) reads it: cancel stops the engine, pause asks it to save its
  state and exit (training/launch.py), and a stopping worker pauses its jobs
  so that they go back to the queue.
- The end: `done` → `FineTuningJob.succeed` (the results CSV, the fine-tuned
  model's name on the final checkpoint, webhooks); `error`, or an exit with
  no word, → `FineTuningJob.fail` with the engine's code (or its log's last
  lines); `paused` → `paused`, or `queued` again when the worker is stopping.
- Recovery: what a kill -9 can leave unstored (a checkpoint published on
  disk without its row, a row without its event) is stored once
  (`recover_checkpoints`), before each start and when a dead worker's job is
  queued again.
"""

import hashlib
import json
import logging
import os
import queue
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training import launch, launchers, live
from training.engine import checkpoints
from training.models import Checkpoint, FineTuningJob, JobEvent, MetricPoint, checkpoint_stored

log = logging.getLogger("attune.worker")

HEARTBEAT_S = float(os.environ.get("ATTUNE_HEARTBEAT_S", "2"))
POLL_S = 0.5


def _metrics_message(data):
    parts = []
    if data.get("train_loss") is not None:
        parts.append(f"training loss={data['train_loss']:.2f}")
    if data.get("valid_loss") is not None:
        parts.append(f"validation loss={data['valid_loss']:.2f}")
    if data.get("full_valid_loss") is not None:
        parts.append(f"full validation loss={data['full_valid_loss']:.2f}")
    for prefix, what in (("train", "training"), ("valid", "validation"), ("full_valid", "full validation")):
        if data.get(f"{prefix}_reward_margin") is not None:
            parts.append(f"{what} reward margin={data[f'{prefix}_reward_margin']:.2f}")
    for name, what in (("train_mean_reward", "training"), ("valid_reward_mean", "validation"),
                       ("full_valid_mean_reward", "full validation")):
        if data.get(name) is not None:
            parts.append(f"{what} mean reward={data[name]:.2f}")
    total = data.get("total_steps")
    where = f"Step {data['step']}/{total}" if total else f"Step {data['step']}"
    return f"{where}: {', '.join(parts)}" if parts else where


def _reward_figures(line, scope, extra=()):
    """A reinforcement line's figures as the line names them, for its step's metrics event (the API's event
    `data`): those MetricPoint stores, and `extra` ones it does not (the error flags' shares, …)."""
    names = (*MetricPoint.REWARD_FIGURES[scope].values(), *extra)
    return {name: line[name] for name in names if line.get(name) not in (None, {})}


class JobRun:
    """Runs one claimed job to its end: engine process, stored lines, control, heartbeat."""

    def __init__(self, job, worker_name, stopping=None, follow=None):
        self.job = job
        self.worker_name = worker_name
        self.stopping = stopping or threading.Event()
        # A run another worker started on a cluster, which this one follows from where that one stopped.
        self.handle = follow
        self.detached = False
        self.done = None
        self.error = None
        self.paused_at = None
        self.disk_full = None  # what the engine said when a full disk paused it
        self.pause_sent = False
        self.started = False
        self.terminated = False
        self.last_heartbeat = 0.0
        self.last_status = 0.0
        self.t0 = None
        self.step0 = None
        resolved = job.spec_values.resolved
        self.n_epochs = resolved.n_epochs if resolved is not None else None

    # --- the run ---

    def start(self):
        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        # First what a kill left in the folder (a checkpoint moved aside comes back before --resume is chosen).
        for n, sentence in enumerate(checkpoints.tidy(job.job_dir)):
            job.record_event(sentence, dedupe_key=f"tidy-{job.attempts}-{n}")
        try:
            self.recover_checkpoints()
        except Exception:  # noqa: BLE001 - the engine's own lines still store what it writes from here
            log.exception("%s: could not recover its checkpoints", job.public_id)
        spec = launch.engine_spec(job)
        resume = checkpoints.latest_resumable(job.job_dir) is not None
        launcher = launchers.current()
        command = launcher.command(job, spec, resume)
        if spec.get("n_gpus", 1) > 1 or (spec.get("n_nodes") or 1) > 1:
            shown = " ".join(["torchrun", *command[3:]])
            where = f"{spec['n_nodes']} nodes × " if (spec.get("n_nodes") or 1) > 1 else ""
            job.record_event(f"Launching on {where}{spec.get('n_gpus', 1)} GPUs: {shown}",
                             dedupe_key=f"launch-{job.attempts}")
        launch.write_spec(job, spec)
        self.handle = launcher.start(job, spec, command)
        if self.handle.pid is not None:
            FineTuningJob.objects.filter(pk=job.pk).update(engine_pid=self.handle.pid)
            job.engine_pid = self.handle.pid
        if job.launcher_state.get("slurm_job_id"):
            job.record_event(f"Submitted to Slurm as batch job {job.launcher_state['slurm_job_id']}.",
                             dedupe_key=f"submitted-{job.attempts}")
        log.info("%s: started the engine with the %s launcher (%s)", job.public_id, launcher.name,
                 " ".join(command))

    @property
    def process(self):
        """The local engine process, or None (a cluster job, or not started)."""
        return getattr(self.handle, "process", None)

    def run(self):
        if self.handle is None:
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - reported on the job, never lost
                log.exception("could not start the engine")
                self.job.fail("engine_start_failed", f"The training process could not start: {exc}")
                return
        else:
            self.started = True  # a followed engine said `started` to the worker before
        lines = queue.Queue()

        def read():
            for raw, offset in self.handle.lines():
                lines.put((raw, offset))
                if self.detached:
                    return
            lines.put(None)

        threading.Thread(target=read, name=f"read-{self.job.public_id}", daemon=True).start()
        while True:
            try:
                item = lines.get(timeout=POLL_S)
            except queue.Empty:
                item = (b"", None)
            if item is None:
                break
            raw, offset = item
            if raw:
                self.feed(raw, offset)
            self.tick()
            if self.detached:
                return
        self.finish(self.handle.wait())

    def feed(self, raw, offset=None):
        """Store one raw stdout line; `offset` (a cluster job's) is where the next one starts in its file, saved
        with what the line stored, so the next worker to follow the job reads on from there."""
        try:
            line = json.loads(raw)
        except ValueError:
            log.warning("%s: engine printed a line that is not JSON: %r", self.job.public_id, raw[:200])
            line = None
        try:
            self.handle_line(line if isinstance(line, dict) else {}, offset)
        except Exception:  # noqa: BLE001 - one bad line must not lose the rest of the run
            log.exception("%s: could not store %r", self.job.public_id, line)

    def tick(self):
        """Heartbeat, and carry out a cancel or pause asked for by a page or the API."""
        now = time.monotonic()
        if now - self.last_heartbeat < min(HEARTBEAT_S, POLL_S * 2):
            return
        self.last_heartbeat = now
        job = self.job
        mine = FineTuningJob.objects.filter(pk=job.pk, worker=self.worker_name)
        mine.filter(status=FineTuningJob.RUNNING).update(heartbeat_at=timezone.now())
        row = FineTuningJob.objects.filter(pk=job.pk).values("status", "control", "worker").first()
        if row is None or row["status"] == FineTuningJob.CANCELLED or row["control"] == "cancel":
            self.terminate()
        elif row["worker"] != self.worker_name:
            # Another worker took the job over (this one looked dead): a cluster job goes on under it.
            if self.handle.detachable:
                self.detached = True
            else:
                self.terminate()
        elif self.stopping.is_set() and self.handle.detachable and row["control"] != "pause":
            self.detach()
        elif (row["control"] == "pause" or self.stopping.is_set()) and not self.pause_sent and self.started:
            # Only once the engine has said `started`: before that it has no trainer to save, and a
            # SIGUSR1 that early would be ignored (or, before its handler exists, kill it).
            self.handle.pause()
            self.pause_sent = True
        if now - self.last_status > 1.0 and job.step:
            self.last_status = now
            job.publish_status()

    def terminate(self):
        """Stop the engine (once): SIGTERM, then SIGKILL after the grace period (or scancel)."""
        if self.terminated:
            return
        self.terminated = True
        self.handle.cancel()

    def detach(self):
        """Leave a cluster job running when this worker stops: the next worker to look follows it."""
        job = self.job
        if FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.RUNNING, worker=self.worker_name).update(
                worker="", heartbeat_at=None):
            job.record_event(f"The worker {self.worker_name} stopped; the job goes on as Slurm batch job "
                             f"{job.launcher_state.get('slurm_job_id')}, and the next worker follows it.",
                             dedupe_key=f"detached-{job.attempts}-{self.worker_name}")
        self.detached = True

    # --- storing one line ---

    def handle_line(self, line, offset=None):
        """Store one engine line (idempotently) and, for a cluster job, the offset after it, in one transaction;
        then relay what was stored."""
        handler = getattr(self, f"on_{line.get('type')}", None)
        if handler is None and offset is None:
            return
        with transaction.atomic():
            out = (handler(line) if handler else None) or []
            if offset is not None:
                self.job.launcher_state = {**self.job.launcher_state, "offset": offset}
                FineTuningJob.objects.filter(pk=self.job.pk).update(launcher_state=self.job.launcher_state)
        for message_kind, data in out:
            live.publish(self.job, message_kind, data)

    def _upsert_point(self, scope, step, **values):
        point, _ = MetricPoint.objects.update_or_create(job=self.job, scope=scope, step=step, defaults=values)
        return point

    def _merge_metrics_event(self, step, values):
        key = f"metrics-{step}"
        event = JobEvent.objects.filter(job=self.job, dedupe_key=key).first()
        data = dict(event.data or {}) if event else {}
        data.update({k: v for k, v in values.items() if v is not None})
        data["step"] = step
        data.setdefault("total_steps", self.job.total_steps or None)
        message = _metrics_message(data)
        if event is None:
            event = JobEvent.objects.create(job=self.job, type="metrics", message=message, data=data,
                                            dedupe_key=key)
        else:
            event.data, event.message = data, message
            event.save(update_fields=["data", "message"])
        return event

    def on_started(self, line):
        self.started = True
        job = self.job
        job.total_steps = line.get("total_steps") or job.total_steps
        job.save(update_fields=["total_steps"])
        if line.get("n_epochs"):
            self.n_epochs = line["n_epochs"]
        out = []
        # Where it trains, kept on the event: the time estimates of later jobs learn from jobs on the same device.
        where = {"device": line.get("device"), "world_size": line.get("world_size")}
        event, created = JobEvent.objects.get_or_create(job=job, dedupe_key="started",
                                                        defaults={"message": "Fine-tuning job started", "data": where})
        if created:
            out.append(("event", live.event_payload(event)))
        out.append(("status", live.status_payload(job)))
        return out

    def on_metrics(self, line):
        job = self.job
        step = int(line["step"])
        point = self._upsert_point("train", step, epoch=line.get("epoch") or 0, loss=line.get("train_loss"),
                                   accuracy=line.get("train_mean_token_accuracy"),
                                   learning_rate=line.get("learning_rate"),
                                   tokens_per_second=line.get("tokens_per_second"),
                                   reward_margin=line.get("train_reward_margin"),
                                   reward_accuracy=line.get("train_reward_accuracy"),
                                   **MetricPoint.reward_values("train", line))
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.step0 = now, step
        job.step = step
        job.total_steps = line.get("total_steps") or job.total_steps
        job.epoch = line.get("epoch") or job.epoch
        if line.get("tokens_per_second") is not None:
            job.tokens_per_second = line["tokens_per_second"]
        if step > self.step0 and job.total_steps:
            per_step = (now - self.t0) / (step - self.step0)
            job.estimated_finish = timezone.now() + timedelta(seconds=per_step * (job.total_steps - step))
        FineTuningJob.objects.filter(pk=job.pk).update(step=job.step, total_steps=job.total_steps,
                                                       epoch=job.epoch, tokens_per_second=job.tokens_per_second,
                                                       estimated_finish=job.estimated_finish)
        event = self._merge_metrics_event(step, {
            "total_steps": job.total_steps, "train_loss": line.get("train_loss"),
            "train_mean_token_accuracy": line.get("train_mean_token_accuracy"),
            "train_reward_margin": line.get("train_reward_margin"),
            "train_reward_accuracy": line.get("train_reward_accuracy"),
            **_reward_figures(line, "train", ("completion_clipped_ratio", "train_kl", "train_errors"))})
        return [("metric", live.metric_payload(point)), ("event", live.event_payload(event))]

    def on_eval(self, line):
        scope = line.get("scope")
        if scope not in ("sampled", "full"):
            return []
        step = int(line["step"])
        prefix = "valid" if scope == "sampled" else "full_valid"
        loss, accuracy = line.get(f"{prefix}_loss"), line.get(f"{prefix}_mean_token_accuracy")
        margin, wins = line.get(f"{prefix}_reward_margin"), line.get(f"{prefix}_reward_accuracy")
        point = self._upsert_point(scope, step, epoch=line.get("epoch") or 0, loss=loss, accuracy=accuracy,
                                   reward_margin=margin, reward_accuracy=wins,
                                   **MetricPoint.reward_values(scope, line))
        event = self._merge_metrics_event(step, {f"{prefix}_loss": loss, f"{prefix}_mean_token_accuracy": accuracy,
                                                 f"{prefix}_reward_margin": margin,
                                                 f"{prefix}_reward_accuracy": wins,
                                                 **_reward_figures(line, scope)})
        return [("metric", live.metric_payload(point)), ("event", live.event_payload(event))]

    def on_checkpoint(self, line):
        job = self.job
        path = Path(line["path"])
        if not path.is_absolute():
            path = job.job_dir / path
        try:
            relative = str(path.resolve().relative_to(settings.ATTUNE_HOME))
        except ValueError:
            log.error("%s: checkpoint outside ATTUNE_HOME ignored: %s", job.public_id, path)
            return []
        epoch = int(line["epoch"])
        final = bool(self.n_epochs) and epoch >= int(self.n_epochs)
        values = {"step": int(line["step"]), "path": relative, "bytes": line.get("bytes") or 0,
                  "metrics": line.get("metrics") or {}, "is_final": final}
        checkpoint = Checkpoint.objects.filter(job=job, epoch=epoch).first()
        created = checkpoint is None
        if checkpoint is None:
            checkpoint = Checkpoint(job=job, epoch=epoch, **values)
            if final:
                # The final epoch's snapshot carries the fine-tuned model's own name.
                checkpoint.model_tag = job.model_tag
        else:
            # A replayed line keeps what was added to the metrics since (the eval's scores).
            values["metrics"] = {**checkpoint.metrics, **values["metrics"]}
            for name, value in values.items():
                setattr(checkpoint, name, value)
        checkpoint.save()
        checkpoint.job = job
        # After the commit: what listens (the evals app queues a run) must see the row.
        transaction.on_commit(lambda: checkpoint_stored.send(sender=Checkpoint, checkpoint=checkpoint,
                                                             created=created))
        out = [("checkpoint", live.checkpoint_payload(checkpoint))]
        if not final:
            event, created = self._checkpoint_event(checkpoint)
            if created:
                out.append(("event", live.event_payload(event)))
        return out

    def _checkpoint_event(self, checkpoint):
        # Stored in the transaction that stores the row (handle_line), so a kill -9 keeps both or neither.
        return JobEvent.objects.get_or_create(
            job=self.job, dedupe_key=f"checkpoint-{checkpoint.epoch}",
            defaults={"message": f"Checkpoint created at step {checkpoint.step} with Snapshot ID: "
                                 f"{checkpoint.model_name}", "data": {}})

    def recover_checkpoints(self):
        """Store what a kill -9 can leave unstored, once each: an epoch checkpoint the engine published on
        disk before its line was stored (a resumed engine starts after it and never prints it again), and
        the event of a checkpoint row that lacks one."""
        job = self.job
        stored = set(job.checkpoints.values_list("epoch", flat=True))
        for folder in checkpoints.epoch_checkpoints(job.job_dir):
            state = checkpoints.read_state(folder)
            if state.get("epoch") is None or int(state["epoch"]) in stored:
                continue
            log.warning("%s: storing checkpoint %s found on disk", job.public_id, folder.name)
            self.handle_line({"type": "checkpoint", "epoch": state["epoch"], "step": state["step"],
                              "path": str(folder), "bytes": checkpoints.folder_bytes(folder),
                              "metrics": state.get("metrics") or {}})
        with_event = {int(key.removeprefix("checkpoint-")) for key in job.events.filter(
            dedupe_key__startswith="checkpoint-").values_list("dedupe_key", flat=True)
            if key.removeprefix("checkpoint-").isdigit()}
        for checkpoint in job.checkpoints.filter(is_final=False).exclude(epoch__in=with_event).order_by("epoch"):
            checkpoint.job = job
            with transaction.atomic():
                event, created = self._checkpoint_event(checkpoint)
            if created:
                live.publish_event(job, event)

    def on_message(self, line):
        text = str(line.get("text") or "")
        level = line.get("level") if line.get("level") in ("info", "warn", "error") else "info"
        # The same text at the same step is the same event, also when a resumed engine repeats it.
        digest = hashlib.sha1(f"{self.job.step}:{text}".encode()).hexdigest()[:20]
        event, created = JobEvent.objects.get_or_create(
            job=self.job, dedupe_key=f"msg-{digest}", defaults={"message": text, "level": level, "data": {}})
        return [("event", live.event_payload(event))] if created else []

    def on_paused(self, line):
        self.paused_at = int(line.get("step") or self.job.step)
        if line.get("reason") == "disk_full":
            self.disk_full = str(line.get("message") or "The disk holding the job folder is full; the job is "
                                                         "paused. Free space, then resume it.")
        return []

    def on_done(self, line):
        self.done = line
        return []

    def on_error(self, line):
        self.error = (line.get("code") or "training_error", line.get("message") or "The training failed.")
        return []

    # --- the end of a run ---

    def finish(self, ended):
        job = self.job
        returncode = ended.returncode
        job.refresh_from_db()
        mine = job.worker == self.worker_name
        if job.status == FineTuningJob.CANCELLED:
            job.record_event(f"Training stopped at step {job.step}; the checkpoints written so far are kept.",
                             dedupe_key=f"stopped-{job.attempts}")
            FineTuningJob.objects.filter(pk=job.pk).update(engine_pid=None, control="")
            return
        if not mine or job.status != FineTuningJob.RUNNING:
            return  # another worker took it over (this one looked dead); leave it alone
        if ended.interrupted and self.done is None and self.paused_at is None:
            self.finish_interrupted(ended)
        elif self.paused_at is not None and returncode == 0 and self.done is None:
            self.finish_paused()
        elif self.done is not None and returncode == 0:
            job.succeed(trained_tokens=self.done.get("trained_tokens"))
        elif self.error is not None:
            job.fail(self.error[0], self.error[1], only_from=[FineTuningJob.RUNNING])
        else:
            tail = launch.log_tail(job)
            job.fail("engine_crashed",
                     f"The training process exited with status {returncode} without reporting an error."
                     + (f" Last lines of its log: {tail}" if tail else ""), only_from=[FineTuningJob.RUNNING])

    def finish_interrupted(self, ended):
        """The cluster took the engine away (preempted, a node failed, its time ran out): queued again, the job
        resumes from its last complete checkpoint."""
        job = self.job
        latest = checkpoints.latest_resumable(job.job_dir)
        where = (f"its last complete checkpoint ({latest.name})" if latest is not None else
                 "the beginning (no complete checkpoint yet)")
        job.change_status(FineTuningJob.QUEUED, only_from=[FineTuningJob.RUNNING], control="", worker="",
                          engine_pid=None, estimated_finish=None, events=[{
                              "message": f"Slurm batch job {job.launcher_state.get('slurm_job_id')} ended as "
                                         f"{ended.state} at step {job.step}; the job is queued again and "
                                         f"resumes from {where}.",
                              "level": "warn", "dedupe_key": f"interrupted-{job.attempts}"}])

    def finish_paused(self):
        job = self.job
        # A full disk waits for somebody to free space: queued again, it would only fill it again.
        requeue = self.stopping.is_set() and job.control != "pause" and self.disk_full is None
        if self.disk_full is not None:
            event = {"message": self.disk_full, "level": "error", "dedupe_key": f"disk-full-{job.attempts}"}
        elif requeue:
            event = {"message": f"The worker {self.worker_name} stopped; the job saved its state at step "
                                f"{self.paused_at} and is queued again.", "dedupe_key": f"requeued-{job.attempts}"}
        else:
            event = {"message": f"The job was paused at step {self.paused_at}; resume continues from there.",
                     "dedupe_key": f"paused-{job.attempts}"}
        job.change_status(FineTuningJob.QUEUED if requeue else FineTuningJob.PAUSED,
                          only_from=[FineTuningJob.RUNNING], events=[event], control="", worker="",
                          engine_pid=None, estimated_finish=None)

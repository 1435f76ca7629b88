"""The training worker: the job table is the queue, the engine a child process.

One loop, run by `manage.py trainworker --slots N` (at scale, one per GPU host)
or as a daemon thread of `manage.py serve` (`start_inprocess_worker`, the
embedded default):

- Claim: `FineTuningJob.claim_next(worker)` (SKIP LOCKED on PostgreSQL, a
  conditional update on SQLite): no job ever runs twice.
- Run: the resolved spec goes to `<job_dir>/spec.json` with the base model's
  folder, the files' paths and the job folder filled in; the engine starts
  as `python -m training.engine spec.json [--resume]` (under `torchrun` when
  the spec asks for several GPUs; the command is then shown in an event) in
  its own process group, and dies with its worker (PR_SET_PDEATHSIG). Its
  stderr goes to `<job_dir>/engine.log`. It inherits only the variables
  `engine_env` lets through (ENGINE_ENV_NAMES and ENGINE_ENV_PREFIXES; a
  tracker's own only when the job uses it), never the studio's secrets.
- Store: each stdout line becomes MetricPoint / JobEvent / Checkpoint rows.
  Storing is idempotent: a metric point is keyed by (scope, step), an event
  by a dedupe key, a checkpoint by its epoch, so the lines a resumed engine
  replays update rows instead of doubling them. Each stored row is then
  relayed to the channel-layer group `job-<id>` (training/payloads.py).
- Control: cancel → SIGTERM to the engine's group, SIGKILL after
  CANCEL_GRACE_S; pause → SIGUSR1 (the engine saves and exits, the job
  becomes `paused`); resume re-queues and the engine gets `--resume`.
- Heartbeat every HEARTBEAT_S. Any worker re-queues a running job whose
  heartbeat is older than STALE_S, or at once when its worker was a process
  on this host that no longer exists, or an earlier start of this very
  process (a worker is named `host:pid:boot:label`, with a random token per
  start: a restarted container is PID 1 again). The job resumes from its last
  complete checkpoint, an event says so, and a checkpoint a kill -9 left on
  disk without its row or event gets them.
- Stopping a worker (SIGTERM/SIGINT to `trainworker` or to `serve`) pauses
  its jobs and puts them back in the queue, so another worker (or the next
  start) continues them from their pause state.
- At the end: the results CSV (file of purpose `fine-tune-results`),
  `fine_tuned_model`, `trained_tokens`, `finished_at`, the final checkpoint's
  name, webhooks.

Not supported: pinning a job to particular GPUs of a host (a slot uses what
CUDA_VISIBLE_DEVICES gives the worker).
"""

import asyncio
import csv
import ctypes
import hashlib
import io
import json
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.spreadsheet import safe_row
from training import payloads
from training.models import Checkpoint, DataFile, FineTuningJob, JobEvent, MetricPoint

log = logging.getLogger("attune.worker")

HEARTBEAT_S = float(os.environ.get("ATTUNE_HEARTBEAT_S", "2"))
STALE_S = float(os.environ.get("ATTUNE_WORKER_STALE_S", "30"))
CANCEL_GRACE_S = float(os.environ.get("ATTUNE_CANCEL_GRACE_S", "5"))
POLL_S = 0.5
RESULTS_FILENAME = "step_metrics.csv"
RESULTS_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
HOST = socket.gethostname()
MAX_BATCH = 200


# --- relay to the channel layer ----------------------------------------------------------------

class Relay:
    """Sends channel-layer messages, in order, from any thread.

    The in-memory channel layer is not thread-safe: its queues belong to the
    event loop of the server that runs the websocket consumers. So from the
    worker's threads inside `manage.py serve`, a message is never sent
    directly: it is handed (call_soon_threadsafe) to a pump task that runs in
    the server's loop, captured when the first websocket connects
    (`attach`). Before any websocket has connected in this process nobody can
    be listening on the in-memory layer, so messages are dropped. With
    Redis, a process without a server (trainworker) starts its own loop
    thread for the pump. One pump per loop keeps the messages in the order
    they were sent, which concurrent `group_send` tasks would not.
    """

    def __init__(self):
        self.loop = None
        self.queue = None
        self.lock = threading.Lock()

    def attach(self, loop):
        """Run the pump in `loop` (call from inside it); a closed or stopped earlier loop is replaced."""
        with self.lock:
            if self.loop is loop:
                return
            if self.loop is not None and self.loop.is_running() and not self.loop.is_closed():
                return
            self.loop = loop
            self.queue = asyncio.Queue()
            loop.create_task(self._pump(self.queue))

    def _start_own_loop(self):
        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def attach_here():
                self.attach(asyncio.get_running_loop())
                ready.set()

            loop.run_until_complete(attach_here())
            loop.run_forever()

        threading.Thread(target=run, name="attune-relay", daemon=True).start()
        ready.wait(10)

    def send(self, group, message):
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            if isinstance(layer, InMemoryChannelLayer):
                return  # no consumer has connected in this process: nobody to tell
            self._start_own_loop()
            loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.queue.put_nowait((group, message))
        else:
            loop.call_soon_threadsafe(self.queue.put_nowait, (group, message))

    async def _pump(self, pending):
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        while True:
            items = [await pending.get()]
            # Whatever piled up meanwhile goes out as one `job.batch` per group (in order): with Redis
            # a group_send costs a few round trips, and a metric line makes two messages.
            while not pending.empty() and len(items) < MAX_BATCH:
                items.append(pending.get_nowait())
            batches = {}
            for group, message in items:
                batches.setdefault(group, []).append(message)
            for group, messages in batches.items():
                message = messages[0] if len(messages) == 1 else {"type": "job.batch", "messages": messages}
                try:
                    await layer.group_send(group, message)
                except Exception:  # noqa: BLE001 - a relay failure must not stop the pump
                    log.exception("relay to %s failed", group)


relay = Relay()


def publish(job, kind, data):
    relay.send(payloads.group_name(job), payloads.message(kind, data))


def publish_event(job, event):
    publish(job, "event", payloads.event_payload(event))


def publish_status(job):
    publish(job, "status", payloads.status_payload(job))


# --- one run of the engine ---------------------------------------------------------------------

def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        return None


_LIBC = _libc()
PR_SET_PDEATHSIG = 1


def _engine_child_setup():
    # The engine gets SIGKILL when the thread that started it dies, so a kill -9 of
    # the worker (or of `make run`) leaves no orphan writing into the job folder.
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# What the engine inherits from the worker's environment; nothing else reaches it, so the
# studio's own secrets (SECRET_KEY, DATABASE_URL, REDIS_URL, tokens of other services) stay out
# of training code and of the trackers it starts.
ENGINE_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP", "XDG_CACHE_HOME",
    "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "LD_LIBRARY_PATH",
    "TOKENIZERS_PARALLELISM", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
ENGINE_ENV_PREFIXES = ("LC_", "HF_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "TORCHINDUCTOR_", "TRITON_",
                       "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "CUBLAS_", "CUDNN_", "NCCL_", "NVIDIA_",
                       "ACCELERATE_")
# A tracker's variables (its API key among them) pass only to a job that uses that tracker.
INTEGRATION_ENV_PREFIXES = {"wandb": ("WANDB_",), "mlflow": ("MLFLOW_", "DATABRICKS_")}


def engine_env(spec, environ=None):
    """The environment of a job's engine: the allowed part of `environ` (the worker's own by default)."""
    environ = os.environ if environ is None else environ
    prefixes = ENGINE_ENV_PREFIXES
    integrations = spec.get("integrations") or {}
    for name, extra in INTEGRATION_ENV_PREFIXES.items():
        if integrations.get(name):
            prefixes += extra
    env = {k: v for k, v in environ.items() if k in ENGINE_ENV_NAMES or k.startswith(prefixes)}
    env["PYTHONUNBUFFERED"] = "1"
    if integrations.get("wandb"):
        env["WANDB_RUN_ID"] = spec["job_id"]
    return env


def engine_command(spec_path, n_gpus=1, resume=False):
    args = ["-m", "training.engine", str(spec_path)] + (["--resume"] if resume else [])
    if n_gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}",
                *args]
    return [sys.executable, *args]


def _fmt(value):
    return "" if value is None else f"{value:.6g}"


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
    total = data.get("total_steps")
    where = f"Step {data['step']}/{total}" if total else f"Step {data['step']}"
    return f"{where}: {', '.join(parts)}" if parts else where


class JobRun:
    """Runs one claimed job to its end: engine process, stored lines, control, heartbeat."""

    def __init__(self, job, worker_name, stopping=None):
        self.job = job
        self.worker_name = worker_name
        self.stopping = stopping or threading.Event()
        self.process = None
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
        self.n_epochs = (job.resolved_spec or {}).get("n_epochs")

    # --- spec and command ---

    def engine_spec(self):
        job = self.job
        spec = dict(job.resolved_spec or job.spec)
        spec["model"] = job.base_model.load_path
        spec["training_file"] = str(job.training_file.full_path)
        spec["validation_file"] = str(job.validation_file.full_path) if job.validation_file else None
        spec["output_dir"] = str(job.job_dir)
        spec["job_id"] = job.public_id
        integrations = dict(spec.get("integrations") or {})
        if integrations.get("tensorboard"):
            board = dict(integrations["tensorboard"])
            board["log_dir"] = str(job.job_dir / (board.get("log_dir") or "tensorboard"))
            integrations["tensorboard"] = board
        if integrations.get("mlflow"):
            flow = dict(integrations["mlflow"])
            uri = flow["tracking_uri"]
            if not uri.startswith(("http://", "https://", "databricks")):
                flow["tracking_uri"] = str(job.job_dir / uri.removeprefix("file://").removeprefix("file:"))
            integrations["mlflow"] = flow
        spec["integrations"] = integrations
        return spec

    def start(self):
        from training.engine import checkpoints

        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        # First what a kill left in the folder (a checkpoint moved aside comes back before --resume is chosen).
        for n, sentence in enumerate(checkpoints.tidy(job.job_dir)):
            job.record_event(sentence, dedupe_key=f"tidy-{job.attempts}-{n}")
        try:
            self.recover_checkpoints()
        except Exception:  # noqa: BLE001 - the engine's own lines still store what it writes from here
            log.exception("%s: could not recover its checkpoints", job.public_id)
        spec_path = job.job_dir / "spec.json"
        spec = self.engine_spec()
        spec_path.write_text(json.dumps(spec, indent=2))
        resume = checkpoints.latest_resumable(job.job_dir) is not None
        command = engine_command(spec_path, spec.get("n_gpus", 1), resume)
        if spec.get("n_gpus", 1) > 1:
            shown = " ".join(["torchrun", *command[3:]])
            job.record_event(f"Launching on {spec['n_gpus']} GPUs: {shown}",
                             dedupe_key=f"launch-{job.attempts}")
        stderr = open(job.job_dir / "engine.log", "ab")
        stderr.write(f"\n=== attempt {job.attempts} by {self.worker_name}: {' '.join(command)}\n".encode())
        stderr.flush()
        self.process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
            env=engine_env(spec), start_new_session=True, preexec_fn=_engine_child_setup)
        stderr.close()
        FineTuningJob.objects.filter(pk=job.pk).update(engine_pid=self.process.pid)
        job.engine_pid = self.process.pid
        log.info("%s: started engine pid %s (%s)", job.public_id, self.process.pid, " ".join(command))

    # --- the run ---

    def run(self):
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - reported on the job, never lost
            log.exception("could not start the engine")
            from training.jobs import fail_job

            fail_job(self.job, "engine_start_failed", f"The training process could not start: {exc}")
            return
        lines = queue.Queue()

        def read():
            for raw in self.process.stdout:
                lines.put(raw)
            lines.put(None)

        threading.Thread(target=read, name=f"read-{self.job.public_id}", daemon=True).start()
        while True:
            try:
                raw = lines.get(timeout=POLL_S)
            except queue.Empty:
                raw = b""
            if raw is None:
                break
            if raw:
                self.feed(raw)
            self.tick()
        returncode = self.process.wait()
        self.finish(returncode)

    def feed(self, raw):
        try:
            line = json.loads(raw)
        except ValueError:
            log.warning("%s: engine printed a line that is not JSON: %r", self.job.public_id, raw[:200])
            return
        if isinstance(line, dict):
            try:
                self.handle_line(line)
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
        if row is None or row["status"] == FineTuningJob.CANCELLED or row["control"] == "cancel" \
                or row["worker"] != self.worker_name:
            self.terminate()
        elif (row["control"] == "pause" or self.stopping.is_set()) and not self.pause_sent and self.started:
            # Only once the engine has said `started`: before that it has no trainer to save, and a
            # SIGUSR1 that early would be ignored (or, before its handler exists, kill it).
            self.signal(signal.SIGUSR1)
            self.pause_sent = True
        if now - self.last_status > 1.0 and job.step:
            self.last_status = now
            publish_status(job)

    def signal(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self):
        """SIGTERM to the engine's group; SIGKILL if it is still there after the grace period."""
        if self.terminated:
            return
        self.terminated = True
        self.signal(signal.SIGTERM)

        def kill_later():
            deadline = time.monotonic() + CANCEL_GRACE_S
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
            self.signal(signal.SIGKILL)

        threading.Thread(target=kill_later, daemon=True).start()

    # --- storing one line ---

    def handle_line(self, line):
        """Store one engine line (idempotently), then relay what was stored."""
        kind = line.get("type")
        handler = getattr(self, f"on_{kind}", None)
        if handler is None:
            return
        with transaction.atomic():
            out = handler(line) or []
        for message_kind, data in out:
            publish(self.job, message_kind, data)

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
        event, created = JobEvent.objects.get_or_create(job=job, dedupe_key="started",
                                                        defaults={"message": "Fine-tuning job started", "data": None})
        if created:
            out.append(("event", payloads.event_payload(event)))
        out.append(("status", payloads.status_payload(job)))
        return out

    def on_metrics(self, line):
        job = self.job
        step = int(line["step"])
        point = self._upsert_point("train", step, epoch=line.get("epoch") or 0, loss=line.get("train_loss"),
                                   accuracy=line.get("train_mean_token_accuracy"),
                                   learning_rate=line.get("learning_rate"),
                                   tokens_per_second=line.get("tokens_per_second"),
                                   reward_margin=line.get("train_reward_margin"),
                                   reward_accuracy=line.get("train_reward_accuracy"))
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
            "train_reward_accuracy": line.get("train_reward_accuracy")})
        return [("metric", payloads.metric_payload(point)), ("event", payloads.event_payload(event))]

    def on_eval(self, line):
        scope = line.get("scope")
        if scope not in ("sampled", "full"):
            return []
        step = int(line["step"])
        prefix = "valid" if scope == "sampled" else "full_valid"
        loss, accuracy = line.get(f"{prefix}_loss"), line.get(f"{prefix}_mean_token_accuracy")
        margin, wins = line.get(f"{prefix}_reward_margin"), line.get(f"{prefix}_reward_accuracy")
        point = self._upsert_point(scope, step, epoch=line.get("epoch") or 0, loss=loss, accuracy=accuracy,
                                   reward_margin=margin, reward_accuracy=wins)
        event = self._merge_metrics_event(step, {f"{prefix}_loss": loss, f"{prefix}_mean_token_accuracy": accuracy,
                                                 f"{prefix}_reward_margin": margin,
                                                 f"{prefix}_reward_accuracy": wins})
        return [("metric", payloads.metric_payload(point)), ("event", payloads.event_payload(event))]

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
        if checkpoint is None:
            checkpoint = Checkpoint(job=job, epoch=epoch, **values)
            if final:
                # The final epoch's snapshot carries the fine-tuned model's own name.
                checkpoint.model_tag = job.model_tag
            checkpoint.save()
        else:
            for name, value in values.items():
                setattr(checkpoint, name, value)
            checkpoint.save()
        checkpoint.job = job
        out = [("checkpoint", payloads.checkpoint_payload(checkpoint))]
        if not final:
            event, created = self._checkpoint_event(checkpoint)
            if created:
                out.append(("event", payloads.event_payload(event)))
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
        from training.engine import checkpoints

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
                publish_event(job, event)

    def on_message(self, line):
        text = str(line.get("text") or "")
        level = line.get("level") if line.get("level") in ("info", "warn", "error") else "info"
        # The same text at the same step is the same event, also when a resumed engine repeats it.
        digest = hashlib.sha1(f"{self.job.step}:{text}".encode()).hexdigest()[:20]
        event, created = JobEvent.objects.get_or_create(
            job=self.job, dedupe_key=f"msg-{digest}", defaults={"message": text, "level": level, "data": {}})
        return [("event", payloads.event_payload(event))] if created else []

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

    def finish(self, returncode):
        from training.jobs import fail_job

        job = self.job
        job.refresh_from_db()
        mine = job.worker == self.worker_name
        if job.status == FineTuningJob.CANCELLED:
            job.record_event(f"Training stopped at step {job.step}; the checkpoints written so far are kept.",
                             dedupe_key=f"stopped-{job.attempts}")
            FineTuningJob.objects.filter(pk=job.pk).update(engine_pid=None, control="")
            return
        if not mine or job.status != FineTuningJob.RUNNING:
            return  # another worker took it over (this one looked dead); leave it alone
        if self.paused_at is not None and returncode == 0 and self.done is None:
            self.finish_paused()
        elif self.done is not None and returncode == 0:
            self.finish_success()
        elif self.error is not None:
            fail_job(job, self.error[0], self.error[1], only_from=[FineTuningJob.RUNNING])
        else:
            tail = _log_tail(job.job_dir / "engine.log")
            fail_job(job, "engine_crashed",
                     f"The training process exited with status {returncode} without reporting an error."
                     + (f" Last lines of its log: {tail}" if tail else ""), only_from=[FineTuningJob.RUNNING])

    def finish_paused(self):
        job = self.job
        # A full disk waits for somebody to free space: queued again, it would only fill it again.
        requeue = self.stopping.is_set() and job.control != "pause" and self.disk_full is None
        status = FineTuningJob.QUEUED if requeue else FineTuningJob.PAUSED
        with transaction.atomic():  # with the status, so whoever sees it also sees why
            if not FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.RUNNING).update(
                    status=status, control="", worker="", engine_pid=None, estimated_finish=None):
                return
            job.refresh_from_db()
            if self.disk_full is not None:
                job.record_event(self.disk_full, level="error", dedupe_key=f"disk-full-{job.attempts}")
            elif requeue:
                job.record_event(f"The worker {self.worker_name} stopped; the job saved its state at step "
                                 f"{self.paused_at} and is queued again.", dedupe_key=f"requeued-{job.attempts}")
            else:
                job.record_event(f"The job was paused at step {self.paused_at}; resume continues from there.",
                                 dedupe_key=f"paused-{job.attempts}")
        publish_status(job)

    def finish_success(self):
        job = self.job
        name = job.model_name()
        results = write_results_file(job)
        with transaction.atomic():
            final = job.checkpoints.order_by("-epoch").first()
            if final is not None and not (final.is_final and final.model_tag == job.model_tag):
                job.checkpoints.exclude(pk=final.pk).update(is_final=False)
                final.is_final, final.model_tag = True, job.model_tag
                final.save(update_fields=["is_final", "model_tag"])
            updated = FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.RUNNING).update(
                status=FineTuningJob.SUCCEEDED, fine_tuned_model=name, finished_at=timezone.now(),
                trained_tokens=self.done.get("trained_tokens"), result_files=[results.public_id],
                step=job.total_steps or job.step, estimated_finish=None, control="", engine_pid=None)
            if updated:  # with the status, so whoever sees `succeeded` also sees the closing events
                job.record_event(f"New fine-tuned model created: {name}", dedupe_key="model-created")
                job.record_event("The job has successfully completed", dedupe_key="succeeded")
        job.refresh_from_db()
        if not updated:
            return
        if final is not None:
            final.job = job
            publish(job, "checkpoint", payloads.checkpoint_payload(final))
        job._announce_end("fine_tuning.job.succeeded")


def _log_tail(path, n=5):
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:])


def results_csv(job):
    """The contract's results CSV: one row per training step; validation columns blank where none ran."""
    valid = {}
    for scope in ("full", "sampled"):  # a sampled figure wins over a full one at the same step
        for step, loss, accuracy in job.metric_points.filter(scope=scope).values_list("step", "loss", "accuracy"):
            valid[step] = (loss, accuracy)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULTS_COLUMNS)
    rows = job.metric_points.filter(scope="train").order_by("step").values_list("step", "loss", "accuracy")
    for step, loss, accuracy in rows:
        v_loss, v_accuracy = valid.get(step, (None, None))
        writer.writerow(safe_row([step, _fmt(loss), _fmt(accuracy), _fmt(v_loss), _fmt(v_accuracy)]))
    return out.getvalue()


def write_results_file(job):
    """Store the results CSV as a plain file of purpose `fine-tune-results` (once per job).

    On disk it is the plain CSV; `GET /v1/files/{id}/content` returns it base64-encoded, as OpenAI does.
    """
    existing = DataFile.objects.filter(public_id__in=job.result_files or []).first()
    if existing is not None:
        return existing
    body = results_csv(job).encode()
    data_file = DataFile(filename=RESULTS_FILENAME, owner=job.created_by, purpose="fine-tune-results",
                         status="processed", bytes=len(body))
    relative = Path(data_file.public_id) / RESULTS_FILENAME
    (settings.FILES_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
    (settings.FILES_DIR / relative).write_bytes(body)
    data_file.path = str(relative)
    data_file.save()
    return data_file


# --- the loop -----------------------------------------------------------------------------------

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_engine_group(pgid):
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"training.engine" in cmdline or b"torch.distributed.run" in cmdline


def _worker_process(name):
    """(host, pid) of a worker name `host:pid:boot:label` (or the older `host:pid:label`); pid None if unknown."""
    host, _, rest = name.partition(":")
    pid = rest.split(":", 1)[0]
    return host, int(pid) if pid.isdigit() else None


# The workers whose loop runs in this process: a job of this host and PID that none of them runs is a
# job of an earlier start of this process.
_running_here = set()


class Worker:
    def __init__(self, slots=1, name=None):
        self.slots = max(1, slots)
        # host:pid first, so a worker on the same host can tell that this one is gone; then a token of this
        # start, because a restarted container runs `serve` as PID 1 again under the same hostname.
        self.name = f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}:{name or 'w'}"
        self.runs = {}
        self.job_runs = {}
        self.stopping = threading.Event()
        self.last_recovery = None  # the first step recovers at once: jobs an earlier start left running

    def run(self, stop=None):
        """Claim and run jobs until `stop` is set; then pause the running jobs and queue them again."""
        stop = stop or threading.Event()
        log.info("worker %s: %s slot(s)", self.name, self.slots)
        _running_here.add(self)
        threading.Thread(target=self._deliver_webhooks, args=(stop,), name="attune-webhooks", daemon=True).start()
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the worker
                log.exception("worker loop")
            finally:
                close_old_connections()
            stop.wait(POLL_S)
        self.stopping.set()
        for thread in list(self.runs.values()):
            thread.join(timeout=120)
        _running_here.discard(self)
        connection.close()

    def step(self):
        self.runs = {pk: t for pk, t in self.runs.items() if t.is_alive()}
        if self.last_recovery is None or time.monotonic() - self.last_recovery > min(5.0, STALE_S / 2):
            self.last_recovery = time.monotonic()
            self.recover_stale()
        while len(self.runs) < self.slots:
            job = FineTuningJob.claim_next(self.name)
            if job is None:
                break
            thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{job.public_id}",
                                      daemon=True)
            self.runs[job.pk] = thread
            thread.start()

    def _run_job(self, job):
        try:
            log.info("worker %s: running %s (attempt %s)", self.name, job.public_id, job.attempts)
            self.job_runs[job.pk] = JobRun(job, self.name, self.stopping)
            self.job_runs[job.pk].run()
        except Exception:  # noqa: BLE001
            log.exception("job %s", job.public_id)
        finally:
            self.job_runs.pop(job.pk, None)
            connection.close()

    def _deliver_webhooks(self, stop):
        from training.webhooks import deliver_due

        while not stop.is_set():
            try:
                deliver_due()
            except Exception:  # noqa: BLE001
                log.exception("webhook delivery")
            finally:
                close_old_connections()
            stop.wait(1.0)
        connection.close()

    def recover_stale(self):
        """Queue again the running jobs whose worker is gone; they resume from their last checkpoint.

        Gone: a heartbeat older than STALE_S; at once, a worker process on this host that no longer exists,
        or a worker of this process (same host and PID, an earlier start) whose job no thread here runs.
        """
        cutoff = timezone.now() - timedelta(seconds=STALE_S)
        candidates = FineTuningJob.objects.filter(status=FineTuningJob.RUNNING)
        for job in candidates.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True) |
                                     Q(worker__startswith=f"{HOST}:")):
            if any(worker.runs_here(job) for worker in {self, *_running_here}):
                continue  # a thread of this process runs it
            host, pid = _worker_process(job.worker)
            gone = host == HOST and pid is not None and (pid == os.getpid() or not _pid_alive(pid))
            stale = job.heartbeat_at is None or job.heartbeat_at < cutoff
            if stale or gone:
                self.requeue(job)

    def runs_here(self, job):
        thread = self.runs.get(job.pk)
        return job.worker == self.name and thread is not None and thread.is_alive()

    def requeue(self, job):
        from training.engine import checkpoints

        old_worker = job.worker
        ours = {run.process.pid for run in list(self.job_runs.values()) if run.process is not None}
        if job.engine_pid and job.engine_pid not in ours and _worker_process(old_worker)[0] == HOST \
                and _is_engine_group(job.engine_pid):
            try:
                os.killpg(job.engine_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        status = FineTuningJob.PAUSED if job.control == "pause" else FineTuningJob.QUEUED
        if not FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.RUNNING, worker=old_worker).update(
                status=status, worker="", control="", engine_pid=None, estimated_finish=None):
            return
        job.refresh_from_db()
        try:
            JobRun(job, self.name).recover_checkpoints()
        except Exception:  # noqa: BLE001 - the next run of the job tries again
            log.exception("%s: could not recover its checkpoints", job.public_id)
        latest = checkpoints.latest_resumable(job.job_dir)
        if latest is not None:
            state = checkpoints.read_state(latest)
            where = f"resumes from its last complete checkpoint ({latest.name}, step {state['step']})"
        else:
            where = "starts again from the beginning (no complete checkpoint yet)"
        what = "is paused" if status == FineTuningJob.PAUSED else "is queued again"
        job.record_event(f"The worker {old_worker or '(unknown)'} stopped responding at step {job.step}; the job "
                         f"{what} and {where}.", level="warn", dedupe_key=f"recovered-{job.attempts}")
        publish_status(job)
        log.warning("re-queued %s from dead worker %s", job.public_id, old_worker)


_inprocess = {}


def start_inprocess_worker(slots=1):
    """Run the worker loop in a daemon thread of this process (`manage.py serve`, the embedded default)."""
    if "thread" in _inprocess:
        return _inprocess["worker"]
    worker = Worker(slots=slots)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="attune-worker", daemon=True)
    _inprocess.update(worker=worker, stop=stop, thread=thread)
    thread.start()
    return worker


def stop_inprocess_worker():
    """Stop the in-process worker as `trainworker` stops on SIGTERM: each running job saves its state at
    the end of its current step and goes back to the queue; the next start resumes it from there."""
    if "thread" not in _inprocess:
        return
    _inprocess["stop"].set()
    _inprocess["thread"].join()

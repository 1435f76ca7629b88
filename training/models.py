"""Data files, base models, fine-tuning jobs and what a job produces.

A job's spec is stored as JSON exactly as it was requested (`auto` kept as
`auto`, so a re-run asks again) and read through one typed object,
`training.engine.spec.JobSpec`. The resolved spec (every `auto` replaced by
a number) is stored next to it when the job starts.
"""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from training import ids


def unix(dt):
    return int(dt.timestamp()) if dt else None


class DataFile(models.Model):
    PURPOSES = [("fine-tune", "fine-tune"), ("fine-tune-results", "fine-tune-results")]
    STATUSES = [("uploaded", "uploaded"), ("processed", "processed"), ("error", "error")]
    FORMATS = [("", "unknown"), ("chat", "chat"), ("preference", "preference")]

    public_id = models.CharField(max_length=40, unique=True, default=ids.new_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="data_files")
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=32, choices=PURPOSES, default="fine-tune")
    path = models.CharField(max_length=500, help_text="Relative to the files folder of ATTUNE_HOME.")
    bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=STATUSES, default="uploaded")
    status_details = models.TextField(blank=True, default="")
    format = models.CharField(max_length=16, choices=FORMATS, blank=True, default="")
    n_examples = models.IntegerField(default=0)
    n_blank_lines = models.IntegerField(default=0)
    n_errors = models.IntegerField(default=0)
    # At most the first few hundred errors are kept; n_errors counts them all.
    errors = models.JSONField(default=list, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.public_id} ({self.filename})"

    @property
    def full_path(self) -> Path:
        return settings.FILES_DIR / self.path

    @property
    def usable(self):
        """A file may start a job only when every line passed validation."""
        return self.purpose == "fine-tune" and self.status == "processed" and self.n_errors == 0

    def jobs_using(self):
        return FineTuningJob.objects.filter(models.Q(training_file=self) | models.Q(validation_file=self))


class BaseModel(models.Model):
    name = models.CharField(max_length=200, unique=True,
                            help_text="The name used in job specs and the API, e.g. attune-tiny.")
    source = models.CharField(max_length=500,
                              help_text="A Hugging Face model id or a local folder (relative to ATTUNE_HOME/models).")
    has_chat_template = models.BooleanField(default=False)
    max_length = models.IntegerField(default=2048, help_text="Longest sequence the model takes, in tokens.")
    architecture = models.CharField(max_length=100, blank=True, default="")
    trust_remote_code = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def default(cls):
        """The base model forms start from: ATTUNE_DEFAULT_BASE_MODEL when registered, else the first."""
        return cls.objects.filter(name=settings.ATTUNE_DEFAULT_BASE_MODEL).first() or cls.objects.first()

    @property
    def local_path(self) -> Path | None:
        """The folder the weights are in, when they are on this disk."""
        candidate = Path(self.source)
        if not candidate.is_absolute():
            candidate = settings.MODELS_DIR / self.source
        return candidate if candidate.exists() else None

    @property
    def load_path(self) -> str:
        """What `from_pretrained` receives: the local folder, else the hub id."""
        local = self.local_path
        return str(local) if local else self.source


class FineTuningJob(models.Model):
    VALIDATING = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUSES = [(s, s) for s in (VALIDATING, QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)]
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)

    public_id = models.CharField(max_length=40, unique=True, default=ids.new_job_id, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="fine_tuning_jobs")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    training_file = models.ForeignKey(DataFile, on_delete=models.PROTECT, related_name="training_jobs")
    validation_file = models.ForeignKey(DataFile, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="validation_jobs")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")

    # The spec as requested (auto kept) and as resolved at start.
    spec = models.JSONField(default=dict)
    resolved_spec = models.JSONField(null=True, blank=True)
    suffix = models.CharField(max_length=64, blank=True, default="")
    seed = models.BigIntegerField(default=0)
    metadata = models.JSONField(null=True, blank=True)

    status = models.CharField(max_length=20, choices=STATUSES, default=VALIDATING, db_index=True)
    error = models.JSONField(default=dict, blank=True)
    # What the worker should do to the running engine: "", "cancel" or "pause".
    control = models.CharField(max_length=10, blank=True, default="")

    model_tag = models.CharField(max_length=8, default=ids.new_model_tag, editable=False)
    fine_tuned_model = models.CharField(max_length=300, null=True, blank=True)
    trained_tokens = models.BigIntegerField(null=True, blank=True)
    result_files = models.JSONField(default=list, blank=True)

    # Progress, updated by the worker from the engine's lines.
    step = models.IntegerField(default=0)
    total_steps = models.IntegerField(default=0)
    epoch = models.FloatField(default=0)
    tokens_per_second = models.FloatField(null=True, blank=True)

    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    estimated_finish = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self):
        return self.public_id

    @property
    def is_finished(self):
        return self.status in self.FINISHED

    @property
    def typed_spec(self):
        """The spec as requested, read through the one typed definition."""
        from training.engine.spec import JobSpec

        return JobSpec.model_validate(self.spec)

    @property
    def job_dir(self) -> Path:
        return settings.JOBS_DIR / self.public_id

    def model_name(self, tag=None):
        """`ft:<base>:<suffix>:<id>`; a checkpoint passes its own tag."""
        return f"ft:{self.base_model.name}:{self.suffix}:{tag or self.model_tag}"

    @property
    def progress(self):
        if self.status == self.SUCCEEDED:
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    # --- lifecycle: the queue, cancel / pause / resume, re-run -----------------
    # The worker records the engine's process group here, so a worker restarted on
    # the same host can stop an orphaned engine before the job is resumed.
    engine_pid = models.IntegerField(null=True, blank=True)

    ACTIVE = (VALIDATING, QUEUED, RUNNING, PAUSED)

    @property
    def hyperparameters(self):
        """The hyperparameters as resolved (numbers), or as requested while still `auto`."""
        source = self.resolved_spec or self.spec
        keys = ["n_epochs", "batch_size", "learning_rate_multiplier"]
        if source.get("method") == "dpo":
            keys.append("beta")
        return {k: source.get(k, "auto") for k in keys}

    @classmethod
    def claim_next(cls, worker):
        """Take the oldest queued job for `worker`, or None. No job is ever claimed twice.

        PostgreSQL: one transaction with SELECT … FOR UPDATE SKIP LOCKED, so
        concurrent workers each lock a different row. SQLite cannot skip locks:
        a conditional UPDATE … WHERE status='queued' instead, and a row count of
        0 means somebody else got there first, so try the next one.
        """
        from django.db import connection, transaction
        from django.db.models import F, Value
        from django.db.models.functions import Coalesce

        now = timezone.now()
        changes = {"status": cls.RUNNING, "worker": worker, "heartbeat_at": now, "control": "",
                   "attempts": F("attempts") + 1, "started_at": Coalesce(F("started_at"), Value(now))}
        queued = cls.objects.filter(status=cls.QUEUED).order_by("created_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic():
                job = queued.select_for_update(skip_locked=True).only("id").first()
                if job is None:
                    return None
                cls.objects.filter(pk=job.pk).update(**changes)
        else:
            while True:
                job = queued.only("id").first()
                if job is None:
                    return None
                if cls.objects.filter(pk=job.pk, status=cls.QUEUED).update(**changes):
                    break
        return cls.objects.get(pk=job.pk)

    def record_event(self, message, level="info", type="message", data=None, dedupe_key=None):
        """Store an event (once per dedupe_key) and relay it to the job's watchers."""
        event = JobEvent(job=self, message=message, level=level, type=type, data=data, dedupe_key=dedupe_key)
        if dedupe_key:
            event, _created = JobEvent.objects.get_or_create(
                job=self, dedupe_key=dedupe_key,
                defaults={"message": message, "level": level, "type": type, "data": data})
        else:
            event.save()
        from training.worker import publish_event

        publish_event(self, event)
        return event

    def _refuse(self, action, allowed):
        from training.jobs import JobError

        raise JobError("fine_tuning_job_id",
                       f"Job {self.public_id} is {self.status}; only a job that is {allowed} can be {action}.",
                       "invalid_job_state")

    def cancel(self, by=None):
        """Stop the job now. A running engine gets SIGTERM from its worker; checkpoints are kept."""
        self.refresh_from_db()
        if self.status not in self.ACTIVE:
            self._refuse("cancelled", "validating, queued, running or paused")
        was_running = self.status == self.RUNNING
        now = timezone.now()
        updated = FineTuningJob.objects.filter(pk=self.pk, status=self.status).update(
            status=self.CANCELLED, control="cancel" if was_running else "", finished_at=now,
            estimated_finish=None)
        self.refresh_from_db()
        if not updated:  # the worker changed it meanwhile (finished, failed…): say what it is now
            return self.cancel(by)
        who = f" by {by.get_username()}" if by is not None else ""
        self.record_event(f"The job was cancelled{who}.", level="warn")
        self._announce_end("fine_tuning.job.cancelled")
        return self

    def pause(self, by=None):
        """A running job saves its state and stops (status becomes `paused` once saved); a queued job
        simply leaves the queue."""
        self.refresh_from_db()
        if self.status == self.QUEUED:
            if FineTuningJob.objects.filter(pk=self.pk, status=self.QUEUED).update(status=self.PAUSED):
                self.refresh_from_db()
                self.record_event("The job was paused before it started; resume puts it back in the queue.")
                self.publish_status()
                return self
            self.refresh_from_db()
        if self.status != self.RUNNING or self.control:
            self._refuse("paused", "queued, or running with no cancel or pause already requested")
        if not FineTuningJob.objects.filter(pk=self.pk, status=self.RUNNING, control="").update(control="pause"):
            self.refresh_from_db()
            self._refuse("paused", "queued, or running with no cancel or pause already requested")
        self.refresh_from_db()
        self.record_event("Pause requested: the job saves a checkpoint at the end of the current step and stops.")
        return self

    def resume(self, by=None):
        """Put a paused job back in the queue; its engine continues from the saved state."""
        self.refresh_from_db()
        if self.status != self.PAUSED or not FineTuningJob.objects.filter(
                pk=self.pk, status=self.PAUSED).update(status=self.QUEUED, control="", worker="",
                                                        engine_pid=None):
            self._refuse("resumed", "paused")
        self.refresh_from_db()
        self.record_event(f"The job was resumed at step {self.step} and is queued again.")
        self.publish_status()
        return self

    def rerun(self, by, spec=None):
        """A new job from this job's spec (as requested, `auto` kept), or an edited copy of it."""
        from training.jobs import create_job

        return create_job(self.spec if spec is None else spec, by, parent=self, metadata=self.metadata)

    def publish_status(self):
        from training.worker import publish_status

        publish_status(self)

    def _announce_end(self, event_type):
        from training.webhooks import enqueue

        self.publish_status()
        enqueue(self, event_type)


class Checkpoint(models.Model):
    """One servable snapshot, written at the end of an epoch."""

    public_id = models.CharField(max_length=40, unique=True, default=ids.new_checkpoint_id, editable=False)
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    epoch = models.IntegerField()
    step = models.IntegerField()
    path = models.CharField(max_length=500, help_text="Relative to ATTUNE_HOME.")
    bytes = models.BigIntegerField(default=0)
    metrics = models.JSONField(default=dict)
    model_tag = models.CharField(max_length=8, default=ids.new_model_tag, editable=False)
    is_final = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-step"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="one_checkpoint_per_epoch")]

    def __str__(self):
        return self.model_name

    @property
    def model_name(self):
        """The final epoch's checkpoint carries the fine-tuned model's own name."""
        if self.is_final and self.job.fine_tuned_model:
            return self.job.fine_tuned_model
        return f"{self.job.model_name(self.model_tag)}:ckpt-step-{self.step}"

    @property
    def full_path(self) -> Path:
        return settings.ATTUNE_HOME / self.path


class MetricPoint(models.Model):
    """One point of a training curve. `scope`: train (every logging step),
    sampled (a fixed validation batch every K steps) or full (the whole
    validation file at an epoch end)."""

    SCOPES = [("train", "train"), ("sampled", "sampled"), ("full", "full")]

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="metric_points")
    scope = models.CharField(max_length=8, choices=SCOPES)
    step = models.IntegerField()
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    accuracy = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    # DPO only: the mean margin of the implicit rewards (chosen − rejected), and how often chosen wins.
    reward_margin = models.FloatField(null=True, blank=True)
    reward_accuracy = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["step"]
        constraints = [models.UniqueConstraint(fields=["job", "scope", "step"], name="one_point_per_step")]


class JobEvent(models.Model):
    LEVELS = [("info", "info"), ("warn", "warn"), ("error", "error")]
    TYPES = [("message", "message"), ("metrics", "metrics")]

    public_id = models.CharField(max_length=40, unique=True, default=ids.new_event_id, editable=False)
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, choices=LEVELS, default="info")
    message = models.TextField()
    type = models.CharField(max_length=10, choices=TYPES, default="message")
    data = models.JSONField(null=True, blank=True)
    # A replayed engine line carries the same key, so it never makes a second event.
    dedupe_key = models.CharField(max_length=100, null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["job", "dedupe_key"], name="one_event_per_key")]

    def __str__(self):
        return f"{self.public_id}: {self.message}"


class WebhookEndpoint(models.Model):
    """Where Attune posts `fine_tuning.job.*` events, signed per Standard Webhooks."""

    EVENT_TYPES = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True, default="")
    event_types = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="webhook_endpoints")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint, retried with backoff until a 2xx answer or the last attempt."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    STATUSES = [(s, s) for s in (PENDING, DELIVERED, FAILED)]

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=64)
    job = models.ForeignKey(FineTuningJob, null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="webhook_deliveries")
    body = models.TextField(help_text="The exact JSON body that is signed and sent.")
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING, db_index=True)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Each attempt: {"at": unix seconds, "status_code": int | None, "error": str}.
    responses = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def last_status_code(self):
        return self.responses[-1].get("status_code") if self.responses else None

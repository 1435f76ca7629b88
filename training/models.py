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

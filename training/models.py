"""Data files, base models, fine-tuning jobs and what a job produces.

A job's spec is stored as JSON exactly as it was requested (`auto` kept as
`auto`, so a re-run asks again) and read through one typed object,
`training.engine.spec.JobSpec` (`job.spec_values`). The resolved spec (every
`auto` replaced by a number) is stored next to it when the job starts.

A job's transitions are its own methods: `claim_next`, `cancel`, `pause`,
`resume`, `fail`, `succeed`. Each stores the new status and the events that
say why in one transaction, then relays both to the job's watchers
(`training.live`); a job that ends sends `job_ended`, which the webhooks
connect to (training/apps.py).
"""

import csv
import io
import math
from pathlib import Path

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.dispatch import Signal
from django.utils import timezone

from config.spreadsheet import safe_row
from training import ids, live
from training.engine.spec import SpecValues

# Sent with `job` once a job has ended (succeeded, failed or cancelled) and its closing events are stored.
job_ended = Signal()
# Sent with `checkpoint` and `created` once a checkpoint's row is stored (the evals app scores it).
checkpoint_stored = Signal()

RESULTS_FILENAME = "step_metrics.csv"
RESULTS_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
# A reinforcement job's results CSV: its rewards in place of token accuracy (the valid_* cells, as above, from the
# sampled evaluation at that step, else from the full one).
RFT_RESULTS_COLUMNS = ["step", "train_loss", "train_mean_reward", "train_reward_std", "frac_reward_zero_std",
                       "completion_tokens_mean", "train_parse_error_rate", "train_grader_error_rate",
                       "valid_reward_mean", "valid_parse_error_rate", "valid_grader_error_rate"]
# What marks the best checkpoint lowest-is-best; every other metric (rewards, eval scores) is highest-is-best.
LOWEST_IS_BEST = ("full_valid_loss",)


def is_higher_better(metric):
    """Whether a higher value of `metric` is better: the loss is lowest-is-best, rewards and eval scores are not."""
    return metric not in LOWEST_IS_BEST


def best_metric_of(values):
    """(metric name, higher is better) that marks the best checkpoint of a spec (`SpecValues`): its
    best_checkpoint_metric, with auto → eval_mean_score when it names an eval, else full_valid_mean_reward for a
    reinforcement job and full_valid_loss for the others (the rule of JobSpec's resolve_auto)."""
    metric = values.best_checkpoint_metric or "auto"
    if metric == "auto":
        metric = ("eval_mean_score" if values.eval else
                  "full_valid_mean_reward" if values.method == "reinforcement" else "full_valid_loss")
    return metric, is_higher_better(metric)


class JobError(Exception):
    """A request that cannot become (or change) a job. `param` names the field, as the API's `param`."""

    def __init__(self, param, message, code="invalid_request", errors=None):
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
        # Every (field, message) found, for forms that show each error next to its field.
        self.errors = errors or [(param, message)]

    def as_dict(self):
        return {"param": self.param, "message": self.message, "code": self.code}


class DataFile(models.Model):
    PURPOSES = [("fine-tune", "fine-tune"), ("fine-tune-results", "fine-tune-results"), ("evals", "evals")]
    STATUSES = [("uploaded", "uploaded"), ("processed", "processed"), ("error", "error")]
    FORMATS = [("", "unknown"), ("chat", "chat"), ("preference", "preference"), ("reinforcement", "reinforcement"),
               ("items", "items")]

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
    # Where a file the studio built comes from: {"rating_task": <task id>, "margin", "n_ratings"} for the
    # preference file of a rating task's ratings. Empty for an upload.
    origin = models.JSONField(default=dict, blank=True)
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
    # The sweep that created the job, if one did (training/sweeps.py).
    sweep = models.ForeignKey("Sweep", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    # A job whose `model` is a fine-tuned model (`ft:…`) starts from that snapshot's weights.
    init_checkpoint = models.ForeignKey("Checkpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="continued_by")

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
    # Where a cluster launcher runs the engine, so that any worker can follow it: {"launcher": "slurm",
    # "slurm_job_id", "output" (the engine's stdout file), "offset" (the bytes of it stored so far)}.
    launcher_state = models.JSONField(default=dict, blank=True)
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
    def spec_values(self):
        """The spec as requested and as resolved, read through JobSpec (see SpecValues)."""
        return SpecValues(self.spec, self.resolved_spec)

    @property
    def job_dir(self) -> Path:
        return settings.JOBS_DIR / self.public_id

    def starting_chain(self, limit=20):
        """The snapshots this job's weights come from, oldest first: [] for a job on a base model, else the
        checkpoint each job in the chain started from (at most `limit`)."""
        chain, checkpoint = [], self.init_checkpoint
        while checkpoint is not None and len(chain) < limit:
            chain.append(checkpoint)
            checkpoint = checkpoint.job.init_checkpoint
        return chain[::-1]

    def model_name(self, tag=None):
        """`ft:<base>:<suffix>:<id>`; a checkpoint passes its own tag."""
        return f"ft:{self.base_model.name}:{self.suffix}:{tag or self.model_tag}"

    # --- the best checkpoint --------------------------------------------------------

    @property
    def best_metric(self):
        """(metric name, higher is better) that marks the best checkpoint (see `best_metric_of`)."""
        return best_metric_of(self.spec_values)

    def best_checkpoint(self, checkpoints=None, metric=None):
        """The checkpoint with the best value of `metric` (default: `best_metric`; the earlier one on a tie), or
        None while no checkpoint has a value for it."""
        metric, higher = (metric, is_higher_better(metric)) if metric else self.best_metric
        best, best_value = None, None
        for checkpoint in sorted(checkpoints if checkpoints is not None else self.checkpoints.all(),
                                 key=lambda c: c.step):
            value = checkpoint.metric_value(metric)
            if value is None:
                continue
            if best is None or (value > best_value if higher else value < best_value):
                best, best_value = checkpoint, value
        return best

    @property
    def progress(self):
        if self.status == self.SUCCEEDED:
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    # --- lifecycle: the queue, cancel / pause / resume, the end -----------------
    # The worker records the engine's process group here, so a worker restarted on
    # the same host can stop an orphaned engine before the job is resumed.
    engine_pid = models.IntegerField(null=True, blank=True)

    ACTIVE = (VALIDATING, QUEUED, RUNNING, PAUSED)

    @property
    def hyperparameters(self):
        """The hyperparameters of the job's method as resolved (numbers), or as requested while still `auto`."""
        return self.spec_values.hyperparameters()

    @classmethod
    def claim_next(cls, worker):
        """Take the oldest queued job for `worker`, or None. No job is ever claimed twice.

        PostgreSQL: one transaction with SELECT … FOR UPDATE SKIP LOCKED, so
        concurrent workers each lock a different row. SQLite cannot skip locks:
        a conditional UPDATE … WHERE status='queued' instead, and a row count of
        0 means somebody else got there first, so try the next one.
        """
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

    def store_event(self, message, level="info", type="message", data=None, dedupe_key=None):
        """Store an event (once per dedupe_key) without relaying it: for a transaction that relays after."""
        if dedupe_key:
            event, _created = JobEvent.objects.get_or_create(
                job=self, dedupe_key=dedupe_key,
                defaults={"message": message, "level": level, "type": type, "data": data})
            return event
        return JobEvent.objects.create(job=self, message=message, level=level, type=type, data=data)

    def record_event(self, message, level="info", type="message", data=None, dedupe_key=None):
        """Store an event (once per dedupe_key) and relay it to the job's watchers."""
        event = self.store_event(message, level=level, type=type, data=data, dedupe_key=dedupe_key)
        live.publish_event(self, event)
        return event

    def publish_status(self):
        live.publish_status(self)

    def change_status(self, status, *, only_from, events=(), **changes):
        """Set `status` (and `changes`) if the job is still in one of `only_from`, storing `events` (each a
        dict of record_event's arguments) in the same transaction, so whoever sees the status also sees why;
        then relay both. False, and nothing stored, when somebody else changed the job first."""
        with transaction.atomic():
            if not FineTuningJob.objects.filter(pk=self.pk, status__in=only_from).update(status=status, **changes):
                self.refresh_from_db()
                return False
            stored = [self.store_event(**event) for event in events]
        self.refresh_from_db()
        self._relay(stored)
        return True

    def _relay(self, events):
        for event in events:
            live.publish_event(self, event)
        live.publish_status(self)

    def _refuse(self, action, allowed):
        raise JobError("fine_tuning_job_id",
                       f"Job {self.public_id} is {self.status}; only a job that is {allowed} can be {action}.",
                       "invalid_job_state")

    def cancel(self, by=None):
        """Stop the job now. A running engine gets SIGTERM from its worker; checkpoints are kept."""
        self.refresh_from_db()
        if self.status not in self.ACTIVE:
            self._refuse("cancelled", "validating, queued, running or paused")
        who = f" by {by.get_username()}" if by is not None else ""
        if not self.change_status(
                self.CANCELLED, only_from=[self.status], control="cancel" if self.status == self.RUNNING else "",
                finished_at=timezone.now(), estimated_finish=None,
                events=[{"message": f"The job was cancelled{who}.", "level": "warn"}]):
            return self.cancel(by)  # the worker changed it meanwhile (finished, failed…): say what it is now
        job_ended.send(sender=FineTuningJob, job=self)
        return self

    def fail(self, code, message, param=None, only_from=ACTIVE):
        """End the job with OpenAI's `error` object; False when it had already left `only_from`."""
        # OpenAI leaves finished_at null on a job that failed before training (seen in real responses).
        finished_at = timezone.now() if self.started_at else None
        if not self.change_status(self.FAILED, only_from=only_from,
                                  error={"code": code, "message": message, "param": param},
                                  finished_at=finished_at, control="", estimated_finish=None,
                                  events=[{"message": message, "level": "error"}]):
            return False
        job_ended.send(sender=FineTuningJob, job=self)
        return True

    def succeed(self, trained_tokens=None):
        """End a running job whose engine is done: the fine-tuned model's name (carried by the final epoch's
        checkpoint), the results file, the closing events. False when the job is no longer running."""
        name = self.model_name()
        results = self.store_results_file()
        with transaction.atomic():
            if not FineTuningJob.objects.filter(pk=self.pk, status=self.RUNNING).update(
                    status=self.SUCCEEDED, fine_tuned_model=name, finished_at=timezone.now(),
                    trained_tokens=trained_tokens, result_files=[results.public_id],
                    step=self.total_steps or self.step, estimated_finish=None, control="", engine_pid=None):
                self.refresh_from_db()
                return False
            final = self.checkpoints.order_by("-epoch").first()
            if final is not None and not (final.is_final and final.model_tag == self.model_tag):
                self.checkpoints.exclude(pk=final.pk).update(is_final=False)
                final.is_final, final.model_tag = True, self.model_tag
                final.save(update_fields=["is_final", "model_tag"])
            events = [self.store_event(f"New fine-tuned model created: {name}", dedupe_key="model-created"),
                      self.store_event("The job has successfully completed", dedupe_key="succeeded")]
        self.refresh_from_db()
        if final is not None:
            final.job = self
            live.publish_checkpoint(self, final)
        self._relay(events)
        job_ended.send(sender=FineTuningJob, job=self)
        return True

    def pause(self, by=None):
        """A running job saves its state and stops (status becomes `paused` once saved); a queued job
        simply leaves the queue."""
        self.refresh_from_db()
        if self.status == self.QUEUED and self.change_status(self.PAUSED, only_from=[self.QUEUED], events=[
                {"message": "The job was paused before it started; resume puts it back in the queue."}]):
            return self
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
        if self.status != self.PAUSED or not self.change_status(
                self.QUEUED, only_from=[self.PAUSED], control="", worker="", engine_pid=None,
                events=[{"message": f"The job was resumed at step {self.step} and is queued again."}]):
            self._refuse("resumed", "paused")
        return self

    # --- what a finished job leaves ---------------------------------------------

    def results_csv(self):
        """OpenAI's results CSV: one row per training step; validation columns blank where none ran."""
        if self.spec_values.method == "reinforcement":
            return self._rft_results_csv()
        valid = {}
        for scope in ("full", "sampled"):  # a sampled figure wins over a full one at the same step
            points = self.metric_points.filter(scope=scope).values_list("step", "loss", "accuracy")
            for step, loss, accuracy in points:
                valid[step] = (loss, accuracy)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULTS_COLUMNS)
        rows = self.metric_points.filter(scope="train").order_by("step").values_list("step", "loss", "accuracy")
        for step, loss, accuracy in rows:
            v_loss, v_accuracy = valid.get(step, (None, None))
            writer.writerow(safe_row([step, _figure(loss), _figure(accuracy), _figure(v_loss), _figure(v_accuracy)]))
        return out.getvalue()

    def _rft_results_csv(self):
        """The results CSV of a reinforcement job: RFT_RESULTS_COLUMNS."""
        valid = {}
        for scope in ("full", "sampled"):  # a sampled figure wins over a full one at the same step
            for step, *figures in self.metric_points.filter(scope=scope).values_list(
                    "step", "reward", "parse_error_rate", "grader_error_rate"):
                valid[step] = figures
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RFT_RESULTS_COLUMNS)
        rows = self.metric_points.filter(scope="train").order_by("step").values_list(
            "step", "loss", "reward", "reward_std", "frac_reward_zero_std", "completion_tokens_mean",
            "parse_error_rate", "grader_error_rate")
        for step, *figures in rows:
            figures += valid.get(step, [None, None, None])
            writer.writerow(safe_row([step, *map(_figure, figures)]))
        return out.getvalue()

    def store_results_file(self):
        """The results CSV as a plain file of purpose `fine-tune-results` (stored once per job).

        On disk it is the plain CSV; `GET /v1/files/{id}/content` returns it base64-encoded, as OpenAI does.
        """
        existing = DataFile.objects.filter(public_id__in=self.result_files or []).first()
        if existing is not None:
            return existing
        body = self.results_csv().encode()
        data_file = DataFile(filename=RESULTS_FILENAME, owner=self.created_by, purpose="fine-tune-results",
                             status="processed", bytes=len(body))
        relative = Path(data_file.public_id) / RESULTS_FILENAME
        (settings.FILES_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
        (settings.FILES_DIR / relative).write_bytes(body)
        data_file.path = str(relative)
        data_file.save()
        return data_file


class Sweep(models.Model):
    """Jobs made from one spec with some values swept (training/sweeps.py), ranked by one metric.

    `spec` is the base spec as requested (with the one seed its jobs share when the request named none);
    `definition` is {mode: grid | random, fields, n, seed}: for a grid, each field's list of values; for a
    random sweep, each field's {min, max}, the number of draws and the seed they were drawn with.
    """

    public_id = models.CharField(max_length=40, unique=True, default=ids.new_sweep_id, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="sweeps")
    spec = models.JSONField(default=dict)
    definition = models.JSONField(default=dict)
    # What ranks the jobs: a checkpoint metric as `Checkpoint.metric_value` reads it (full_valid_loss,
    # eval_mean_score, eval:<criterion>, …), the best checkpoint of each job.
    metric = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.public_id

    @property
    def fields(self):
        """The swept fields, in the order they were given."""
        return list(self.definition.get("fields") or {})

    def cancel(self, by=None):
        """Cancel every job of the sweep that has not ended, each through its own `cancel`; the jobs cancelled.
        A job that ends meanwhile (its worker got there first) is left as it is."""
        cancelled = []
        for job in self.jobs.filter(status__in=FineTuningJob.ACTIVE).order_by("created_at", "id"):
            try:
                cancelled.append(job.cancel(by=by))
            except JobError:
                continue
        return cancelled


def _figure(value):
    return "" if value is None else f"{value:.6g}"


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

    @property
    def is_adapter(self):
        """A LoRA adapter folder (served on its job's base model), not full weights."""
        return (self.full_path / "adapter_config.json").exists()

    @classmethod
    def for_model_name(cls, name):
        """The checkpoint a fine-tuned model's name stands for, or None. `ft:<base>:<suffix>:<tag>:ckpt-step-N`
        names an epoch checkpoint (the final one answers to the job's name as well); `ft:<base>:<suffix>:<tag>`
        names a job's final checkpoint, or its latest while it has no final one."""
        name = (name or "").strip()
        parts = name.split(":")
        if not name.startswith("ft:"):
            return None
        if parts[-1].startswith("ckpt-step-") and len(parts) >= 5:
            for checkpoint in cls.objects.filter(model_tag=parts[-2]).select_related("job__base_model"):
                own = f"{checkpoint.job.model_name(checkpoint.model_tag)}:ckpt-step-{checkpoint.step}"
                if name in (own, checkpoint.model_name):
                    return checkpoint
            return None
        job = FineTuningJob.objects.filter(fine_tuned_model=name).select_related("base_model").first()
        if job is None:
            job = FineTuningJob.objects.filter(model_tag=parts[-1]).select_related("base_model").first()
            if job is None or job.model_name() != name:
                return None
        checkpoints = job.checkpoints.select_related("job__base_model")
        return checkpoints.filter(is_final=True).first() or checkpoints.order_by("-step").first()

    def metric_value(self, metric):
        """A number from the checkpoint's metrics: `eval:<name>` reads one testing criterion's mean score
        (`eval_scores`), anything else the metric of that name; None when it has none."""
        if metric.startswith("eval:"):
            value = (self.metrics.get("eval_scores") or {}).get(metric[len("eval:"):])
        else:
            value = self.metrics.get(metric)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
    # Reinforcement only (REWARD_FIGURES names the engine's figure behind each, per scope): the mean reward, its
    # standard deviation over the step's completions, the share of prompts whose completions all got the same
    # reward, the mean completion length in tokens, the shares of samples with a parse error and with another
    # grader error (0–1), and each grader's mean score by name.
    reward = models.FloatField(null=True, blank=True)
    reward_std = models.FloatField(null=True, blank=True)
    frac_reward_zero_std = models.FloatField(null=True, blank=True)
    completion_tokens_mean = models.FloatField(null=True, blank=True)
    parse_error_rate = models.FloatField(null=True, blank=True)
    grader_error_rate = models.FloatField(null=True, blank=True)
    grader_scores = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # scope → {column: the figure of the engine's line that fills it} (training/engine/__init__.py, "Reinforcement
    # jobs report rewards"). The train figures come from `metrics` lines, the others from `eval` lines.
    REWARD_FIGURES = {
        "train": {"reward": "train_mean_reward", "reward_std": "train_reward_std",
                  "frac_reward_zero_std": "frac_reward_zero_std", "completion_tokens_mean": "completion_tokens_mean",
                  "parse_error_rate": "train_parse_error_rate", "grader_error_rate": "train_grader_error_rate",
                  "grader_scores": "train_grader_scores"},
        "sampled": {"reward": "valid_reward_mean", "completion_tokens_mean": "valid_completion_tokens_mean",
                    "parse_error_rate": "valid_parse_error_rate", "grader_error_rate": "valid_grader_error_rate",
                    "grader_scores": "valid_grader_scores"},
        "full": {"reward": "full_valid_mean_reward", "completion_tokens_mean": "full_valid_completion_tokens_mean",
                 "parse_error_rate": "full_valid_mean_parse_error", "grader_error_rate": "full_valid_grader_error_rate",
                 "grader_scores": "full_valid_grader_scores"},
    }

    class Meta:
        ordering = ["step"]
        constraints = [models.UniqueConstraint(fields=["job", "scope", "step"], name="one_point_per_step")]

    @classmethod
    def reward_values(cls, scope, line):
        """{column: value} of a reinforcement figure set from one engine line of `scope`: every column of
        REWARD_FIGURES[scope] (None, or {} for grader_scores, where the line has no figure), so a replayed line
        replaces what an earlier one stored. Grader scores keep only finite numbers under text names."""
        values = {}
        for column, figure in cls.REWARD_FIGURES[scope].items():
            value = line.get(figure)
            if column == "grader_scores":
                value = {str(name): score for name, score in value.items()
                         if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)
                         } if isinstance(value, dict) else {}
            values[column] = value
        return values


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

"""Evals, their runs and the runs' output items, in the shapes of OpenAI's Evals API.

- `Eval`: a name, `data_source_config` (the item schema), `testing_criteria` (graders, checked by
  `graders.validate_grader` when stored) and, Attune's own, `epoch_data_source`: the prompts and
  sampling a fine-tuning job's epoch checkpoints are run on (a completions data source without a model).
- `EvalRun`: one model (a snapshot) or pre-generated samples (`jsonl`) through the eval. Runs queue
  like jobs (`claim_next`); runs of one eval with the same data source whose snapshots share a base
  are generated together (`batch_key`), one batch of N snapshots per prompt.
- `OutputItem`: one data-source item of a run: the sample and each grader's result.
"""

import hashlib
import json
import math
import secrets

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone


def _hex_id(prefix):
    return prefix + secrets.token_hex(16)


def new_eval_id():
    return _hex_id("eval_")


def new_run_id():
    return _hex_id("evalrun_")


def new_output_item_id():
    return _hex_id("outputitem_")


class Eval(models.Model):
    public_id = models.CharField(max_length=64, unique=True, default=new_eval_id, editable=False)
    name = models.CharField(max_length=256, blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="evals")
    metadata = models.JSONField(null=True, blank=True)
    # {"type": "custom", "item_schema": {...}, "include_sample_schema": bool}
    data_source_config = models.JSONField(default=dict)
    testing_criteria = models.JSONField(default=list)
    # Attune's: a completions data source without `model`, run on each epoch checkpoint of a job that
    # names this eval (and offered on the Evals page); empty when the eval has none.
    epoch_data_source = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.public_id} ({self.name})"

    @property
    def criteria_names(self):
        return [c.get("name") or c.get("type") for c in self.testing_criteria]

    def schema(self):
        """The JSON schema OpenAI returns as `data_source_config.schema`: item, and sample when asked for."""
        config = self.data_source_config or {}
        properties = {"item": config.get("item_schema") or {"type": "object"}}
        required = ["item"]
        if config.get("include_sample_schema"):
            properties["sample"] = SAMPLE_SCHEMA
            required.append("sample")
        return {"type": "object", "properties": properties, "required": required}


SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
        "output_tools": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["model", "choices", "output_text"],
}


class EvalRun(models.Model):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELED = "canceled"
    FAILED = "failed"
    STATUSES = [(s, s) for s in (QUEUED, IN_PROGRESS, COMPLETED, CANCELED, FAILED)]
    ENDED = (COMPLETED, CANCELED, FAILED)

    public_id = models.CharField(max_length=64, unique=True, default=new_run_id, editable=False)
    eval = models.ForeignKey(Eval, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=256, blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="eval_runs")
    model = models.CharField(max_length=300, blank=True, default="")
    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED, db_index=True)
    error = models.JSONField(null=True, blank=True)
    data_source = models.JSONField(default=dict)
    metadata = models.JSONField(null=True, blank=True)
    result_counts = models.JSONField(default=dict)
    per_testing_criteria_results = models.JSONField(default=list)
    per_model_usage = models.JSONField(default=list)
    # Runs with one key (the eval, its data source without the model) may be generated together.
    batch_key = models.CharField(max_length=64, blank=True, default="", db_index=True)
    base_model = models.CharField(max_length=200, blank=True, default="")
    # The fine-tuning job and epoch checkpoint this run scores, when a job's eval made it.
    job = models.ForeignKey("training.FineTuningJob", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="eval_runs")
    checkpoint = models.ForeignKey("training.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="eval_runs")
    n_items = models.IntegerField(default=0)
    n_done = models.IntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.public_id} ({self.model or self.data_source.get('type')})"

    @property
    def ended(self):
        return self.status in self.ENDED

    @staticmethod
    def key_for(eval_obj, data_source):
        """Runs whose data sources differ only in the model share this key."""
        shared = {k: v for k, v in data_source.items() if k != "model"}
        text = json.dumps([eval_obj.public_id, shared], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def claim_next(cls, worker, max_runs=8):
        """Take the oldest queued run and the queued runs that can be generated with it (same batch key
        and base model, up to `max_runs`), or []. Never claims a run twice: PostgreSQL locks with SKIP
        LOCKED; SQLite takes each run with a conditional update and skips what somebody else took."""
        queued = cls.objects.filter(status=cls.QUEUED).order_by("created_at", "id")
        now = timezone.now()
        changes = {"status": cls.IN_PROGRESS, "worker": worker, "started_at": now, "heartbeat_at": now}
        with transaction.atomic():
            if connection.features.has_select_for_update_skip_locked:
                queued = queued.select_for_update(skip_locked=True)
            first = queued.first()
            if first is None:
                return []
            group = [first]
            if first.batch_key:
                group += list(queued.filter(batch_key=first.batch_key, base_model=first.base_model)
                              .exclude(pk=first.pk)[:max_runs - 1])
            taken = [run for run in group if cls.objects.filter(pk=run.pk, status=cls.QUEUED).update(**changes)]
        return list(cls.objects.filter(pk__in=[run.pk for run in taken]).order_by("created_at", "id"))

    @classmethod
    def queue(cls, eval_obj, user, fields, job=None, checkpoint=None):
        """Queue a run of checked `fields` (`evals.requests.run_fields`), or EvalError when the user's queue
        is full. The API and the Evals page both queue runs here."""
        from evals.requests import EvalError

        waiting = cls.objects.filter(owner=user, status__in=[cls.QUEUED, cls.IN_PROGRESS]).count()
        if waiting >= settings.EVAL_MAX_QUEUED_PER_USER:
            raise EvalError(f"You have {waiting} eval runs queued or in progress, the most allowed at once "
                            f"(EVAL_MAX_QUEUED_PER_USER); wait for some to end or cancel them.", param=None,
                            code="rate_limit_exceeded", status=429)
        data_source = fields["data_source"]
        base = ""
        if data_source["type"] == "completions":
            from playground.snapshots import UnknownModel, resolve_snapshot

            try:
                base = resolve_snapshot(data_source["model"]).base_model
            except UnknownModel:
                base = ""  # deleted since the request was checked: the run fails, saying so
        return cls.objects.create(
            eval=eval_obj, owner=user, name=fields["name"], metadata=fields["metadata"], data_source=data_source,
            model=data_source.get("model", ""), batch_key=cls.key_for(eval_obj, data_source), base_model=base,
            job=job, checkpoint=checkpoint)

    def cancel(self):
        """Cancel a run that has not ended; True when it was canceled now."""
        updated = EvalRun.objects.filter(pk=self.pk, status__in=[self.QUEUED, self.IN_PROGRESS]).update(
            status=self.CANCELED, finished_at=timezone.now())
        self.refresh_from_db()
        return bool(updated)

    def fail(self, message, code="run_failed"):
        EvalRun.objects.filter(pk=self.pk).exclude(status__in=self.ENDED).update(
            status=self.FAILED, error={"code": code, "message": message}, finished_at=timezone.now())

    def summary(self):
        """Per testing criterion: mean score, pass rate and their 95 % intervals, over graded items."""
        ranges = {c.get("name") or c.get("type"): score_range(c) for c in self.eval.testing_criteria}
        return criteria_summary(self.eval.criteria_names, self.items.all(), ranges)


class OutputItem(models.Model):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"

    public_id = models.CharField(max_length=64, unique=True, default=new_output_item_id, editable=False)
    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="items")
    index = models.IntegerField()
    datasource_item = models.JSONField(default=dict)
    status = models.CharField(max_length=8, default=FAIL)
    results = models.JSONField(default=list)
    sample = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["index", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="one_output_item_per_index")]


def _fernet():
    """The cipher of stored endpoint keys, keyed from the studio's SECRET_KEY."""
    import base64

    from cryptography.fernet import Fernet

    digest = hashlib.sha256(b"attune-judge-endpoint-keys:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class JudgeEndpoint(models.Model):
    """An external OpenAI-compatible endpoint a model grader may use as its judge: `model` is
    `<endpoint name>/<the endpoint's model id>`. Its key is a secret: stored encrypted with a key derived
    from SECRET_KEY (it must be sent, so it cannot be hashed), and never shown again."""

    MAX_KEY_LENGTH = 200

    name = models.SlugField(max_length=64, unique=True)
    base_url = models.URLField(max_length=500, help_text="The endpoint's /v1 URL, e.g. https://host/v1.")
    api_key = models.CharField(max_length=500, blank=True, default="", help_text="Encrypted; see `key`.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name

    @property
    def key(self):
        """The key in clear, for the request to the endpoint; "" when none was given or SECRET_KEY changed."""
        from cryptography.fernet import InvalidToken

        if not self.api_key:
            return ""
        try:
            return _fernet().decrypt(self.api_key.encode()).decode()
        except InvalidToken:
            return ""

    @key.setter
    def key(self, value):
        self.api_key = _fernet().encrypt(value.encode()).decode() if value else ""


# --- statistics of a run's results ------------------------------------------------

Z95 = 1.959963984540054


def mean_interval(values):
    """(mean, low, high): the mean and its 95 % interval (normal, with the sample standard deviation)."""
    n = len(values)
    if not n:
        return None, None, None
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def wilson_interval(passed, n):
    """(rate, low, high): a pass rate and its 95 % Wilson interval (sound at 0 % and 100 %)."""
    if not n:
        return None, None, None
    p = passed / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def score_range(grader):
    """(low, high) a grader's score cannot leave, or None when it has no bound (python, multi)."""
    kind = grader.get("type")
    if kind in ("string_check", "label_model", "text_similarity"):
        return (0.0, 1.0)
    if kind == "score_model":
        low, high = grader.get("range") or (0, 1)
        return (float(low), float(high))
    return None


def criteria_summary(names, items, ranges=None):
    """[{name, n, mean, mean_low, mean_high, pass_rate, pass_low, pass_high, errored}] per criterion. A mean's
    interval is kept inside the grader's own range (`ranges`: name → (low, high)) where it has one."""
    scores = {name: [] for name in names}
    passes = {name: 0 for name in names}
    errored = {name: 0 for name in names}
    for item in items:
        for result in item.results:
            name = result.get("name")
            if name not in scores:
                continue
            if result.get("error"):
                errored[name] += 1
                continue
            scores[name].append(float(result.get("score") or 0.0))
            passes[name] += bool(result.get("passed"))
    out = []
    for name in names:
        n = len(scores[name])
        mean, low, high = mean_interval(scores[name])
        bounds = (ranges or {}).get(name)
        if bounds and low is not None:
            low, high = max(bounds[0], low), min(bounds[1], high)
        rate, plow, phigh = wilson_interval(passes[name], n)
        out.append({"name": name, "n": n, "mean": mean, "mean_low": low, "mean_high": high,
                    "pass_rate": rate, "pass_low": plow, "pass_high": phigh, "errored": errored[name]})
    return out

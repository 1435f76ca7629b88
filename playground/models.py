"""Comparisons, outputs, ratings and rating tasks.

- A `Comparison` is one prompt sent from the compare page to several
  snapshots; each answer is an `Output` with the position it was shown at
  (blind mode shuffles them).
- A `RatingTask` is a prompt set × snapshots, assigned to evaluators. Its
  outputs are generated once, in the background, one `TaskItem` (prompt)
  at a time, and stored.
- A `Rating` is one person's verdict on one comparison or one task item:
  a 1–5 `Score` (and comment) per output, the order the outputs were shown
  in, and the best pick (or "tie" / "all bad"). One per rater per
  comparison or item. A rater's task ratings can be edited until their
  queue is done (from then on the task's leaderboard and their export
  show the snapshot names, so the ratings are final) or the task closes.
"""

import hashlib
import hmac
import random
import string
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from training.ids import random_tail

LETTERS = string.ascii_uppercase


def column_label(position):
    """Model A, Model B, … (positions past Z continue AA, AB …)."""
    if position < 26:
        return f"Model {LETTERS[position]}"
    return f"Model {LETTERS[position // 26 - 1]}{LETTERS[position % 26]}"


def new_comparison_id():
    return "cmp_" + random_tail()


def new_output_id():
    return "out_" + random_tail()


def new_task_id():
    return "rtask_" + random_tail()


class Comparison(models.Model):
    PENDING, STREAMING, FINISHED = "pending", "streaming", "finished"
    STATUSES = [(s, s) for s in (PENDING, STREAMING, FINISHED)]
    MAX_SNAPSHOTS = 8

    public_id = models.CharField(max_length=40, unique=True, default=new_comparison_id, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparisons")
    messages = models.JSONField(default=list)
    params = models.JSONField(default=dict)
    blind = models.BooleanField(default=True)
    status = models.CharField(max_length=12, choices=STATUSES, default=PENDING)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.public_id

    @classmethod
    def start(cls, user, snapshot_names, messages, params, blind):
        """Create the comparison and its outputs; blind mode shuffles the columns."""
        order = list(snapshot_names)
        if blind:
            random.SystemRandom().shuffle(order)
        with transaction.atomic():
            comparison = cls.objects.create(created_by=user, messages=messages, params=params, blind=blind)
            Output.objects.bulk_create([Output(comparison=comparison, position=i, snapshot_name=name)
                                        for i, name in enumerate(order)])
        return comparison

    @property
    def prompt(self):
        """The last user message: what a list shows."""
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def ordered_outputs(self):
        return list(self.outputs.order_by("position"))

    @property
    def all_finished(self):
        return not self.outputs.filter(status=Output.PENDING).exists()

    def rating_by(self, user):
        return self.ratings.filter(rater=user).first()

    def names_visible_to(self, user):
        """Names show at once when not blind, and after the viewer's own rating when blind."""
        return not self.blind or self.ratings.filter(rater=user).exists()


class RatingTask(models.Model):
    GENERATING, READY, FAILED, CLOSED = "generating", "ready", "failed", "closed"
    STATUSES = [(s, s) for s in (GENERATING, READY, FAILED, CLOSED)]
    # A generation thread that has not reported for this long is presumed dead (the server restarted).
    STALE_AFTER = timedelta(minutes=2)

    public_id = models.CharField(max_length=40, unique=True, default=new_task_id, editable=False)
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="created_rating_tasks")
    evaluators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="rating_tasks")
    snapshot_names = models.JSONField(default=list)
    params = models.JSONField(default=dict)
    prompt_source = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=12, choices=STATUSES, default=GENERATING, db_index=True)
    n_items = models.IntegerField(default=0)
    n_generated = models.IntegerField(default=0)
    error = models.TextField(blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name

    @property
    def is_open(self):
        return self.status == self.READY

    @property
    def generation_stalled(self):
        return self.status == self.GENERATING and (
            self.heartbeat_at is None or timezone.now() - self.heartbeat_at > self.STALE_AFTER)

    @property
    def generation_progress(self):
        return self.n_generated / self.n_items if self.n_items else 0.0

    def is_assigned(self, user):
        return self.evaluators.filter(pk=user.pk).exists()

    def order_for(self, user, item):
        """The order one rater sees one item's outputs in: shuffled, and the same on every visit.

        The shuffle is keyed by the server's secret: from the ids a rater can see (the task's, the item's,
        their own) nobody can work out which column holds which snapshot."""
        outputs = sorted(item.outputs.all(), key=lambda o: o.position)
        key = hmac.new(settings.SECRET_KEY.encode(), f"rating-order:{self.public_id}:{user.pk}:{item.index}".encode(),
                       hashlib.sha256).digest()
        random.Random(key).shuffle(outputs)
        return outputs

    def snapshot_alias(self, user, name):
        """The opaque name one rater knows a task's snapshot by while blind: keyed by the server's secret,
        the same on every visit, and different for every rater and task."""
        digest = hmac.new(settings.SECRET_KEY.encode(), f"snapshot-alias:{self.public_id}:{user.pk}:{name}".encode(),
                          hashlib.sha256).hexdigest()
        return f"blind-{digest[:16]}"

    def names_revealed_to(self, user, next_item=...):
        """Whether this rater may see the snapshot names of the task's ratings (its leaderboard, their
        export): once their queue is done or the task has closed. From then on their ratings are final.
        A task generating again (failed outputs of unrated prompts) or whose generation failed is not closed.
        `next_item`: next_item_for(user) when the caller has it already."""
        if self.status == self.CLOSED:
            return True
        return (self.next_item_for(user) if next_item is ... else next_item) is None

    def rated_count(self, user):
        return Rating.objects.filter(item__task=self, rater=user).count()

    def next_item_for(self, user):
        """The first item this rater has not rated, or None when the queue is done."""
        rated = Rating.objects.filter(item__task=self, rater=user).values("item_id")
        return self.items.exclude(pk__in=rated).order_by("index").first()

    def close(self):
        self.status = self.CLOSED
        self.closed_at = timezone.now()
        self.save(update_fields=["status", "closed_at"])


class TaskItem(models.Model):
    task = models.ForeignKey(RatingTask, on_delete=models.CASCADE, related_name="items")
    index = models.IntegerField()
    messages = models.JSONField(default=list)
    expected = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["task", "index"], name="one_item_per_index")]

    @property
    def prompt(self):
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def generated(self):
        return self.outputs.exists() and not self.outputs.filter(status=Output.PENDING).exists()


class Output(models.Model):
    PENDING, DONE, ERROR = "pending", "done", "error"
    STATUSES = [(s, s) for s in (PENDING, DONE, ERROR)]

    public_id = models.CharField(max_length=40, unique=True, default=new_output_id, editable=False)
    comparison = models.ForeignKey(Comparison, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="outputs")
    item = models.ForeignKey(TaskItem, null=True, blank=True, on_delete=models.CASCADE, related_name="outputs")
    # The column it was shown in on the compare page; in a task, the snapshot's place in the task's list.
    position = models.IntegerField()
    snapshot_name = models.CharField(max_length=300)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    text = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=20, blank=True, default="")
    n_tokens = models.IntegerField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position"]

    def __str__(self):
        return f"{self.public_id} ({self.snapshot_name})"

    # What a blind viewer reads for a failed output: the reason itself names the snapshot or its kind
    # ("holds full weights", an adapter's rank, a checkpoint that was deleted).
    BLIND_ERROR = "No output: generation failed. The reason shows with the model names."

    def error_for(self, reveal):
        """The failure to show: the stored reason once names show, a neutral line while blind."""
        return self.error if reveal or not self.error else self.BLIND_ERROR

    def record(self, event):
        """Store a final StreamEvent (done or error)."""
        self.status = self.DONE if event.type == "done" else self.ERROR
        self.text = event.text if event.type == "done" else ""
        self.error = event.error
        self.finish_reason = event.finish_reason
        self.n_tokens = event.n_tokens
        self.ttft_ms = round(event.ttft_s * 1000, 1) if event.ttft_s is not None else None
        tps = event.tokens_per_second
        self.tokens_per_second = round(tps, 2) if tps else None
        self.save(update_fields=["status", "text", "error", "finish_reason", "n_tokens", "ttft_ms",
                                 "tokens_per_second"])


class Rating(models.Model):
    BEST, TIE, ALL_BAD = "best", "tie", "all_bad"
    VERDICTS = [(BEST, "best"), (TIE, "tie"), (ALL_BAD, "all bad")]

    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ratings")
    comparison = models.ForeignKey(Comparison, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="ratings")
    item = models.ForeignKey(TaskItem, null=True, blank=True, on_delete=models.CASCADE, related_name="ratings")
    verdict = models.CharField(max_length=10, choices=VERDICTS, blank=True, default="")
    best = models.ForeignKey(Output, null=True, blank=True, on_delete=models.SET_NULL, related_name="best_in")
    # Output public ids in the order the rater saw them.
    shown_order = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rater", "comparison"], condition=models.Q(comparison__isnull=False),
                                    name="one_rating_per_comparison"),
            models.UniqueConstraint(fields=["rater", "item"], condition=models.Q(item__isnull=False),
                                    name="one_rating_per_item"),
        ]

    @property
    def task(self):
        return self.item.task if self.item_id else None

    @classmethod
    def save_for(cls, rater, shown, scores, comments, verdict, best_position, comparison=None, item=None):
        """Create or replace a rater's rating of the outputs `shown` (in the order shown).

        `scores`/`comments` map a position in `shown` to a value. Returns the
        Rating, or raises ValueError naming the bad field.
        """
        errors = cls.check_input(shown, scores, verdict, best_position)
        if errors:
            raise RatingError(errors)
        with transaction.atomic():
            rating, _ = cls.objects.select_for_update().get_or_create(
                rater=rater, comparison=comparison, item=item)
            rating.verdict = verdict
            rating.best = shown[best_position] if verdict == cls.BEST else None
            rating.shown_order = [o.public_id for o in shown]
            rating.updated_at = timezone.now()
            rating.save()
            rating.scores.all().delete()
            Score.objects.bulk_create([
                Score(rating=rating, output=output, position=i, score=scores[i], comment=comments.get(i, ""))
                for i, output in enumerate(shown)])
        return rating

    @classmethod
    def check_input(cls, shown, scores, verdict, best_position):
        errors = {}
        for i in range(len(shown)):
            value = scores.get(i)
            if value is None:
                errors[f"score_{i}"] = f"Give {column_label(i)} a score from 1 to 5."
            elif value not in (1, 2, 3, 4, 5):
                errors[f"score_{i}"] = f"The score of {column_label(i)} must be 1 to 5; got {value!r}."
        if verdict not in (cls.BEST, cls.TIE, cls.ALL_BAD):
            errors["verdict"] = "Pick the best output, or tie, or all bad."
        elif verdict == cls.BEST and (best_position is None or not 0 <= best_position < len(shown)):
            errors["verdict"] = "Pick which output is best."
        return errors


class RatingError(ValueError):
    def __init__(self, errors):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class Score(models.Model):
    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="scores")
    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="scores")
    position = models.IntegerField(help_text="Where the rater saw this output (0 = Model A).")
    score = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["rating", "output"], name="one_score_per_output")]

"""The job page's websocket, `ws/jobs/<job id>/`: the stored history first, then every new row.

Who: admins only. Anonymous users and evaluators are refused at the
handshake (HTTP 403; a test communicator sees close code 4401 / 4403); an
unknown job closes with 4404.

Protocol (server → client, JSON text frames; the client sends nothing):

1. One `history` message, right after connect:

       {"kind": "history", "data": {
          "status":      {...status payload...},
          "traces":      {NAME: {"x": [step, ...], "y": [value, ...]}, ...},
          "points":      {"train": N, "sampled": N, "full": N},   # stored, before downsampling
          "last_step":   {"train": S | null, "sampled": S | null, "full": S | null},
          "events":      [event payload, ...],                      # oldest first
          "checkpoints": [checkpoint payload, ...]}}                # by step

   Trace NAMEs (TRACES below, the one definition: the job and compare-runs pages
   read it from a json_script block, scope → metric point field → trace name): `train_loss`,
   `train_accuracy`, `learning_rate` (scope train), `valid_loss`, `valid_accuracy` (scope
   sampled), `full_valid_loss`, `full_valid_accuracy` (scope full), and for DPO jobs
   `<prefix>_reward_margin` and `<prefix>_reward_accuracy` with the same three prefixes.
   A reinforcement job's figures are named as the engine's lines name them
   (training/engine/__init__.py): `train_mean_reward`, `train_reward_std`, `frac_reward_zero_std`,
   `completion_tokens_mean`, `train_parse_error_rate`, `train_grader_error_rate` (train);
   `valid_reward_mean`, `valid_completion_tokens_mean`, `valid_parse_error_rate`,
   `valid_grader_error_rate` (sampled); `full_valid_mean_reward`, `full_valid_completion_tokens_mean`,
   `full_valid_mean_parse_error`, `full_valid_grader_error_rate` (full). Each grader's mean score
   is a trace of its own, `<prefix>_grader:<grader name>` (`train_grader:exact`,
   `valid_grader:exact`, `full_valid_grader:exact`): TRACES gives the part before the name under
   the field `grader_scores`, and the history holds one trace per grader name stored. The
   history's traces are these metric-point traces; the `eval` scope (`eval_mean_score`,
   `eval_pass_rate`) is drawn from the checkpoints' metrics, one point per scored epoch. Each
   trace holds at most MAX_TRACE_POINTS points (LTTB downsampling, first and last kept); null
   values are left out. `events` holds every message event and the newest
   METRICS_EVENTS metrics events.

2. Then the live messages, as the worker stores rows (shapes from
   training/live.py):

       {"kind": "metric",     "data": {"scope", "step", "epoch", "loss", "accuracy", "learning_rate", "tokens_per_second",
                                        "reward_margin", "reward_accuracy", "reward", "reward_std",
                                        "frac_reward_zero_std", "completion_tokens_mean", "parse_error_rate",
                                        "grader_error_rate", "grader_scores": {grader name: mean}}}
       {"kind": "event",      "data": {"id", "created_at", "level", "message", "type", "data"}}
       {"kind": "checkpoint", "data": {"id", "epoch", "step", "model_name", "metrics", "bytes", "created_at"}}
       {"kind": "status",     "data": {...status payload...}}

How a client stays free of doubles: a live message may repeat a row the
history already holds (it was stored while the history was read), and a
resumed job sends again the steps after its last checkpoint, with the same
keys. So every message is an upsert by its key:
metric → (scope, step): a step beyond the trace's last x is appended, an x
already in the trace has its y replaced, any other step (inside a
downsampled stretch) is ignored; event → `id` (a metrics event is updated in
place when its step's validation figures arrive); checkpoint → `id`;
status → replaces the last one. A reconnect (or a second tab) simply starts
again from step 1 with a fresh history.
"""

import math

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from config.access import is_admin
from training import live
from training.models import MetricPoint

MAX_TRACE_POINTS = 1000
METRICS_EVENTS = 200

# A metric point's fields, in the order build_traces reads them, and the trace each feeds per scope. The pages
# get TRACES as JSON (json_script "trace-names"), so static/js/job.js and compare_runs.js name no trace.
POINT_FIELDS = ("loss", "accuracy", "learning_rate", "reward_margin", "reward_accuracy", "reward", "reward_std",
                "frac_reward_zero_std", "completion_tokens_mean", "parse_error_rate", "grader_error_rate",
                "grader_scores")
# grader_scores feeds one trace per grader: its name is this part, then the grader's name.
GRADER_SCORES = "grader_scores"
POINT_TRACES = {
    scope: {"loss": f"{prefix}_loss", "accuracy": f"{prefix}_accuracy",
            "reward_margin": f"{prefix}_reward_margin", "reward_accuracy": f"{prefix}_reward_accuracy",
            **({"learning_rate": "learning_rate"} if scope == "train" else {}),
            # The reinforcement figures, named as the engine's lines name them.
            **{field: figure for field, figure in MetricPoint.REWARD_FIGURES[scope].items() if field != GRADER_SCORES},
            GRADER_SCORES: f"{prefix}_grader:"}
    for scope, prefix in (("train", "train"), ("sampled", "valid"), ("full", "full_valid"))
}
# The eval scores of epoch checkpoints (evals/epochs.py writes them), named as the checkpoint metrics they draw,
# so a script reads `checkpoint.metrics[name]` from a checkpoint message. One point per scored epoch.
EVAL_TRACES = {"mean_score": "eval_mean_score", "pass_rate": "eval_pass_rate"}
TRACES = {**POINT_TRACES, "eval": EVAL_TRACES}


def point_rows(job):
    """The job's metric points as build_traces reads them, oldest step first."""
    return job.metric_points.order_by("step").values_list("scope", "step", *POINT_FIELDS).iterator(
        chunk_size=5000)


def lttb(xs, ys, threshold=MAX_TRACE_POINTS):
    """Largest-Triangle-Three-Buckets: `threshold` points that keep the shape of the curve."""
    n = len(xs)
    if n <= threshold or threshold < 3:
        return list(xs), list(ys)
    import numpy as np

    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    keep = [0]
    edges = np.linspace(1, n - 1, threshold - 1).astype(int)  # threshold - 2 buckets between the ends
    a = 0
    for i in range(threshold - 2):
        start, end = edges[i], edges[i + 1]
        if end <= start:
            end = start + 1
        nxt_start, nxt_end = edges[i + 1], (edges[i + 2] if i + 2 < len(edges) else n)
        if nxt_end <= nxt_start:
            nxt_end = nxt_start + 1
        avg_x, avg_y = x[nxt_start:nxt_end].mean(), y[nxt_start:nxt_end].mean()
        bx, by = x[start:end], y[start:end]
        area = np.abs((x[a] - avg_x) * (by - y[a]) - (x[a] - bx) * (avg_y - y[a]))
        a = start + int(area.argmax())
        keep.append(a)
    keep.append(n - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]


def grader_trace(scope, grader):
    """The trace of one grader's mean score in `scope`: `train_grader:<grader name>`, …"""
    return POINT_TRACES[scope][GRADER_SCORES] + grader


def build_traces(rows):
    """rows: (scope, step, *POINT_FIELDS) ordered by step → the history's traces."""
    columns = {name: ([], []) for fields in POINT_TRACES.values()
               for field, name in fields.items() if field != GRADER_SCORES}
    counts = {scope: 0 for scope in POINT_TRACES}
    last = {scope: None for scope in POINT_TRACES}

    def add(name, step, value):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            xs, ys = columns.setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)

    for scope, step, *values in rows:
        counts[scope] += 1
        last[scope] = step
        for field, value in zip(POINT_FIELDS, values, strict=True):
            if field == GRADER_SCORES:
                for grader, score in (value or {}).items():
                    add(grader_trace(scope, grader), step, score)
            elif field in POINT_TRACES[scope]:
                add(POINT_TRACES[scope][field], step, value)
    traces = {}
    for name, (xs, ys) in columns.items():
        xs, ys = lttb(xs, ys)
        traces[name] = {"x": xs, "y": ys}
    return traces, counts, last


def eval_curves(checkpoints):
    """The eval traces of a job's epoch checkpoints: {name: {"x": [epoch], "y": [score], "step": [step]}}, by
    epoch, each holding the checkpoints that have that score."""
    curves = {name: {"x": [], "y": [], "step": []} for name in EVAL_TRACES.values()}
    for checkpoint in sorted(checkpoints, key=lambda c: c.step):
        for name, curve in curves.items():
            value = checkpoint.metric_value(name)
            if value is not None and math.isfinite(value):
                curve["x"].append(checkpoint.epoch)
                curve["y"].append(value)
                curve["step"].append(checkpoint.step)
    return curves


def job_history(job):
    """Everything the page needs to draw a job as stored now (see the protocol above)."""
    traces, counts, last = build_traces(point_rows(job))
    messages = list(job.events.filter(type="message").order_by("id"))
    metrics = list(job.events.filter(type="metrics").order_by("-id")[:METRICS_EVENTS])
    events = sorted(messages + metrics, key=lambda e: e.pk)
    checkpoints = job.checkpoints.order_by("step")
    for checkpoint in checkpoints:
        checkpoint.job = job
    return {
        "status": live.status_payload(job),
        "traces": traces,
        "points": counts,
        "last_step": last,
        "events": [live.event_payload(e) for e in events],
        "checkpoints": [live.checkpoint_payload(c) for c in checkpoints],
    }


class JobConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        import asyncio

        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(is_admin)(user):
            await self.close(code=4403)
            return
        self.job = await database_sync_to_async(self._load_job)(self.scope["url_route"]["kwargs"]["job_id"])
        if self.job is None:
            await self.close(code=4404)
            return
        # The worker thread of this process (embedded default) relays through this loop.
        live.relay.attach(asyncio.get_running_loop())
        # Join before reading the history, so nothing stored in between is missed.
        self.group = live.group_name(self.job)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        history = await database_sync_to_async(self._history)()
        await self.send_json({"kind": "history", "data": history})

    def _load_job(self, job_id):
        from training.models import FineTuningJob

        return FineTuningJob.objects.select_related("base_model").filter(public_id=job_id).first()

    def _history(self):
        self.job.refresh_from_db()
        return job_history(self.job)

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_update(self, message):
        await self.send_json({"kind": message["kind"], "data": message["data"]})

    async def job_batch(self, batch):
        # The relay groups messages that piled up; the client still gets one frame per message.
        for message in batch["messages"]:
            await self.job_update(message)

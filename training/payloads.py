"""What the worker relays to the channel-layer group `job-<id>` and what the
job page's websocket sends: one shape for live messages and stored history.

Every message on the group is `{"type": "job.update", "kind": KIND, "data": {...}}`
with KIND one of `metric`, `event`, `checkpoint`, `status`.
"""

from training.models import unix


def group_name(job):
    return f"job-{job.public_id}"


def metric_payload(point):
    return {"scope": point.scope, "step": point.step, "epoch": point.epoch, "loss": point.loss,
            "accuracy": point.accuracy, "learning_rate": point.learning_rate,
            "tokens_per_second": point.tokens_per_second, "reward_margin": point.reward_margin,
            "reward_accuracy": point.reward_accuracy}


def event_payload(event):
    return {"id": event.public_id, "created_at": unix(event.created_at), "level": event.level,
            "message": event.message, "type": event.type, "data": event.data}


def checkpoint_payload(checkpoint):
    return {"id": checkpoint.public_id, "epoch": checkpoint.epoch, "step": checkpoint.step,
            "model_name": checkpoint.model_name, "metrics": checkpoint.metrics, "bytes": checkpoint.bytes,
            "created_at": unix(checkpoint.created_at)}


def status_payload(job):
    return {"status": job.status, "step": job.step, "total_steps": job.total_steps, "epoch": job.epoch,
            "progress": job.progress, "tokens_per_second": job.tokens_per_second,
            "fine_tuned_model": job.fine_tuned_model, "error": job.error,
            "estimated_finish": unix(job.estimated_finish), "finished_at": unix(job.finished_at)}


def message(kind, data):
    return {"type": "job.update", "kind": kind, "data": data}

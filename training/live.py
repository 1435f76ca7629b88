"""What a job's watchers get live: the shapes sent to the channel-layer group `job-<id>` (the job page's
websocket sends the same shapes for the stored history), and the relay that sends them from any thread.

Every message on the group is `{"type": "job.update", "kind": KIND, "data": {...}}` with KIND one of
`metric`, `event`, `checkpoint`, `status`; messages that piled up go out as one
`{"type": "job.batch", "messages": [...]}`.

The payloads read the rows they are given by attribute only, so this module imports no models (the
models import it to relay what they store).
"""

import asyncio
import logging
import threading

from channels.layers import InMemoryChannelLayer, get_channel_layer

from training.ids import unix

log = logging.getLogger("attune.live")

MAX_BATCH = 200


# --- the shapes ---------------------------------------------------------------------------------

def group_name(job):
    return f"job-{job.public_id}"


# A metric point's figures, as its payload names them (the MetricPoint columns of the same names).
METRIC_FIGURES = ("loss", "accuracy", "learning_rate", "tokens_per_second", "reward_margin", "reward_accuracy",
                  "reward", "reward_std", "frac_reward_zero_std", "completion_tokens_mean", "parse_error_rate",
                  "grader_error_rate", "grader_scores")


def metric_payload(point):
    """{"scope", "step", "epoch", and every METRIC_FIGURES name}: DPO's reward_margin / reward_accuracy and the
    reinforcement figures are null (grader_scores {}) for the jobs of other methods."""
    payload = {"scope": point.scope, "step": point.step, "epoch": point.epoch}
    payload.update({name: getattr(point, name) for name in METRIC_FIGURES})
    payload["grader_scores"] = payload["grader_scores"] or {}
    return payload


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


# --- the relay ----------------------------------------------------------------------------------

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
    relay.send(group_name(job), message(kind, data))


def publish_event(job, event):
    publish(job, "event", event_payload(event))


def publish_status(job):
    publish(job, "status", status_payload(job))


def publish_checkpoint(job, checkpoint):
    publish(job, "checkpoint", checkpoint_payload(checkpoint))

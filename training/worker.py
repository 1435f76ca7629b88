"""The training worker: the job table is the queue, each claimed job a JobRun (training/job_run.py).

One loop, run by `manage.py trainworker --slots N` (at scale, one per GPU host)
or as a daemon thread of `manage.py serve` (`start_inprocess_worker`, the
embedded default):

- Claim: `FineTuningJob.claim_next(worker)` (SKIP LOCKED on PostgreSQL, a
  conditional update on SQLite): no job ever runs twice. Each claimed job
  runs in a thread of its own, one per slot (`poll_once`).
- Run: `JobRun` starts the engine (training/launch.py), stores its lines,
  carries out cancel and pause, beats the heart every HEARTBEAT_S and ends
  the job.
- Recovery: any worker re-queues a running job whose heartbeat is older than
  STALE_S, or at once when its worker was a process on this host that no
  longer exists, or an earlier start of this very process (a worker is named
  `host:pid:boot:label`, with a random token per start: a restarted
  container is PID 1 again). The job resumes from its last complete
  checkpoint, an event says so, and a checkpoint a kill -9 left on disk
  without its row or event gets them.
- Stopping a worker (SIGTERM/SIGINT to `trainworker` or to `serve`) pauses
  its jobs and puts them back in the queue, so another worker (or the next
  start) continues them from their pause state. A job on a cluster
  (ATTUNE_LAUNCHER=slurm) runs on instead: the worker lets it go, and the
  next worker's recovery pass follows it from the stored offset of its
  output (`follow`).
- Webhooks: a thread of the worker sends the deliveries that are due
  (training/webhooks.py).

Not supported: pinning a job to particular GPUs of a host (a slot uses what
CUDA_VISIBLE_DEVICES gives the worker).
"""

import logging
import os
import secrets
import socket
import threading
import time
from datetime import timedelta

from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from training import launch, launchers, webhooks
from training.engine import checkpoints
from training.job_run import POLL_S, JobRun
from training.models import FineTuningJob

log = logging.getLogger("attune.worker")

STALE_S = float(os.environ.get("ATTUNE_WORKER_STALE_S", "30"))
HOST = socket.gethostname()


# --- the loop -----------------------------------------------------------------------------------

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.last_recovery = None  # the first pass recovers at once: jobs an earlier start left running

    def run(self, stop=None):
        """Claim and run jobs until `stop` is set; then pause the running jobs and queue them again."""
        stop = stop or threading.Event()
        log.info("worker %s: %s slot(s)", self.name, self.slots)
        _running_here.add(self)
        threading.Thread(target=self._deliver_webhooks, args=(stop,), name="attune-webhooks", daemon=True).start()
        while not stop.is_set():
            try:
                self.poll_once()
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

    def poll_once(self):
        """One pass of the loop: forget finished threads, recover stale jobs now and then, fill free slots."""
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

    def _run_job(self, job, follow=None):
        try:
            log.info("worker %s: running %s (attempt %s)", self.name, job.public_id, job.attempts)
            self.job_runs[job.pk] = JobRun(job, self.name, self.stopping, follow=follow)
            self.job_runs[job.pk].run()
        except Exception:  # noqa: BLE001
            log.exception("job %s", job.public_id)
        finally:
            self.job_runs.pop(job.pk, None)
            connection.close()

    def _deliver_webhooks(self, stop):
        while not stop.is_set():
            try:
                webhooks.deliver_due()
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
            gone = not job.worker or (host == HOST and pid is not None and (pid == os.getpid() or not _pid_alive(pid)))
            stale = job.heartbeat_at is None or job.heartbeat_at < cutoff
            if stale or gone:
                if not self.follow(job):
                    self.requeue(job)

    def follow(self, job):
        """Take over following a cluster job whose worker is gone: its engine runs on without a worker, and a
        thread of this one reads its lines on from where the last one stopped. False when the job's engine is
        not one any worker can follow (a local child process, which died with its worker)."""
        launcher = launchers.for_state(job.launcher_state)
        handle = launcher.follow(job) if launcher is not None else None
        if handle is None:
            return False
        old_worker = job.worker
        if not FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.RUNNING, worker=old_worker).update(
                worker=self.name, heartbeat_at=timezone.now()):
            return True  # another worker took it first
        job.refresh_from_db()
        job.record_event(f"The worker {self.name} follows Slurm batch job {job.launcher_state['slurm_job_id']} "
                         f"from here{f' (after {old_worker})' if old_worker else ''}.",
                         dedupe_key=f"followed-{job.attempts}-{self.name}")
        thread = threading.Thread(target=self._run_job, args=(job, handle), name=f"follow-{job.public_id}",
                                  daemon=True)
        self.runs[job.pk] = thread
        thread.start()
        log.info("worker %s: following %s", self.name, job.public_id)
        return True

    def runs_here(self, job):
        thread = self.runs.get(job.pk)
        return job.worker == self.name and thread is not None and thread.is_alive()

    def requeue(self, job):
        old_worker = job.worker
        ours = {run.process.pid for run in list(self.job_runs.values()) if run.process is not None}
        if job.engine_pid and job.engine_pid not in ours and _worker_process(old_worker)[0] == HOST \
                and launch.is_engine_group(job.engine_pid):
            launch.kill_engine_group(job.engine_pid)
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
        job.publish_status()
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


def training_here():
    """Whether this process's worker is running an engine now (its jobs share this host's cores)."""
    worker = _inprocess.get("worker")
    return worker is not None and any(thread.is_alive() for thread in list(worker.runs.values()))


def stop_inprocess_worker():
    """Stop the in-process worker as `trainworker` stops on SIGTERM: each running job saves its state at
    the end of its current step and goes back to the queue; the next start resumes it from there."""
    if "thread" not in _inprocess:
        return
    _inprocess["stop"].set()
    _inprocess["thread"].join()

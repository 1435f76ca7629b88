"""`manage.py trainworker --slots N`: claim queued jobs and run them, N at a time.

Run one per GPU host (slots = GPUs there) against the shared database
(DATABASE_URL) and Redis (REDIS_URL). SIGTERM or Ctrl-C stops it cleanly: the
running jobs save their state and go back to the queue for another worker.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the training worker: claim queued fine-tuning jobs and run the engine for each."

    def add_arguments(self, parser):
        parser.add_argument("--slots", type=int, default=settings.ATTUNE_WORKER_SLOTS,
                            help="How many jobs run at once (one per GPU on a GPU host).")
        parser.add_argument("--name", default=None, help="Label shown on its jobs after host:pid:boot (default w).")

    def handle(self, slots, name, **options):
        from training.worker import Worker

        if slots < 1:
            self.stderr.write("--slots must be 1 or more.")
            raise SystemExit(2)
        worker = Worker(slots=slots, name=name)
        stop = threading.Event()

        def on_signal(signum, frame):
            self.stdout.write("Stopping: running jobs save their state and are queued again …")
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.stdout.write(f"Training worker {worker.name} with {slots} slot(s); waiting for jobs.")
        self.stdout.flush()
        worker.run(stop)
        self.stdout.write("Worker stopped.")

"""`manage.py evalworker --slots N`: run queued eval runs on this host (beside `trainworker`, where the
studio's own process does not run them)."""

import signal

from django.core.management.base import BaseCommand

from evals.runner import EvalWorker


class Command(BaseCommand):
    help = "Run queued eval runs until stopped (SIGTERM or Ctrl-C finishes the chunk in progress)."

    def add_arguments(self, parser):
        parser.add_argument("--slots", type=int, default=1, help="Runs generated at once.")

    def handle(self, slots, **options):
        if slots < 1:
            self.stderr.write("--slots must be at least 1.")
            raise SystemExit(2)
        worker = EvalWorker(slots=slots).start()
        self.stdout.write(f"Eval worker {worker.name} running ({slots} slot(s)).")
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: worker.stopping.set())
        while not worker.stopping.wait(1.0):
            pass
        worker.stop()
        self.stdout.write("Eval worker stopped.")

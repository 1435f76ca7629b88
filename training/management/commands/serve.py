"""Serve the whole studio from one process: web, websockets, the in-process
training worker (embedded default) and built-in inference (or, with
INFERENCE_BACKEND=vllm and no VLLM_URL, the vLLM servers it starts and stops).

On first start it creates the admin user `admin` with a random password,
saved under ATTUNE_HOME so later starts can print it again.

SIGTERM or Ctrl-C stops it as it stops `trainworker`: the in-process worker's
running jobs save their state and go back to the queue, and the next start
resumes them from there.
"""

import signal
import sys

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.utils.crypto import get_random_string

from config.access import make_user

PASSWORD_FILE = "admin-password.txt"


def ensure_admin():
    """Return (password or None when the admin was not created here, created)."""
    path = settings.ATTUNE_HOME / PASSWORD_FILE
    if not User.objects.filter(username="admin").exists():
        password = get_random_string(20)
        make_user("admin", "admin", password=password)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password, True
    return (path.read_text().strip() if path.exists() else None), False


class Command(BaseCommand):
    help = "Serve Attune (HTTP + websockets + worker) with uvicorn."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Do not run the in-process training worker.")

    def handle(self, host, port, no_worker, **options):
        password, created = ensure_admin()
        url = f"http://{host}:{port}/"
        if not settings.ATTUNE_STUDIO_URL:
            # The engines this studio's worker starts ask its judges here (a wildcard bind is reached locally).
            local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
            settings.ATTUNE_STUDIO_URL = f"http://{f'[{local}]' if ':' in local else local}:{port}"
        self.stdout.write("")
        self.stdout.write(f"Attune is starting on {url}")
        self.stdout.write(f"url: {url}")
        self.stdout.write("user: admin")
        if password:
            note = "" if created else f"  (as first set; saved in {settings.ATTUNE_HOME / PASSWORD_FILE})"
            self.stdout.write(f"password: {password}{note}")
        else:
            self.stdout.write("password: (changed since the first start; reset it with "
                              "`.venv/bin/python manage.py changepassword admin`)")
        self.stdout.write("")
        sys.stdout.flush()

        worker = settings.ATTUNE_INPROCESS_WORKER and not no_worker
        if worker:
            from training.worker import start_inprocess_worker

            start_inprocess_worker(slots=settings.ATTUNE_WORKER_SLOTS)
            self.stdout.write(f"Training worker running in this process ({settings.ATTUNE_WORKER_SLOTS} slot(s)).")
        # The apps built on training that keep work going in the background (the eval worker) say so with
        # `start_background()` / `stop_background()` on their AppConfig.
        background = [app for app in apps.get_app_configs() if hasattr(app, "start_background")]
        for app in background:
            self.stdout.write(app.start_background())

        import uvicorn

        # uvicorn hands a request to the application once its headers are in, so config.body_limit can
        # refuse an oversized body before it is read; daphne receives the whole body first. Forwarded
        # headers (X-Forwarded-For, X-Forwarded-Proto) are ignored unless TRUST_PROXY_HEADERS is on.
        # uvicorn raises the signal that stopped it again once it has shut down, to the handler it found:
        # this one only notes it, so the worker below can stop its jobs properly first.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: None)
        uvicorn.run("config.asgi:application", host=host, port=port, ws="websockets-sansio", lifespan="off",
                    log_level="warning", server_header=False, proxy_headers=settings.TRUST_PROXY_HEADERS,
                    forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS)
        from playground.inference import close_backend

        for app in background:
            app.stop_background()
        close_backend()  # the vLLM servers this studio started, if any
        if worker:
            from training.worker import stop_inprocess_worker

            # A second Ctrl-C or SIGTERM ends the process at once; its jobs then resume from their last
            # complete checkpoint.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.stdout.write("Stopping: running jobs save their state and are queued again "
                              "(Ctrl-C again to stop at once) …")
            self.stdout.flush()
            stop_inprocess_worker()
            self.stdout.write("Worker stopped.")

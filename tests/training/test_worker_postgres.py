"""Claiming against a real PostgreSQL: 20 jobs, 3 worker processes, each job run exactly once."""

import json
import subprocess
import sys
import uuid

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

MAKE_JOBS = """
import django
django.setup()
from training.models import BaseModel, DataFile, FineTuningJob
base = BaseModel.objects.create(name="attune-tiny", source="attune-tiny")
data = DataFile.objects.create(filename="t.jsonl", path="t.jsonl", status="processed", n_examples=20)
for _ in range(20):
    FineTuningJob.objects.create(base_model=base, training_file=data, status="queued")
"""

# Each worker claims, "runs" the job for a moment (holding nothing locked), and marks it done with its
# name, the way the real loop does; a second claim of the same job would show up as attempts == 2.
CLAIM_AND_RUN = """
import django, json, sys, time
django.setup()
from training.models import FineTuningJob
name, ran = sys.argv[1], []
while (job := FineTuningJob.claim_next(name)) is not None:
    time.sleep(0.02)
    FineTuningJob.objects.filter(pk=job.pk, worker=name).update(status="succeeded")
    ran.append(job.public_id)
print(json.dumps(ran))
"""

REPORT = """
import django, json
django.setup()
from training.models import FineTuningJob
print(json.dumps(list(FineTuningJob.objects.values_list("public_id", "status", "attempts", "worker"))))
"""


def run_python(code, env, *args):
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_three_workers_on_postgresql_run_each_of_twenty_jobs_exactly_once(postgres_server, tmp_path):
    url = postgres_server.create_database(f"claims_{uuid.uuid4().hex[:8]}")
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": url,
           "ATTUNE_HOME": str(tmp_path)}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "--skip-checks"], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run_python(MAKE_JOBS, env)

    workers = [subprocess.Popen([sys.executable, "-c", CLAIM_AND_RUN, f"pg-worker-{i}"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    ran = {}
    for i, worker in enumerate(workers):
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        ran[f"pg-worker-{i}"] = json.loads(out)

    every_run = [job for jobs in ran.values() for job in jobs]
    assert len(every_run) == 20 and len(set(every_run)) == 20
    rows = json.loads(run_python(REPORT, env))
    assert {status for _, status, _, _ in rows} == {"succeeded"}
    assert {attempts for _, _, attempts, _ in rows} == {1}
    for public_id, _, _, worker in rows:
        assert public_id in ran[worker]

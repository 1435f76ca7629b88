"""The local launcher: the engine as a child process of the worker (training/launch.py starts and signals it)."""

import signal

from training import launch
from training.launchers.base import Ended


class LocalRun:
    detachable = False

    def __init__(self, process):
        self.process = process
        self.pid = process.pid

    def lines(self):
        for raw in self.process.stdout:
            yield raw, None

    def pause(self):
        launch.signal_engine(self.process, signal.SIGUSR1)

    def cancel(self):
        launch.terminate_engine(self.process)

    def wait(self):
        return Ended(self.process.wait())


class LocalLauncher:
    name = "local"

    def check(self, spec):
        nodes = spec.get("n_nodes") or 1
        if nodes > 1:
            return [("n_nodes", f"n_nodes is {nodes}, but this studio's launcher is 'local', which runs a job on "
                                "one machine: set n_nodes to 1, or run the studio with ATTUNE_LAUNCHER=slurm.")]
        return []

    def command(self, job, spec, resume):
        return launch.engine_command(job.job_dir / "spec.json", spec.get("n_gpus") or 1, resume)

    def start(self, job, spec, command):
        return LocalRun(launch.start_engine(job, spec, command, job.worker))

    def follow(self, job):
        return None


LAUNCHER = LocalLauncher()

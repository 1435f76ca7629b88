"""How a claimed job's engine is started and followed: the `ATTUNE_LAUNCHER` setting.

- `local` (the default, local.py): a child process of the worker, as training/launch.py starts it.
- `slurm` (slurm.py): a batch job submitted with `sbatch`, followed through `squeue` / `sacct` and its
  output file; any worker can follow it, so the worker that submitted it may stop.

A launcher is a module-level object with:

- `name`;
- `check(spec)`: the problems of a request this launcher cannot run, as [(field, message)] (`n_nodes` above
  what it allows, a Slurm partition that does not exist); create_job refuses the job with the first;
- `command(job, spec, resume)`: the engine command it runs (training/launch.py's `engine_command`, with the
  nodes and rendezvous the launcher gives);
- `start(job, spec, command)`: start the engine on `spec` (already written to the job folder), and return its
  run (below);
- `follow(job)`: the run of an engine another worker started (from `job.launcher_state`), or None when this
  launcher's runs end with their worker.

A run has:

- `lines()`: the engine's stdout as (raw line, offset) pairs until the engine has ended and every line is
  read; `offset` is where the next line starts in a file any worker can read again (None for a pipe);
- `pause()`, `cancel()`: SIGUSR1 (the engine saves its state and exits) and a stop;
- `wait()`: how it ended, an `Ended` (below);
- `pid`: the local process group, or None;
- `detachable`: whether the engine goes on when its worker stops (a cluster job), so the worker leaves it to
  the next one instead of pausing it.

Another scheduler is one more module with the same two objects: a Kubernetes launcher would create a Job
per attempt (the engine's container, the job folder on a shared volume), follow its pod's log with an
offset, map pause to a signal through `kubectl exec`… and cancel to deleting the Job.
"""

from django.conf import settings

from training.launchers.base import Ended  # noqa: F401 - the runs' answer, named here for callers


def current():
    """The launcher `ATTUNE_LAUNCHER` names."""
    from training.launchers import local, slurm

    return {"local": local.LAUNCHER, "slurm": slurm.LAUNCHER}[settings.ATTUNE_LAUNCHER]


def for_state(state):
    """The launcher that wrote a job's `launcher_state`, or None."""
    from training.launchers import slurm

    return slurm.LAUNCHER if (state or {}).get("launcher") == "slurm" else None

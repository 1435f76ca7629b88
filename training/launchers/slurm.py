"""The Slurm launcher: each attempt of a job is a batch job, submitted with `sbatch` and followed by any worker.

- Submit: `<job_dir>/slurm-<attempt>.sh` runs the engine command under `srun`, one task per node; with
  `n_nodes` > 1 that command is one torchrun per node, and the script hands them the first node of the
  allocation as the rendezvous endpoint. Nodes come
  from the spec (`n_nodes`); GPUs per node from `n_gpus` when ATTUNE_SLURM_GPUS is on; the partition from
  the spec's `slurm_partition`, else ATTUNE_SLURM_PARTITION; the time limit from ATTUNE_SLURM_TIME. The engine's environment is the one
  training/launch.py allows (`--export=ALL` of sbatch's own), never the studio's secrets.
- Follow: the engine's stdout goes to `<job_dir>/engine-<attempt>.out`, its stderr to the job's engine.log.
  The lines are read from the stored offset (`job.launcher_state["offset"]`, saved with each stored line),
  so a worker that takes over from one that stopped reads on where it left off: no line is lost or stored
  twice. The state comes from `squeue` while the job is queued or running, then from `sacct` (or
  `scontrol show job`, on a cluster without accounting).
- Control: cancel → `scancel`; pause → `scancel --signal=USR1` (the engine's steps save their state and exit).
- The end: COMPLETED or FAILED give the batch job's exit status. PREEMPTED, NODE_FAIL, BOOT_FAIL, TIMEOUT,
  DEADLINE, and a cancel that did not come from Attune, are interruptions: the job is queued again and
  resumes from its last complete checkpoint.
"""

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

from django.conf import settings

from training.launchers.base import Ended

# The scheduler's words for a batch job that is not over yet, and for one the cluster took away.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
          "STAGE_OUT", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED"}
INTERRUPTED = {"PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "TIMEOUT", "DEADLINE", "CANCELLED", "OUT_OF_MEMORY"}
RENDEZVOUS_PORT = 29400
RENDEZVOUS_ENDPOINT = "$ATTUNE_RDZV_ENDPOINT"
COMMAND_TIMEOUT_S = 30
POLL_S = 0.3
STATE_EVERY_S = 1.0
MAX_LINE = 4 * 1024 * 1024  # a longer "line" is not the engine's; it is skipped, not held


class SlurmError(RuntimeError):
    pass


def _slurm(*args, check=True):
    """Run a Slurm client command; its stdout. SlurmError names the command and what it said."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              env=_client_env())
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} is not installed on this host: install the Slurm client "
                         "(Debian: slurm-client or slurm-wlm), or set ATTUNE_LAUNCHER=local.") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(args[:2])} did not answer within {COMMAND_TIMEOUT_S} s.") from None
    if check and done.returncode != 0:
        raise SlurmError(f"{' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


def _client_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG") or k.startswith("SLURM_CONF")}
    return {**env, **(extra or {})}


def batch_script(job, command, spec, attempt):
    """The sbatch script of one attempt of `job`: its #SBATCH lines, then the engine command under srun."""
    nodes = spec.get("n_nodes") or 1
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=attune-{job.public_id}",
             f"#SBATCH --nodes={nodes}",
             "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --output={job.job_dir / f'engine-{attempt}.out'}",
             f"#SBATCH --error={job.job_dir / 'engine.log'}",
             "#SBATCH --open-mode=append",
             f"#SBATCH --chdir={settings.BASE_DIR}"]
    if settings.ATTUNE_SLURM_GPUS:
        lines.append(f"#SBATCH --gpus-per-node={spec.get('n_gpus') or 1}")
    partition = spec.get("slurm_partition") or settings.ATTUNE_SLURM_PARTITION
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if settings.ATTUNE_SLURM_TIME:
        lines.append(f"#SBATCH --time={settings.ATTUNE_SLURM_TIME}")
    lines.append("set -e")
    if nodes > 1:
        lines.append('ATTUNE_RDZV_ENDPOINT="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):'
                     f'{RENDEZVOUS_PORT}"')
    lines.append(f"exec srun --kill-on-bad-exit=1 {' '.join(_shell_word(str(part)) for part in command)}")
    return "\n".join(lines) + "\n"


def _shell_word(part):
    # The script's own variable expands; every other word is quoted as it is.
    return f'"{part}"' if part == RENDEZVOUS_ENDPOINT else shlex.quote(part)


def engine_command(job, spec, resume):
    """The command srun runs on each node: the engine, under one torchrun per node with several nodes, which
    meet at the first node of the allocation (the script's ATTUNE_RDZV_ENDPOINT)."""
    from training import launch

    nodes = spec.get("n_nodes") or 1
    return launch.engine_command(job.job_dir / "spec.json", spec.get("n_gpus") or 1, resume, n_nodes=nodes,
                                 rdzv_endpoint=RENDEZVOUS_ENDPOINT if nodes > 1 else None,
                                 rdzv_id=f"{job.public_id}-{job.attempts}" if nodes > 1 else None)


class SlurmRun:
    detachable = True
    pid = None

    def __init__(self, slurm_job_id, output, offset=0):
        self.slurm_job_id = str(slurm_job_id)
        self.output = Path(output)
        self.offset = int(offset or 0)
        self.ended = None

    def state(self):
        """(the scheduler's state word, exit status or None) of the batch job."""
        shown = _slurm("squeue", "-h", "-j", self.slurm_job_id, "-o", "%T", check=False).strip()
        if shown in ACTIVE:
            return shown, None
        account = _slurm("sacct", "-n", "-P", "-X", "-j", self.slurm_job_id, "-o", "State,ExitCode",
                         check=False).strip()
        if account:
            state, _, code = account.splitlines()[0].partition("|")
            return state.split()[0], int(code.split(":")[0] or 0)
        shown = _slurm("scontrol", "show", "job", "-o", self.slurm_job_id, check=False)
        found = re.search(r"JobState=(\S+)", shown)
        code = re.search(r"ExitCode=(\d+):(\d+)", shown)
        if found:
            return found.group(1), int(code.group(1)) if code else None
        # Known to none of them: it ended longer ago than the controller keeps jobs, on a cluster without
        # accounting, and its exit status is lost.
        return "UNKNOWN", None

    def lines(self):
        """Complete lines of the output file from `offset` on, with the offset after each, until the batch job
        has ended and the file is read to its end."""
        buffer, position, skipping = b"", self.offset, False
        last_state = 0.0
        while True:
            chunk = b""
            if self.output.exists():
                with self.output.open("rb") as handle:
                    handle.seek(position + len(buffer))
                    chunk = handle.read(1 << 16)
            if chunk:
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    position += len(raw) + 1
                    if skipping:
                        skipping = False
                        continue
                    yield raw + b"\n", position
                if len(buffer) > MAX_LINE:
                    position, buffer, skipping = position + len(buffer), b"", True
                continue
            if self.ended is not None:
                return
            now = time.monotonic()
            if now - last_state >= STATE_EVERY_S:
                last_state = now
                state, code = self.state()
                if state not in ACTIVE:
                    # One more read after the end: what the engine wrote last is in the file by now.
                    self.ended = _ended(state, code)
                    continue
            time.sleep(POLL_S)

    def pause(self):
        _slurm("scancel", "--signal=USR1", self.slurm_job_id, check=False)

    def cancel(self):
        _slurm("scancel", self.slurm_job_id, check=False)

    def wait(self):
        while self.ended is None:
            state, code = self.state()
            if state not in ACTIVE:
                self.ended = _ended(state, code)
            else:
                time.sleep(STATE_EVERY_S)
        return self.ended


def _ended(state, code):
    if state in INTERRUPTED:
        return Ended(returncode=code if code is not None else -1, interrupted=True, state=state)
    return Ended(returncode=code if code is not None else -1, state=state)


class SlurmLauncher:
    name = "slurm"

    def check(self, spec):
        problems = []
        nodes = spec.get("n_nodes") or 1
        if nodes > settings.ATTUNE_SLURM_MAX_NODES:
            problems.append(("n_nodes", f"n_nodes is {nodes}; this studio submits jobs of at most "
                                        f"{settings.ATTUNE_SLURM_MAX_NODES} nodes (ATTUNE_SLURM_MAX_NODES)."))
        partition = spec.get("slurm_partition") or settings.ATTUNE_SLURM_PARTITION
        if partition:
            try:
                known = _slurm("sinfo", "-h", "-o", "%R").split()
            except SlurmError as exc:
                return problems + [("slurm_partition", f"The Slurm cluster could not be asked for its "
                                                       f"partitions: {exc}")]
            if partition not in known:
                where = "slurm_partition" if spec.get("slurm_partition") else "ATTUNE_SLURM_PARTITION"
                problems.append(("slurm_partition", f"Slurm partition '{partition}' ({where}) does not exist; "
                                                    f"the cluster has: {', '.join(known) or 'none'}."))
        return problems

    def command(self, job, spec, resume):
        return engine_command(job, spec, resume)

    def start(self, job, spec, command):
        from training import launch

        attempt = job.attempts
        script = job.job_dir / f"slurm-{attempt}.sh"
        script.write_text(batch_script(job, command, spec, attempt))
        output = job.job_dir / f"engine-{attempt}.out"
        output.unlink(missing_ok=True)
        env = _client_env(launch.engine_env(spec, attempt=attempt))
        try:
            done = subprocess.run(["sbatch", "--parsable", "--export=ALL", str(script)], capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT_S, env=env)
        except FileNotFoundError:
            raise SlurmError("sbatch is not installed on this host: install the Slurm client, or set "
                             "ATTUNE_LAUNCHER=local.") from None
        if done.returncode != 0:
            raise SlurmError(f"sbatch refused the job: {(done.stderr or done.stdout).strip()[:500]}")
        slurm_job_id = done.stdout.strip().split(";")[0]
        state = {"launcher": self.name, "slurm_job_id": slurm_job_id, "output": str(output), "offset": 0}
        type(job).objects.filter(pk=job.pk).update(launcher_state=state)
        job.launcher_state = state
        return SlurmRun(slurm_job_id, output)

    def follow(self, job):
        state = job.launcher_state or {}
        if state.get("launcher") != self.name or not state.get("slurm_job_id"):
            return None
        return SlurmRun(state["slurm_job_id"], state["output"], state.get("offset") or 0)


LAUNCHER = SlurmLauncher()

"""Starting a job's engine as a child process, and signalling it.

- The spec: the job's resolved spec goes to `<job_dir>/spec.json` with the
  base model's folder, the files' paths and the job folder filled in; a
  tracker's local folder is put inside the job folder (`engine_spec`).
- The command: `python -m training.engine spec.json [--resume]`, under
  `torchrun` when the spec asks for several GPUs, one torchrun per node
  meeting at a c10d rendezvous when it asks for several nodes
  (`engine_command`).
- The process: its own process group (signals reach torchrun's children
  too), dead with the thread that started it (PR_SET_PDEATHSIG), stderr
  appended to `<job_dir>/engine.log`, and only the environment variables
  `engine_env` lets through (ENGINE_ENV_NAMES and ENGINE_ENV_PREFIXES; a
  tracker's own only when the job uses it), never the studio's secrets.
- Signals: cancel → SIGTERM to the group, SIGKILL after CANCEL_GRACE_S;
  pause → SIGUSR1 (the engine saves its state and exits).
- A reinforcement job: its spec gets the python graders' sandbox limits
  (PYTHON_GRADER_*) and, when its grader has a score_model or label_model
  grader anywhere, `judge_url`, the studio's /v1 address
  (ATTUNE_STUDIO_URL), which the engine asks for the judges' answers. Its
  engine gets ATTUNE_JUDGE_TOKEN (never written into spec.json): a token
  signed with the studio's secret key for that job and attempt, which
  /v1/chat/completions takes as the job's creator while that attempt runs
  (`judge_token`, `read_judge_token`; the check of the job is api/auth.py's).

Imports no models: it reads the job it is given.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core import signing

from training.engine.spec import local_tracking_folder
from training.engine.torchrun import die_with_parent

CANCEL_GRACE_S = float(os.environ.get("ATTUNE_CANCEL_GRACE_S", "5"))


def _engine_child_setup():
    # The engine gets SIGKILL when the thread that started it dies, so a kill -9 of
    # the worker (or of `make run`) leaves no orphan writing into the job folder.
    die_with_parent()


# What the engine inherits from the worker's environment; nothing else reaches it, so the
# studio's own secrets (SECRET_KEY, DATABASE_URL, REDIS_URL, tokens of other services) stay out
# of training code and of the trackers it starts.
ENGINE_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP", "XDG_CACHE_HOME",
    "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "LD_LIBRARY_PATH",
    "TOKENIZERS_PARALLELISM", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
ENGINE_ENV_PREFIXES = ("LC_", "HF_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "TORCHINDUCTOR_", "TRITON_",
                       "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "CUBLAS_", "CUDNN_", "NCCL_", "GLOO_",
                       "NVIDIA_", "ACCELERATE_")
# A tracker's variables (its API key among them) pass only to a job that uses that tracker.
INTEGRATION_ENV_PREFIXES = {"wandb": ("WANDB_",), "mlflow": ("MLFLOW_", "DATABRICKS_")}


# A judge token is `attune-judge-` and a value signed with SECRET_KEY under a salt of its own, so no other
# signed value of the studio's (a session, a password reset) can pass for one, nor one for them.
JUDGE_TOKEN_PREFIX = "attune-judge-"
JUDGE_TOKEN_SALT = "attune.training.launch.judge-token"
DEFAULT_STUDIO_URL = "http://127.0.0.1:8000"
MODEL_GRADERS = ("score_model", "label_model")


def judge_token(job_id, attempt):
    """The bearer token a reinforcement job's engine asks the studio's judges with, for one attempt."""
    return JUDGE_TOKEN_PREFIX + signing.dumps({"job": job_id, "attempt": attempt}, salt=JUDGE_TOKEN_SALT)


def read_judge_token(token):
    """(job id, attempt) of a judge token this studio signed, or None (not one, or tampered with)."""
    if not isinstance(token, str) or not token.startswith(JUDGE_TOKEN_PREFIX):
        return None
    try:
        claims = signing.loads(token[len(JUDGE_TOKEN_PREFIX):], salt=JUDGE_TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("job"), str) \
            or not isinstance(claims.get("attempt"), int):
        return None
    return claims["job"], claims["attempt"]


def judge_models(grader):
    """The judge models a grader's score_model and label_model graders name, at any depth."""
    if not isinstance(grader, dict):
        return []
    if grader.get("type") == "multi":
        return [model for child in (grader.get("graders") or {}).values() for model in judge_models(child)]
    return [grader["model"]] if grader.get("type") in MODEL_GRADERS and isinstance(grader.get("model"), str) else []


def studio_url():
    """The studio's address as the engine reaches it: ATTUNE_STUDIO_URL, else serve's own address."""
    return (settings.ATTUNE_STUDIO_URL or DEFAULT_STUDIO_URL).rstrip("/")


def engine_env(spec, environ=None, attempt=None):
    """The environment of a job's engine: the allowed part of `environ` (the worker's own by default), and
    for a job that asks judges (`judge_url`), the judge token of its `attempt`."""
    environ = os.environ if environ is None else environ
    prefixes = ENGINE_ENV_PREFIXES
    integrations = spec.get("integrations") or {}
    for name, extra in INTEGRATION_ENV_PREFIXES.items():
        if integrations.get(name):
            prefixes += extra
    env = {k: v for k, v in environ.items() if k in ENGINE_ENV_NAMES or k.startswith(prefixes)}
    env["PYTHONUNBUFFERED"] = "1"
    if integrations.get("wandb"):
        env["WANDB_RUN_ID"] = spec["job_id"]
    if spec.get("judge_url"):
        if attempt is None:
            raise ValueError("a job that asks judges needs its attempt for the judge token")
        env["ATTUNE_JUDGE_TOKEN"] = judge_token(spec["job_id"], attempt)
    return env


def engine_command(spec_path, n_gpus=1, resume=False, n_nodes=1, node_rank=None, rdzv_endpoint=None,
                   rdzv_id=None):
    """The command that runs a job's engine on this host.

    One process: `python -m training.engine spec.json [--resume]`. Several GPUs on one host (n_gpus > 1):
    under torchrun (`training.engine.torchrun --standalone --nproc_per_node=N`: torchrun, handing a pause's
    SIGUSR1 on to its ranks). Several hosts (n_nodes > 1): one such command per host, each starting n_gpus
    processes, which meet at `rdzv_endpoint` ("host:port", the first node's address, reachable from every
    node) under `rdzv_id` (the same on every node: the job's id and attempt); the rendezvous numbers the
    nodes unless `node_rank` is given. A Slurm launcher runs it once per node inside
    `srun --nodes=N --ntasks-per-node=1`, with the endpoint the first host of $SLURM_JOB_NODELIST. Every node
    must see the job folder at the same path: global rank 0 alone prints the protocol lines and writes the
    checkpoints. On a host without a GPU, n_gpus counts processes (gloo)."""
    args = ["-m", "training.engine", str(spec_path)] + (["--resume"] if resume else [])
    if n_nodes > 1:
        if not rdzv_endpoint or not rdzv_id:
            raise ValueError("a job on several nodes needs rdzv_endpoint (host:port) and rdzv_id")
        rank = ["--node-rank", str(node_rank)] if node_rank is not None else []
        return [sys.executable, "-m", "training.engine.torchrun", "--nnodes", str(n_nodes), "--nproc_per_node",
                str(n_gpus), *rank, "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id",
                str(rdzv_id), *args]
    if n_gpus > 1:
        return [sys.executable, "-m", "training.engine.torchrun", "--standalone", f"--nproc_per_node={n_gpus}",
                *args]
    return [sys.executable, *args]


def engine_spec(job):
    """The spec the engine reads: the resolved spec with this host's paths filled in."""
    spec = dict(job.resolved_spec or job.spec)
    spec["model"] = job.base_model.load_path
    spec["training_file"] = str(job.training_file.full_path)
    spec["validation_file"] = str(job.validation_file.full_path) if job.validation_file else None
    spec["output_dir"] = str(job.job_dir)
    spec["job_id"] = job.public_id
    if job.init_checkpoint_id:
        spec["init_from"] = str(job.init_checkpoint.full_path)
    integrations = dict(spec.get("integrations") or {})
    if integrations.get("tensorboard"):
        board = dict(integrations["tensorboard"])
        board["log_dir"] = str(job.job_dir / (board.get("log_dir") or "tensorboard"))
        integrations["tensorboard"] = board
    if integrations.get("mlflow"):
        flow = dict(integrations["mlflow"])
        local = local_tracking_folder(flow["tracking_uri"])
        if local is not None:
            flow["tracking_uri"] = str(job.job_dir / local)
        integrations["mlflow"] = flow
    spec["integrations"] = integrations
    if spec.get("method") == "reinforcement":
        spec["python_grader_limits"] = {"cpu_seconds": settings.PYTHON_GRADER_CPU_SECONDS,
                                        "memory_mb": settings.PYTHON_GRADER_MEMORY_MB,
                                        "wall_seconds": settings.PYTHON_GRADER_WALL_SECONDS}
        spec["judge_url"] = studio_url() + "/v1" if judge_models(spec.get("grader")) else None
    return spec


def write_spec(job, spec):
    """`spec` as the engine reads it, in the job folder."""
    (job.job_dir / "spec.json").write_text(json.dumps(spec, indent=2))


def start_engine(job, spec, command, worker_name):
    """Start `command` on the spec in the job folder (see the module docstring); the Popen."""
    with open(job.job_dir / "engine.log", "ab") as stderr:
        stderr.write(f"\n=== attempt {job.attempts} by {worker_name}: {' '.join(command)}\n".encode())
        stderr.flush()
        return subprocess.Popen(
            command, cwd=settings.BASE_DIR, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
            env=engine_env(spec, attempt=job.attempts), start_new_session=True, preexec_fn=_engine_child_setup)


def signal_engine(process, signum):
    """`signum` to the engine's whole process group."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def terminate_engine(process):
    """SIGTERM to the engine's group; SIGKILL if it is still there after the grace period."""
    signal_engine(process, signal.SIGTERM)

    def kill_later():
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.1)
        signal_engine(process, signal.SIGKILL)

    threading.Thread(target=kill_later, daemon=True).start()


def is_engine_group(pgid):
    """Whether process group `pgid` is led by an engine (and not some process that reuses the PID)."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"training.engine" in cmdline or b"torch.distributed.run" in cmdline


def kill_engine_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def log_tail(job, n=5):
    """The last `n` lines of the job's engine.log, joined with ` | `; empty when there is none."""
    try:
        lines = (job.job_dir / "engine.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:])

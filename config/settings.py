"""Attune settings: everything comes from the environment, with an embedded default.

| variable                 | default                          |
| ------------------------ | -------------------------------- |
| ATTUNE_HOME              | var/ (SQLite, uploads, models, checkpoints, secret key) |
| DATABASE_URL             | SQLite file in ATTUNE_HOME        |
| REDIS_URL                | in-memory channel layer           |
| ATTUNE_INPROCESS_WORKER  | 1 without REDIS_URL, else 0       |
| ATTUNE_WORKER_SLOTS      | 1                                 |
| ATTUNE_MAX_UPLOAD_MB     | 512                               |
| ATTUNE_MAX_LINE_MB       | 8 (longest line of a data file)   |
| ATTUNE_SWEEP_MAX_JOBS    | 12 (jobs one sweep may create)    |
| ATTUNE_LAUNCHER          | local (the worker's child process), or slurm (sbatch) |
| ATTUNE_SLURM_PARTITION / ATTUNE_SLURM_TIME | the cluster's default partition / none (sbatch --time) |
| ATTUNE_SLURM_MAX_NODES   | 4 (the most n_nodes a job may ask for) |
| ATTUNE_SLURM_GPUS        | 1: ask for n_gpus GPUs per node (0 on a CPU cluster) |
| INFERENCE_BACKEND        | builtin (or vllm with VLLM_URL)   |
| VLLM_URL                 | none: with INFERENCE_BACKEND=vllm, Attune runs its own vLLM servers |
| VLLM_COMMAND             | .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server |
| VLLM_MAX_LORAS / VLLM_MAX_LORA_RANK | 8 adapters in a batch / rank 16 |
| VLLM_DTYPE               | auto (float32 on a CPU)           |
| VLLM_KV_CACHE_GB         | 2 (CPU) / VLLM_GPU_MEMORY_UTILIZATION 0.4 (GPU) |
| VLLM_MAX_MODEL_LEN       | 0 (the model's own)               |
| VLLM_IDLE_SECONDS        | 900 (an idle server stops)        |
| VLLM_MAX_FULL_SERVERS    | 1 server for full-weight snapshots at once |
| VLLM_START_TIMEOUT       | 300 s                             |
| VLLM_EXTRA_ARGS          | none (more flags for each server) |
| INFERENCE_MAX_FULL_MODELS| 2 full-weight snapshots in memory (builtin) |
| ATTUNE_DEFAULT_BASE_MODEL| smollm2-135m (the base the forms pick first) |
| INFERENCE_MAX_LOADED_MB  | 8192 MB of loaded models (builtin) |
| INFERENCE_MAX_PROMPT_TOKENS | 4096 prompt tokens (builtin)   |
| INFERENCE_MAX_CONCURRENT_PER_USER | 2 generations at once per user |
| EVAL_WORKER_SLOTS        | 1 (eval runs generated at once)   |
| EVAL_BATCH_SNAPSHOTS     | 8 snapshots generated in one batch |
| EVAL_CONCURRENT_PROMPTS  | 8 prompts asked at once (vLLM batches them) |
| EVAL_WHILE_TRAINING      | auto: eval generation waits for a job training on the same CPU cores |
| EVAL_MAX_ITEMS           | 10000 items in one run            |
| EVAL_MAX_QUEUED_PER_USER | 100 runs waiting at once          |
| PYTHON_GRADER_CPU_SECONDS / _WALL_SECONDS / _MEMORY_MB | 10 / 30 / 1024 per item |
| ATTUNE_STUDIO_URL        | the address `manage.py serve` listens on (http://127.0.0.1:8000): where a reinforcement job's engine asks the judges |
| DEBUG                    | off                               |
| SECRET_KEY               | generated into ATTUNE_HOME        |
| TRUST_PROXY_HEADERS      | off (X-Forwarded-* ignored)       |
| FORWARDED_ALLOW_IPS      | 127.0.0.1                         |
| ATTUNE_LOGIN_FAILURE_LIMIT / ATTUNE_LOGIN_LOCKOUT_MINUTES | 5 / 15 |
| SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE | off              |
| SECURE_HSTS_SECONDS (SECURE_HSTS_INCLUDE_SUBDOMAINS) | 0 (off) |
"""

import os
import secrets
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


if not os.environ.get("ATTUNE_HOME") and "pytest" in sys.modules:
    # A test run never writes into the developer's studio.
    os.environ["ATTUNE_HOME"] = tempfile.mkdtemp(prefix="attune-test-")
ATTUNE_HOME = Path(os.environ.get("ATTUNE_HOME") or BASE_DIR / "var").resolve()
ATTUNE_HOME.mkdir(parents=True, exist_ok=True)
FILES_DIR = ATTUNE_HOME / "files"
MODELS_DIR = ATTUNE_HOME / "models"
JOBS_DIR = ATTUNE_HOME / "jobs"


def _secret_key():
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = ATTUNE_HOME / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DEBUG")
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "channels",
    "training",
    "dashboard",
    "playground",
    "api",
    "evals",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.access.roles",
            ],
        },
    },
]

ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": ATTUNE_HOME / "attune.sqlite3",
            # The web process, the in-process worker and management commands share
            # one file: wait for the write lock instead of failing at once.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 5000},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}}

ATTUNE_INPROCESS_WORKER = _env_bool("ATTUNE_INPROCESS_WORKER", default=not REDIS_URL)
ATTUNE_WORKER_SLOTS = int(os.environ.get("ATTUNE_WORKER_SLOTS", "1"))
ATTUNE_MAX_UPLOAD_MB = int(os.environ.get("ATTUNE_MAX_UPLOAD_MB", "512"))
ATTUNE_MAX_LINE_MB = int(os.environ.get("ATTUNE_MAX_LINE_MB", "8"))
# The most jobs one sweep creates (training/sweeps.py): a grid's combinations, or a random sweep's draws.
ATTUNE_SWEEP_MAX_JOBS = int(os.environ.get("ATTUNE_SWEEP_MAX_JOBS", "12"))
# How a claimed job's engine starts (training/launchers/): the worker's child process, or a Slurm batch job.
ATTUNE_LAUNCHER = os.environ.get("ATTUNE_LAUNCHER", "local")
if ATTUNE_LAUNCHER not in ("local", "slurm"):
    raise ImproperlyConfigured(f"ATTUNE_LAUNCHER must be 'local' or 'slurm'; got {ATTUNE_LAUNCHER!r}.")
ATTUNE_SLURM_PARTITION = os.environ.get("ATTUNE_SLURM_PARTITION", "")
ATTUNE_SLURM_TIME = os.environ.get("ATTUNE_SLURM_TIME", "")
ATTUNE_SLURM_MAX_NODES = int(os.environ.get("ATTUNE_SLURM_MAX_NODES", "4"))
ATTUNE_SLURM_GPUS = _env_bool("ATTUNE_SLURM_GPUS", default=True)
# Behind a reverse proxy: trust its X-Forwarded-For / X-Forwarded-Proto, from FORWARDED_ALLOW_IPS only.
TRUST_PROXY_HEADERS = _env_bool("TRUST_PROXY_HEADERS")
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
INFERENCE_BACKEND = os.environ.get("INFERENCE_BACKEND", "vllm" if os.environ.get("VLLM_URL") else "builtin")
VLLM_URL = os.environ.get("VLLM_URL", "")
# Attune's own vLLM servers (INFERENCE_BACKEND=vllm with no VLLM_URL): playground/inference/vllm_servers.py.
VLLM_COMMAND = os.environ.get("VLLM_COMMAND") or (
    f"{BASE_DIR / '.venv-vllm' / 'bin' / 'python'} -m vllm.entrypoints.openai.api_server")
VLLM_MAX_LORAS = int(os.environ.get("VLLM_MAX_LORAS", "8"))
VLLM_MAX_LORA_RANK = int(os.environ.get("VLLM_MAX_LORA_RANK") or "16")
VLLM_DTYPE = os.environ.get("VLLM_DTYPE", "auto")
VLLM_KV_CACHE_GB = int(os.environ.get("VLLM_KV_CACHE_GB", "2"))
VLLM_GPU_MEMORY_UTILIZATION = float(os.environ.get("VLLM_GPU_MEMORY_UTILIZATION", "0.4"))
VLLM_MAX_MODEL_LEN = int(os.environ.get("VLLM_MAX_MODEL_LEN", "0"))
VLLM_IDLE_SECONDS = float(os.environ.get("VLLM_IDLE_SECONDS", "900"))
VLLM_MAX_FULL_SERVERS = int(os.environ.get("VLLM_MAX_FULL_SERVERS", "1"))
VLLM_START_TIMEOUT = float(os.environ.get("VLLM_START_TIMEOUT", "300"))
VLLM_EXTRA_ARGS = os.environ.get("VLLM_EXTRA_ARGS", "")
INFERENCE_MAX_FULL_MODELS = int(os.environ.get("INFERENCE_MAX_FULL_MODELS", "2"))
# The base model the new-job form, the datasets' token statistics and the playground start from.
ATTUNE_DEFAULT_BASE_MODEL = os.environ.get("ATTUNE_DEFAULT_BASE_MODEL", "smollm2-135m")
# The built-in backend's budget for the models it keeps loaded (bases and full-weight snapshots, with their
# adapters); past it, the least recently used go first.
INFERENCE_MAX_LOADED_MB = int(os.environ.get("INFERENCE_MAX_LOADED_MB", "8192"))
# The longest prompt (the rendered chat, in tokens) the built-in backend accepts.
INFERENCE_MAX_PROMPT_TOKENS = int(os.environ.get("INFERENCE_MAX_PROMPT_TOKENS", "4096"))
# Generations (compare streams, chat completions) one user may run at once, per web process.
INFERENCE_MAX_CONCURRENT_PER_USER = int(os.environ.get("INFERENCE_MAX_CONCURRENT_PER_USER", "2"))

# Evals (evals/runner.py): runs generated at once (each in a thread of the studio), snapshots of one base
# generated together, items per stored chunk, and the limits of one run and of one user's queue.
EVAL_WORKER_SLOTS = int(os.environ.get("EVAL_WORKER_SLOTS", "1"))
EVAL_BATCH_SNAPSHOTS = int(os.environ.get("EVAL_BATCH_SNAPSHOTS", "8"))
EVAL_CHUNK_ITEMS = int(os.environ.get("EVAL_CHUNK_ITEMS", "16"))
EVAL_CONCURRENT_PROMPTS = int(os.environ.get("EVAL_CONCURRENT_PROMPTS", "8"))
# Eval generation beside a training job on the same CPU cores starves the job (its steps ran 10× slower on
# 2 cores): `auto` waits for the job when there is no GPU, `wait` always, `run` never waits.
EVAL_WHILE_TRAINING = os.environ.get("EVAL_WHILE_TRAINING", "auto")
if EVAL_WHILE_TRAINING not in ("auto", "wait", "run"):
    raise ImproperlyConfigured(f"EVAL_WHILE_TRAINING must be auto, wait or run; got {EVAL_WHILE_TRAINING!r}.")
EVAL_MAX_ITEMS = int(os.environ.get("EVAL_MAX_ITEMS", "10000"))
EVAL_MAX_QUEUED_PER_USER = int(os.environ.get("EVAL_MAX_QUEUED_PER_USER", "100"))
EVAL_STALE_SECONDS = float(os.environ.get("EVAL_STALE_SECONDS", "120"))
# The sandbox of python graders (graders/sandbox.py): CPU seconds and wall seconds per item, memory.
PYTHON_GRADER_CPU_SECONDS = float(os.environ.get("PYTHON_GRADER_CPU_SECONDS", "10"))
PYTHON_GRADER_WALL_SECONDS = float(os.environ.get("PYTHON_GRADER_WALL_SECONDS", "30"))
PYTHON_GRADER_MEMORY_MB = int(os.environ.get("PYTHON_GRADER_MEMORY_MB", "1024"))
# The studio's address as a training engine reaches it (its score_model and label_model graders ask
# <this>/v1/chat/completions). Empty: `manage.py serve` fills in its own address, else http://127.0.0.1:8000.
# Set it on hosts that run `manage.py trainworker` apart from the studio.
ATTUNE_STUDIO_URL = os.environ.get("ATTUNE_STUDIO_URL", "").rstrip("/")

# Uploads stream to disk in chunks; the validator reads them line by line.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(ATTUNE_HOME / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(exist_ok=True)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes): after ATTUNE_LOGIN_FAILURE_LIMIT failed logins with one user name from one
# address, that pair is locked out for ATTUNE_LOGIN_LOCKOUT_MINUTES. API keys do not log in and are unaffected.
ATTUNE_LOGIN_FAILURE_LIMIT = int(os.environ.get("ATTUNE_LOGIN_FAILURE_LIMIT", "5"))
ATTUNE_LOGIN_LOCKOUT_MINUTES = int(os.environ.get("ATTUNE_LOGIN_LOCKOUT_MINUTES", "15"))
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = ATTUNE_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ATTUNE_LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner on every management command
AXES_LOCKOUT_CALLABLE = "config.access.login_locked_out"
# The address is the connection's own (REMOTE_ADDR), which the server sets from X-Forwarded-For only for
# the proxies in FORWARDED_ALLOW_IPS when TRUST_PROXY_HEADERS is on.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)

SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
def _plotly_dir():
    import plotly

    return Path(plotly.__file__).parent / "package_data"


# plotly.min.js comes from the plotly package itself: no CDN, works offline.
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", _plotly_dir())]
STATIC_ROOT = ATTUNE_HOME / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}

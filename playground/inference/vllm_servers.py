"""vLLM servers that Attune starts and supervises itself (INFERENCE_BACKEND=vllm with no VLLM_URL).

    pool = VLLMServerPool(ServerSettings.from_django())
    server = pool.ensure(snapshot)      # blocks until it answers /health; raises InferenceError
    with pool.in_use(server): ...       # a request in flight keeps it from being stopped as idle
    pool.status()                        # what the Base models page shows

- One server per base model, started on first use with `--enable-lora`; the base
  and all its LoRA snapshots share it, the adapters loaded at run time.
- A full-weight snapshot gets a server of its own. At most `max_full_servers` of
  those run at once; past that, the least recently used idle one is stopped.
- Each server listens on a free loopback port with an API key of its own, and
  writes its output to a log under ATTUNE_HOME/logs/vllm/.
- A supervisor thread restarts a server that crashed (back-off 5 s, 10 s, 20 s …
  up to 5 minutes) and stops one that has been idle for `idle_seconds`.
- A server that cannot start (no vLLM installed, a model vLLM cannot serve, no
  memory) is an InferenceError that says what to do, with the log's last line;
  nothing waits past `start_timeout`.

Each server runs in a process group of its own (vLLM starts an engine process
under its API server), and is stopped as a group: a server that crashed leaves
no engine behind. The studio stops them all when it stops (`stop_all`, also at
exit).
"""

import atexit
import hashlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from playground.inference.base import InferenceError, local_device
from playground.snapshots import FULL

STARTING, READY, CRASHED, FAILED, STOPPED = "starting", "ready", "crashed", "failed", "stopped"
BACKOFF_FIRST_S, BACKOFF_MAX_S = 5.0, 300.0
FAILED_RETRY_S = 30.0     # a server that failed to start is tried again on a request this long after
LOG_TAIL_LINES = 40


@dataclass
class ServerSettings:
    command: list                     # the program that runs vLLM's OpenAI server, with its first arguments
    log_dir: Path
    max_loras: int = 8                # adapters in one batch
    max_cpu_loras: int = 32           # adapters kept loaded
    max_lora_rank: int = 16
    dtype: str = "auto"               # auto: float32 on a CPU (bf16 is slower there), the model's dtype on a GPU
    kv_cache_gb: int = 2              # CPU only: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_utilization: float = 0.4   # GPU only: the share of its memory each server takes
    max_model_len: int = 0            # 0: the model's own
    idle_seconds: float = 900.0
    max_full_servers: int = 1
    start_timeout: float = 300.0
    extra_args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)   # more environment for each server

    @classmethod
    def from_django(cls):
        from django.conf import settings

        return cls(command=shlex.split(settings.VLLM_COMMAND), log_dir=Path(settings.ATTUNE_HOME) / "logs" / "vllm",
                   max_loras=settings.VLLM_MAX_LORAS, max_cpu_loras=max(settings.VLLM_MAX_LORAS, 32),
                   max_lora_rank=settings.VLLM_MAX_LORA_RANK or 16, dtype=settings.VLLM_DTYPE,
                   kv_cache_gb=settings.VLLM_KV_CACHE_GB, gpu_memory_utilization=settings.VLLM_GPU_MEMORY_UTILIZATION,
                   max_model_len=settings.VLLM_MAX_MODEL_LEN, idle_seconds=settings.VLLM_IDLE_SECONDS,
                   max_full_servers=settings.VLLM_MAX_FULL_SERVERS, start_timeout=settings.VLLM_START_TIMEOUT,
                   extra_args=shlex.split(settings.VLLM_EXTRA_ARGS))


class ManagedServer:
    """One vLLM process and what is known of it; the pool's lock guards every field."""

    def __init__(self, key, model_path, served_name, lora, log_path):
        self.key = key
        self.model_path = model_path
        self.served_name = served_name
        self.lora = lora
        self.log_path = log_path
        # Hex, never URL-safe base64: a key that starts with '-' reads as an option on vLLM's command line.
        self.api_key = secrets.token_hex(24)
        self.state = STOPPED
        self.process = None
        self.port = None
        self.generation = 0         # one more at each start: adapters loaded before are gone
        self.started_at = None
        self.ready_at = None
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.restarts = 0           # crashes since it last served
        self.next_start_at = None   # when a crashed server is started again
        self.error = ""
        self.failed_at = None
        self.ready = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines=LOG_TAIL_LINES):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
                text = "".join(deque(f.read().decode("utf-8", "replace").splitlines(keepends=True), maxlen=lines))
        except OSError:
            return ""
        return text.replace(self.api_key, "***")  # vLLM prints its arguments, the key among them

    def as_dict(self):
        now = time.monotonic()
        return {"key": self.key, "model": self.model_path, "served_name": self.served_name,
                "kind": "LoRA snapshots" if self.lora else "full weights", "state": self.state, "port": self.port,
                "pid": self.process.pid if self.process and self.state in (STARTING, READY) else None,
                "up_s": int(now - self.ready_at) if self.state == READY and self.ready_at else None,
                "idle_s": int(now - self.last_used), "in_flight": self.in_flight, "restarts": self.restarts,
                "next_start_in_s": int(self.next_start_at - now) if self.next_start_at else None,
                "error": self.error, "log_path": str(self.log_path), "log_tail": self.log_tail()}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slug(text):
    tail = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(text.rstrip("/")).name)[-40:]
    return f"{tail}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _last_error_line(log_tail):
    """The line of a log most likely to say why a start failed."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error:" in line or "rror" in line.split(":")[0]:
            return line[-400:]
    return lines[-1][-400:] if lines else "(the log is empty)"


class VLLMServerPool:
    def __init__(self, settings, on_gpu=None):
        self.settings = settings
        self.on_gpu = local_device() == "cuda" if on_gpu is None else on_gpu
        self._servers = {}          # key -> ManagedServer
        self._lock = threading.RLock()
        self._closed = False
        self._supervisor = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
        self._wake = threading.Event()
        self._supervisor.start()
        atexit.register(self.stop_all)

    # What the backend asks ---------------------------------------------------------------

    def server_key(self, snapshot):
        if snapshot.kind == FULL:
            return "full:" + snapshot.weights_path
        return "base:" + snapshot.base_path

    def ensure(self, snapshot):
        """The running server for this snapshot, started (and waited for) when it is not."""
        key = self.server_key(snapshot)
        with self._lock:
            if self._closed:
                raise InferenceError("The studio is stopping; its vLLM servers are stopped.")
            server = self._servers.get(key)
            if server is None:
                full = snapshot.kind == FULL
                model_path = snapshot.weights_path if full else snapshot.base_path
                name = snapshot.name if full else snapshot.base_model
                server = ManagedServer(key, model_path, name, lora=not full,
                                       log_path=self.settings.log_dir / f"{_slug(model_path)}.log")
                self._servers[key] = server
            server.last_used = now = time.monotonic()
            if server.state == READY and server.process.poll() is not None:
                self._note_crash(server, now)  # found before the supervisor's next round
            if server.state == FAILED and server.failed_at and now - server.failed_at < FAILED_RETRY_S:
                raise InferenceError(server.error, code="inference_server_unavailable")
            if server.state == CRASHED and server.restarts > 1 and server.next_start_at > now:
                raise InferenceError(f"The vLLM server for {server.model_path} crashed {server.restarts} times; "
                                     f"it is started again in {server.next_start_at - now:.0f} s. Its log: "
                                     f"{server.log_path}.", code="inference_server_unavailable")
            if server.state in (STOPPED, CRASHED, FAILED):
                if not server.lora:
                    self._make_room_for_full(server)
                self._start(server)
        self._wait_ready(server)
        return server

    @contextmanager
    def in_use(self, server):
        with self._lock:
            server.in_flight += 1
            server.last_used = time.monotonic()
        try:
            yield server
        finally:
            with self._lock:
                server.in_flight -= 1
                server.last_used = time.monotonic()

    def went_away(self, server):
        """A request found the server gone: let the supervisor look now rather than at its next round."""
        self._wake.set()

    def status(self):
        with self._lock:
            return [s.as_dict() for s in self._servers.values()]

    def stop_all(self):
        with self._lock:
            self._closed = True
            servers = list(self._servers.values())
        for server in servers:
            self._stop(server, STOPPED)
        self._wake.set()

    # Starting and stopping -------------------------------------------------------------------

    def _command(self, server):
        s = self.settings
        dtype = s.dtype if s.dtype != "auto" or self.on_gpu else "float32"
        args = [*s.command, "--model", server.model_path, "--served-model-name", server.served_name,
                "--host", "127.0.0.1", "--port", str(server.port), "--api-key", server.api_key, "--dtype", dtype]
        if server.lora:
            args += ["--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(s.max_loras),
                     "--max-cpu-loras", str(s.max_cpu_loras)]
        if s.max_model_len:
            args += ["--max-model-len", str(s.max_model_len)]
        if self.on_gpu:
            args += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        return args + s.extra_args

    def _start(self, server):
        """Start the process (the pool's lock held); `_wait_ready` waits for it to answer."""
        program = self.settings.command[0] if self.settings.command else ""
        if not program or ("/" in program and not Path(program).exists()):
            self._mark_failed(server, f"vLLM is not installed: {program or 'VLLM_COMMAND'} does not exist. Run "
                                      "`make vllm` to build .venv-vllm, or set VLLM_COMMAND to a vLLM OpenAI server "
                                      "command (or VLLM_URL to a server run elsewhere, or INFERENCE_BACKEND=builtin).")
            return
        server.port = _free_port()
        server.generation += 1
        server.error = ""
        server.ready.clear()
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
                   VLLM_CPU_KVCACHE_SPACE=str(self.settings.kv_cache_gb), PYTHONUNBUFFERED="1", **self.settings.env)
        command = self._command(server)
        with open(server.log_path, "ab") as log:
            shown = shlex.join(command).replace(server.api_key, "***")
            log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shown}\n".encode())
            log.flush()
            try:
                server.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except OSError as exc:
                self._mark_failed(server, f"vLLM could not be started ({shown.split()[0]}): {exc}. Run `make vllm`.")
                return
        server.state = STARTING
        server.started_at = time.monotonic()
        server.next_start_at = None

    def _wait_ready(self, server):
        deadline = time.monotonic() + self.settings.start_timeout
        while not server.ready.is_set():
            self._check_start(server, deadline)
            server.ready.wait(1.0)
        with self._lock:
            if server.state != READY:
                raise InferenceError(server.error or f"The vLLM server for {server.model_path} is {server.state}.",
                                     code="inference_server_unavailable")

    def _check_start(self, server, deadline):
        """One look at a starting server: ready, dead, or out of time. Its /health is asked outside the lock."""
        with self._lock:
            if server.state != STARTING:
                return
            generation, process, url = server.generation, server.process, server.url
            headers = {"Authorization": f"Bearer {server.api_key}"}
        try:
            answered = httpx.get(url + "/health", timeout=2.0, headers=headers).status_code == 200
        except httpx.HTTPError:
            answered = False
        with self._lock:
            if server.state != STARTING or server.generation != generation:
                return
            self._starting_seen(server, process, answered, deadline)

    def _starting_seen(self, server, process, answered, deadline):
        code = process.poll()
        if code is not None:
            tail = server.log_tail()
            hint = ("out of memory: lower VLLM_KV_CACHE_GB or VLLM_MAX_MODEL_LEN, or stop other servers"
                    if "memory" in tail.lower() else "see its log on the Base models page")
            self._mark_failed(server, f"The vLLM server for {server.model_path} exited with code {code} while "
                                      f"starting: {_last_error_line(tail)} ({hint}; log: {server.log_path}).")
            return
        if answered:
            server.state = READY
            server.ready_at = time.monotonic()
            server.restarts = 0
            server.ready.set()
        elif time.monotonic() > deadline:
            self._terminate(process)
            self._mark_failed(server, f"The vLLM server for {server.model_path} did not answer within "
                                      f"{self.settings.start_timeout:.0f} s (VLLM_START_TIMEOUT); "
                                      f"its log: {server.log_path}.")

    def _mark_failed(self, server, message):
        server.state = FAILED
        server.error = message
        server.failed_at = time.monotonic()
        server.ready.set()

    def _make_room_for_full(self, server):
        if self.settings.max_full_servers < 1:
            raise InferenceError("VLLM_MAX_FULL_SERVERS is 0: full-weight snapshots are not served here; raise it "
                                 "to give them vLLM servers.", param="model", code="inference_server_busy")
        running = [s for s in self._servers.values()
                   if not s.lora and s is not server and s.state in (STARTING, READY)]
        while len(running) >= self.settings.max_full_servers:
            idle = [s for s in running if s.in_flight == 0 and s.state == READY]
            if not idle:
                raise InferenceError(
                    f"All {self.settings.max_full_servers} vLLM server(s) for full-weight snapshots are busy; "
                    "ask again when one is done, or raise VLLM_MAX_FULL_SERVERS.", param="model",
                    code="inference_server_busy")
            oldest = min(idle, key=lambda s: s.last_used)
            self._stop(oldest, STOPPED, "stopped to make room for another full-weight snapshot")
            running.remove(oldest)

    def _stop(self, server, state, reason=""):
        with self._lock:
            process, server.process = server.process, None
            server.state = state
            server.error = reason
            server.ready.set()
        if process is not None:
            self._terminate(process)

    @staticmethod
    def _terminate(process, grace=20.0):
        """Stop a server's process group: SIGTERM, then SIGKILL for what is left after `grace`."""
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(process, signal.SIGKILL)  # the engine process, if it outlived its API server
        process.wait()

    # The supervisor ------------------------------------------------------------------------------

    def _supervise(self):
        while not self._closed:
            self._wake.wait(2.0)
            self._wake.clear()
            try:
                self.supervise_once()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one server's trouble
                import logging

                logging.getLogger(__name__).exception("vLLM supervisor")

    def _note_crash(self, server, now):
        """A ready server's process has exited (the pool's lock held): clean up, and plan its restart."""
        _signal_group(server.process, signal.SIGKILL)
        server.restarts += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (server.restarts - 1))
        server.state = CRASHED
        server.error = (f"exited with code {server.process.returncode}: "
                        f"{_last_error_line(server.log_tail())}; starting again in {delay:.0f} s")
        server.next_start_at = now + delay
        server.ready.set()

    def supervise_once(self):
        now = time.monotonic()
        to_stop = []
        with self._lock:
            if self._closed:
                return
            starting = [s for s in self._servers.values() if s.state == STARTING]
            for server in self._servers.values():
                if server.state == READY and server.process.poll() is not None:
                    self._note_crash(server, now)
                elif server.state == CRASHED and server.next_start_at and now >= server.next_start_at:
                    if now - server.last_used > self.settings.idle_seconds:
                        server.state, server.next_start_at = STOPPED, None
                    else:
                        self._start(server)
                elif (server.state == READY and server.in_flight == 0
                      and now - server.last_used > self.settings.idle_seconds):
                    to_stop.append(server)
        for server in starting:
            self._check_start(server, server.started_at + self.settings.start_timeout)
        for server in to_stop:
            self._stop(server, STOPPED, f"stopped after {self.settings.idle_seconds:.0f} s idle (VLLM_IDLE_SECONDS)")


def _signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass



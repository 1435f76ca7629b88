"""Running a python grader's `grade(sample, item)` in a separate, shut-in process (sandbox_runner.py says
what it may and may not do).

One process grades a whole batch, item after item, so a batch pays one process start (about 50 ms).
Each item has its own limits: CPU time (the process stops grade() with an error; the parent kills it
when grade() is stuck in C code past its time), wall-clock time and output size (the parent kills it).
An item whose process was killed or crashed gets python_grader_runtime_error with the reason, and a
fresh process grades the items after it. A process that cannot be started or shut in gives
python_grader_server_error to the items it would have graded.
"""

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
# Room for a result line's traceback (up to 8000 characters, JSON-escaped) beyond what the grader prints.
_CHANNEL_OVERHEAD = 64 * 1024
_PIPE_BUFFER = 60 * 1024  # Linux gives a pipe 64 KiB


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """What one python grader may use."""

    cpu_seconds: float = 10  # CPU time per item
    memory_mb: int = 1024  # address space of the process (RLIMIT_AS)
    output_kb: int = 64  # what grade() may print per item; the rest is dropped
    source_kb: int = 256  # the grader's source, checked at validation (OpenAI's limit)
    wall_seconds: float = 30  # wall-clock time per item, and for starting the process


@dataclasses.dataclass
class PythonOutcome:
    score: float | None = None
    flag: str | None = None  # python_grader_runtime_error | python_grader_server_error
    details: str | None = None
    server_error_type: str | None = None


class _Killed(Exception):
    pass


def run_python(source, calls, limits=None):
    """One PythonOutcome per (sample, item) of `calls`, in order."""
    limits = limits or SandboxLimits()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="attune-grader-root-") as empty:
        os.chmod(empty, 0o555)
        while len(outcomes) < len(calls):
            left = calls[len(outcomes):]
            runner = _Runner(empty, limits, len(left))
            try:
                failure = runner.start(source)
                if failure is not None:
                    outcomes.extend(dataclasses.replace(failure) for _ in left)
                    break
                for sample, item in left:
                    outcome = runner.grade(sample, item)
                    outcomes.append(outcome)
                    if runner.dead:
                        break
            finally:
                runner.stop()
    return outcomes


class _Runner:
    def __init__(self, empty_dir, limits, items):
        self.empty_dir, self.limits, self.items = empty_dir, limits, items
        self.process, self.pending, self.dead = None, b"", False
        self.line_cap = limits.output_kb * 1024 + _CHANNEL_OVERHEAD
        self.clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def start(self, source):
        """None when the process is ready to grade, else the outcome every item gets."""
        settings = {"cpu_seconds": self.limits.cpu_seconds, "memory_mb": self.limits.memory_mb,
                    "output_kb": self.limits.output_kb, "items": self.items}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(RUNNER), json.dumps(settings), self.empty_dir],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={}, start_new_session=True, close_fds=True)
        except OSError as error:
            return PythonOutcome(flag="python_grader_server_error", server_error_type=type(error).__name__,
                                 details=f"cannot start the sandbox: {error}")
        try:
            self.send({"source": source})
            reply = self.receive()
        except _Killed as error:
            return PythonOutcome(flag="python_grader_server_error", server_error_type="SandboxStartError",
                                 details=f"the sandbox did not start: {error}")
        if "server_error" in reply:
            return PythonOutcome(flag="python_grader_server_error", server_error_type=reply["server_error"],
                                 details=reply.get("details"))
        if not reply.get("ready"):
            return PythonOutcome(flag="python_grader_runtime_error",
                                 details=f"{reply.get('error')}\n{reply.get('details') or ''}".strip())
        return None

    def grade(self, sample, item):
        try:
            self.send({"sample": sample, "item": item})
            reply = self.receive()
        except _Killed as error:
            return PythonOutcome(flag="python_grader_runtime_error", details=str(error))
        if "score" in reply and isinstance(reply["score"], float):
            return PythonOutcome(score=reply["score"])
        if isinstance(reply.get("error"), str):
            return PythonOutcome(flag="python_grader_runtime_error",
                                 details=f"{reply['error']}\n{reply.get('details') or ''}".strip())
        self.kill()
        return PythonOutcome(flag="python_grader_runtime_error",
                             details="grade() wrote over the sandbox's result channel")

    def send(self, message):
        line = json.dumps(message).encode() + b"\n"
        # The process reads each line before it writes anything back, so a write that fills the pipe ends
        # unless the process hangs before reading; the timer kills it then. A line that fits in the pipe's
        # buffer cannot block and needs no timer (starting a thread would double the cost of an item).
        watchdog = threading.Timer(self.limits.wall_seconds, self.kill) if len(line) > _PIPE_BUFFER else None
        if watchdog:
            watchdog.start()
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except OSError:
            raise _Killed(self.ended()) from None
        finally:
            if watchdog:
                watchdog.cancel()

    def receive(self):
        """The next line from the process, as a dict; _Killed when the item's limits run out first."""
        # The CPU clock is read only once the answer is late: most items answer within the first wait.
        started, cpu_start, late = time.monotonic(), None, False
        wall_limit, cpu_limit = self.limits.wall_seconds, self.limits.cpu_seconds
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            if len(self.pending) > self.line_cap:
                self.kill()
                raise _Killed(f"grade() wrote more than the {self.limits.output_kb} KB output limit; "
                              "the sandbox process was stopped")
            waited = time.monotonic() - started
            if waited >= wall_limit:
                self.kill()
                raise _Killed(f"grade() ran past its {wall_limit:g} s wall-clock limit and was stopped")
            readable, _, _ = select.select([fd], [], [], min(wall_limit - waited, 0.05))
            if not readable:
                if not late:
                    late, cpu_start = True, self.cpu_seconds_used()
                elif cpu_start is not None and self.cpu_seconds_used() - cpu_start > cpu_limit + 0.5:
                    self.kill()
                    raise _Killed(f"grade() used more than its {cpu_limit:g} s of CPU time and was stopped")
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Killed(self.ended())
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.kill()
            raise _Killed("grade() wrote over the sandbox's result channel; the sandbox process was stopped")
        return reply

    def cpu_seconds_used(self):
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self.clock_ticks  # utime + stime

    def ended(self):
        self.dead = True
        code = self.process.wait()
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": "its CPU time limit", "SIGKILL": "being killed (memory or CPU time)"}
            return f"the sandbox process ended with {name}" + (f", from {why[name]}" if name in why else "")
        return f"the sandbox process exited with status {code}"

    def kill(self):
        self.dead = True
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self):
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
        self.process.stdout.close()

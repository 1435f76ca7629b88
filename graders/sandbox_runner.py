"""The sandboxed process that runs a python grader's `grade(sample, item)`.

Started by graders/sandbox.py as `python -I -S sandbox_runner.py LIMITS_JSON EMPTY_DIR`. It imports the
modules a grader may use, shuts itself in, and only then reads the grader's source, so no grader code
runs before the walls are up. Then, one JSON line each way:

    in:  {"source": "..."}                 out: {"ready": true} | {"server_error": TYPE, "details": ...}
    in:  {"sample": {...}, "item": {...}}  out: {"score": x} | {"error": "...", "details": "..."}

As root (a server): a network namespace of its own with no interface (unshare CLONE_NEWNET), chroot into
an empty read-only folder, a uid of its own (no other process's, so it can signal none) with gid nobody
and no groups, no new privileges. Always: rlimits on address space, CPU time, file size 0 (no writes),
open files, processes (no fork, no threads) and core dumps; an audit hook that refuses files, sockets,
processes, signals and ctypes; `import` limited to ALLOWED; print() kept in a capped buffer; input()
sees an empty stdin. Not root (a developer's machine): the same without the namespace, chroot and uid,
so files and the network are refused only by the audit hook, which keeps honest mistakes out but is no
wall against a grader written to get around it.

This file imports only the standard library: `-S` leaves site-packages off the path.
"""

import builtins
import io
import json
import linecache
import math
import os
import resource
import signal
import sys
import traceback

ALLOWED = ("math", "re", "json", "statistics", "string", "collections", "itertools", "functools", "difflib",
           "datetime", "random", "fractions", "decimal", "unicodedata")
for _name in ALLOWED + ("_strptime",):  # datetime.strptime imports _strptime on first use
    __import__(_name)

CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534
# Audit events refused once the grader's code may run. "open" covers open(), io.open and os.open.
REFUSED_EVENTS = ("open", "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                  "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.remove", "os.rename", "os.rmdir",
                  "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.symlink", "os.link", "os.listdir",
                  "os.scandir", "os.chdir", "os.putenv", "os.unsetenv", "ctypes.", "shutil.", "pty.", "mmap.",
                  "fcntl.", "resource.setrlimit", "signal.pthread_kill", "sys.setprofile", "sys.settrace", "urllib.",
                  "http.", "ftplib.", "smtplib.", "telnetlib.", "poplib.", "imaplib.", "nntplib.", "webbrowser.",
                  "sqlite3.", "glob.", "tempfile.", "winreg.", "import")


class CpuLimit(BaseException):
    """Raised inside grade() when its CPU time is up (a BaseException, so `except Exception` in the
    grader does not swallow it)."""


class CappedText(io.TextIOBase):
    """What print() writes, kept up to `limit` characters."""

    def __init__(self, limit):
        self.limit, self.parts, self.size = limit, [], 0

    def writable(self):
        return True

    def write(self, text):
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        return len(text)

    def take(self):
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        return text


def main():
    limits = json.loads(sys.argv[1])
    empty_dir = sys.argv[2]
    channel_in = os.fdopen(os.dup(0), "rb", buffering=0)
    channel_out = os.fdopen(os.dup(1), "wb", buffering=0)
    reader = io.BufferedReader(channel_in)
    try:
        isolated = shut_in(empty_dir, limits)
    except Exception as error:  # noqa: BLE001 - anything here is the server's fault, not the grader's
        send(channel_out, {"server_error": type(error).__name__, "details": f"sandbox setup: {error}"})
        return
    output = CappedText(limits["output_kb"] * 1024)
    sys.stdout = sys.stderr = output
    sys.stdin = io.StringIO("")
    namespace = grader_namespace()
    sys.addaudithook(refuse_outside_access)
    signal.setitimer(signal.ITIMER_PROF, 0)

    request = json.loads(reader.readline())
    source = request["source"]
    # Tracebacks show the grader's lines from here; the file itself is nowhere the grader could read it.
    linecache.cache["grader.py"] = (len(source), None, source.splitlines(True), "grader.py")
    try:
        with cpu_budget(limits["cpu_seconds"]):
            exec(compile(source, "grader.py", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source defines no function grade(sample, item)")
    except BaseException as error:  # noqa: BLE001 - the grader's own failure, reported for every item
        failure = {"error": f"the source failed to load: {type(error).__name__}: {error}",
                   "details": details(error, output)}
        send(channel_out, {"ready": False, **failure})
        return
    send(channel_out, {"ready": True, "isolated": isolated})

    for line in reader:
        request = json.loads(line)
        try:
            with cpu_budget(limits["cpu_seconds"]):
                value = grade(request["sample"], request["item"])
            result = {"score": finite_score(value)}
        except CpuLimit:
            result = {"error": f"grade() used more than its {limits['cpu_seconds']} s of CPU time",
                      "details": output.take()}
        except BaseException as error:  # noqa: BLE001 - MemoryError, RecursionError, SystemExit, …
            result = {"error": f"{type(error).__name__}: {error}", "details": details(error, output)}
        output.take()
        send(channel_out, result)


def shut_in(empty_dir, limits):
    """Put up the walls; True when the namespace, chroot and uid are up (running as root)."""
    isolated = os.geteuid() == 0
    if isolated:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET | CLONE_NEWIPC) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        os.chroot(empty_dir)
        os.chdir("/")
        os.setgroups([])
        os.setgid(NOBODY)
        # A uid no other process has: a grader can then signal nothing but itself.
        os.setuid(2_000_000_000 + os.getpid() % 1_000_000_000)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        del sys.modules["ctypes"]
    memory = limits["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # A backstop for the whole batch; each item's own budget is the profiling timer below, and the parent
    # kills a process whose item runs past its CPU or wall time.
    total = int(limits["cpu_seconds"] * limits["items"] + 5)
    resource.setrlimit(resource.RLIMIT_CPU, (total, total + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the size limit fails instead of killing
    return isolated


def grader_namespace():
    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name.split(".")[0] not in ALLOWED:
            raise ImportError(f"a python grader may import only {', '.join(ALLOWED)}; not {name}")
        return real_import(name, globals, locals, fromlist, level)

    real_import = builtins.__import__
    safe_builtins = dict(vars(builtins))
    safe_builtins["__import__"] = guarded_import
    for name in ("open", "input", "breakpoint", "exit", "quit", "help"):
        safe_builtins.pop(name, None)
    return {"__builtins__": safe_builtins, "__name__": "grader"}


def refuse_outside_access(event, args):
    if event.startswith(REFUSED_EVENTS):
        raise PermissionError(f"a python grader may not do {event}")


class cpu_budget:
    """Raise CpuLimit in the grader's code once it has used `seconds` of CPU time."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        signal.setitimer(signal.ITIMER_PROF, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_PROF, 0)


def on_cpu_limit(signum, frame):
    raise CpuLimit


def finite_score(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"grade() returned {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"grade() returned {value}, not a finite number")
    return float(value)


def details(error, output):
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    # The runner's own frames say nothing about the grader.
    text = "".join(line for line in lines if "sandbox_runner.py" not in line)
    printed = output.take()
    return (text + ("\nprinted:\n" + printed if printed else ""))[-8000:]


def send(channel, message):
    channel.write(json.dumps(message).encode() + b"\n")


if __name__ == "__main__":
    signal.signal(signal.SIGPROF, on_cpu_limit)
    main()

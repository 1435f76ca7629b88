"""`python -m training.engine.torchrun …`: torchrun (torch.distributed.run, with the same arguments), except
that SIGUSR1, the engine's pause, is handed on to the ranks instead of ending torchrun.

torchrun starts each rank in a session of its own, so a signal to torchrun's process group does not reach
them, and it handles only SIGTERM, SIGINT, SIGHUP and SIGQUIT: SIGUSR1 would kill it and leave its ranks
training on with nobody waiting for them. Here torchrun passes SIGUSR1 to its children (the ranks) and waits
for them as for any end: they save their state at the step's end and exit 0, and so does torchrun. Under a
scheduler that signals every process of the job (Slurm's `scancel --signal`), a rank gets it twice, which is
the same as once.

The ranks, for their part, die with torchrun (training/engine/__main__.py), so a torchrun that is killed
leaves none of them writing into the job folder.
"""

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    except OSError:
        return None


_LIBC = _libc()


def die_with_parent():
    """SIGKILL to this process when the thread that started it ends (Linux; elsewhere nothing). The worker's
    engine child sets it (training/launch.py), and so does each rank under torchrun (__main__.py)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def children(pid):
    """The pids whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …", where comm may hold spaces and parentheses
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _hand_on(signum, frame):
    for pid in children(os.getpid()):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def main():
    signal.signal(signal.SIGUSR1, _hand_on)
    from torch.distributed.run import main as torchrun

    torchrun()


if __name__ == "__main__":
    main()

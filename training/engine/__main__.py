"""`python -m training.engine SPEC.json [--resume]` (also under torchrun / accelerate launch)."""

import os
import sys


def _die_with_torchrun():
    # A rank under torchrun sits in a session of its own: when torchrun is killed (with its worker, or by a
    # scheduler), no signal to torchrun's group reaches the rank. SIGKILL on the parent's death ends it too.
    from .torchrun import die_with_parent

    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # torchrun died before the line above
        os._exit(1)


def main():
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _die_with_torchrun()
    # stdout carries protocol lines only. Keep a private copy of it, then point fd 1 (and sys.stdout) at
    # stderr, so whatever a library prints (progress bars, W&B banners, warnings) lands in the log instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .run import main as run_main

    sys.exit(run_main(sys.argv[1:], protocol))


if __name__ == "__main__":
    main()

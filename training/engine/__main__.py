"""`python -m training.engine SPEC.json [--resume]` (also under torchrun / accelerate launch)."""

import os
import sys


def main():
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

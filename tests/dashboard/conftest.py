"""The playground's tiny models serve the checkpoint download tests too: the same snapshots, registered as a
job with epoch checkpoints (tests/playground/conftest.py builds them once and reuses the files)."""

from tests.playground.conftest import builtin_backend, snapshots, tiny_models  # noqa: F401

"""Public ids and timestamps in the formats of the OpenAI API: `file-…`, `ftjob-…`, `ftckpt_…`, `ftevent-…`, and
Attune's own sweeps, `sweep-…`; times as unix seconds."""

import secrets
import string

ALPHABET = string.ascii_letters + string.digits


def random_tail(length=24):
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_file_id():
    return "file-" + random_tail()


def new_job_id():
    return "ftjob-" + random_tail()


def new_checkpoint_id():
    return "ftckpt_" + random_tail()


def new_event_id():
    return "ftevent-" + random_tail()


def new_sweep_id():
    return "sweep-" + random_tail()


def new_model_tag():
    """The 8-character segment that ends a fine-tuned model's name."""
    return random_tail(8)


def unix(dt):
    """A datetime as the API's unix seconds; None stays None."""
    return int(dt.timestamp()) if dt else None

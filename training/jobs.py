"""Creating fine-tuning jobs: the one path the new-job form, re-run and `POST /v1/fine_tuning/jobs` share.

`create_job(spec, user, parent=None, metadata=None)` follows the contract's
lifecycle (openai-contract.md §3.5, §3.6):

1. The spec is checked against `JobSpec`; an unknown key or a value out of
   range raises `JobError` naming the field. So do an unknown base model and
   an unknown file id: those make no job at all.
2. The job is stored in `validating_files` with the events
   "Created fine-tuning job: …" and "Validating training file: …".
3. A file that failed validation (or holds the wrong format for the method)
   fails the job with `error = {code, message, param}`, e.g.
   `invalid_n_examples` / `training_file`, as OpenAI does.
4. Otherwise `auto` is resolved with the training file's example count, the
   resolved spec is stored next to the requested one, and the job is queued
   ("Files validated, moving job to queued state").

The stored `spec` is the `JobSpec` dict as requested (`auto` kept, every
default filled in) with `model` = the base model's name and the files as
public ids; `job_id` and `output_dir` are the worker's to fill.
"""

import secrets
from pathlib import PurePath

from django.db import transaction
from django.utils import timezone

from training.models import BaseModel, DataFile, FineTuningJob

# Filled in by the worker for each run; a request that sets them is refused.
WORKER_FIELDS = ("job_id", "output_dir")
MAX_METADATA_PAIRS = 16


class JobError(Exception):
    """A request that cannot become (or change) a job. `param` names the field, as the API's `param`."""

    def __init__(self, param, message, code="invalid_request", errors=None):
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
        # Every (field, message) found, for forms that show each error next to its field.
        self.errors = errors or [(param, message)]

    def as_dict(self):
        return {"param": self.param, "message": self.message, "code": self.code}


def check_spec(spec):
    """The typed spec of a request, or JobError naming the first bad field (all of them in `.errors`)."""
    from training.engine.spec import JobSpec, spec_errors

    if not isinstance(spec, dict):
        raise JobError(None, "The job spec must be a JSON object.", "invalid_spec")
    for name in WORKER_FIELDS:
        if spec.get(name) not in (None, ""):
            raise JobError(name, f"'{name}' is set by Attune for each job; leave it out.", "invalid_spec")
    errors = spec_errors(spec)
    if errors:
        field, message = errors[0]
        code = "unknown_parameter" if message.startswith("unknown field") else "invalid_value"
        raise JobError(field, f"{field}: {message}", code, errors=errors)
    typed = JobSpec.model_validate(spec)
    _check_integration_paths(typed)
    return typed


def _check_integration_paths(typed):
    # Paths typed by a person stay inside the job folder: a relative path without `..`.
    board = typed.integrations.tensorboard
    if board is not None and board.log_dir:
        path = PurePath(board.log_dir)
        if path.is_absolute() or ".." in path.parts:
            raise JobError("integrations.tensorboard.log_dir",
                           "integrations.tensorboard.log_dir: give a folder relative to the job folder, "
                           "without '..' (leave it empty for <job>/tensorboard).", "invalid_value")
    flow = typed.integrations.mlflow
    if flow is not None:
        uri = flow.tracking_uri
        if not uri.startswith(("http://", "https://", "databricks")):
            local = PurePath(uri.removeprefix("file://").removeprefix("file:"))
            if local.is_absolute() or ".." in local.parts:
                raise JobError("integrations.mlflow.tracking_uri",
                               "integrations.mlflow.tracking_uri: use an http(s) tracking server, or a folder "
                               "relative to the job folder without '..'.", "invalid_value")


def _check_metadata(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise JobError("metadata", "metadata must be an object of string keys and string values.",
                       "invalid_value")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise JobError("metadata", f"metadata holds {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} "
                                   "are allowed.", "invalid_value")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise JobError(f"metadata.{key}", f"metadata.{key}: keys and values must be strings.",
                           "invalid_value")
        if len(key) > 64:
            raise JobError("metadata", f"metadata key {key[:20]!r}… is longer than 64 characters.",
                           "invalid_value")
        if len(value) > 512:
            raise JobError(f"metadata.{key}", f"metadata.{key} is longer than 512 characters.", "invalid_value")
    return metadata


def _find_base_model(name):
    base = BaseModel.objects.filter(name=name).first()
    if base is None:
        known = ", ".join(BaseModel.objects.values_list("name", flat=True)[:20]) or "none yet"
        hint = " Continuing training from an ft: model is not supported." if name.startswith("ft:") else ""
        raise JobError("model", f"Unknown base model '{name}'. Known base models: {known}.{hint}",
                       "model_not_found")
    return base


def _find_file(file_id, param):
    if file_id is None:
        return None
    data_file = DataFile.objects.filter(public_id=file_id).first()
    if data_file is None:
        raise JobError(param, f"No file with id '{file_id}' ({param}). Upload it first, or pick one of the "
                              "files listed on the datasets page.", "file_not_found")
    if data_file.purpose != "fine-tune":
        raise JobError(param, f"File {file_id} ({param}) has purpose '{data_file.purpose}'; a job needs a "
                              "file uploaded with purpose 'fine-tune'.", "invalid_file_purpose")
    return data_file


def file_problem(data_file, param, method):
    """(code, message) when `data_file` cannot feed this job, else None."""
    if data_file is None:
        return None
    label = "Training file" if param == "training_file" else "Validation file"
    if not data_file.usable:
        first = (data_file.errors or [{}])[0]
        code = first.get("code") or "invalid_file"
        message = first.get("message") or data_file.status_details or "the file failed validation"
        if code == "invalid_n_examples":
            # The datasets report speaks of any file; name the one this job uses.
            message = message.replace("Training file", label)
        else:
            more = f" ({data_file.n_errors} errors in all; see the file's report)" if data_file.n_errors > 1 else ""
            message = f"{label} {data_file.public_id} is invalid: {message}{more}"
        return code, message
    wanted = "preference" if method == "dpo" else "chat"
    if data_file.format and data_file.format != wanted:
        return ("invalid_file_format",
                f"{label} {data_file.public_id} holds {data_file.format} examples, but a {method} job needs "
                f"{wanted} examples.")
    return None


def create_job(spec, user, parent=None, metadata=None):
    """Validate a request and make the job; see the module docstring for what raises and what fails."""
    spec = dict(spec) if isinstance(spec, dict) else spec
    if isinstance(spec, dict) and "seed" not in spec:
        # OpenAI generates a seed when none is given; storing it makes a re-run reproduce the run.
        spec["seed"] = secrets.randbelow(2**31)
    typed = check_spec(spec)
    metadata = _check_metadata(metadata)
    base = _find_base_model(typed.model)
    training_file = _find_file(typed.training_file, "training_file")
    validation_file = _find_file(typed.validation_file, "validation_file")

    stored = typed.model_dump(mode="json", exclude=set(WORKER_FIELDS))
    with transaction.atomic():
        job = FineTuningJob.objects.create(
            created_by=user if getattr(user, "is_authenticated", False) else None,
            base_model=base, training_file=training_file, validation_file=validation_file, parent=parent,
            spec=stored, suffix=typed.suffix or "", seed=typed.seed, metadata=metadata,
            status=FineTuningJob.VALIDATING)
    job.record_event(f"Created fine-tuning job: {job.public_id}")
    validating = f"Validating training file: {training_file.public_id}"
    if validation_file is not None:
        validating += f" and validation file: {validation_file.public_id}"
    job.record_event(validating)

    for data_file, param in ((training_file, "training_file"), (validation_file, "validation_file")):
        problem = file_problem(data_file, param, typed.method)
        if problem:
            code, message = problem
            fail_job(job, code, message, param)
            return job

    from training.engine.spec import resolve_auto

    resolved, _summary = resolve_auto(typed, training_file.n_examples)
    job.resolved_spec = resolved.model_dump(mode="json", exclude=set(WORKER_FIELDS))
    job.status = FineTuningJob.QUEUED
    job.save(update_fields=["resolved_spec", "status"])
    job.record_event("Files validated, moving job to queued state")
    job.publish_status()
    return job


def fail_job(job, code, message, param=None, only_from=None):
    """Mark a job failed with the contract's `error` object; False when it had already left `only_from`."""
    rows = FineTuningJob.objects.filter(pk=job.pk)
    if only_from:
        rows = rows.filter(status__in=only_from)
    else:
        rows = rows.exclude(status__in=FineTuningJob.FINISHED)
    # OpenAI leaves finished_at null on a job that failed before training (seen in real responses).
    finished_at = timezone.now() if job.started_at else None
    if not rows.update(status=FineTuningJob.FAILED, error={"code": code, "message": message, "param": param},
                       finished_at=finished_at, control="", estimated_finish=None):
        job.refresh_from_db()
        return False
    job.refresh_from_db()
    job.record_event(message, level="error")
    job._announce_end("fine_tuning.job.failed")
    return True


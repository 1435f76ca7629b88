"""Creating fine-tuning jobs: the one path the new-job form, re-run and `POST /v1/fine_tuning/jobs` share.

`create_job(spec, user, parent=None, metadata=None)` follows OpenAI's
lifecycle for a new job (`validating_files`, then `queued`):

1. The spec is checked against `JobSpec`; an unknown key or a value out of
   range raises `JobError` naming the field. So do metadata that breaks
   OpenAI's limits (16 pairs, keys of 64 and values of 512 characters), a
   tracker folder outside the job folder, an unknown base model, an unknown
   file id, and a file that cannot be used for the job's method (it failed
   validation, is not validated yet, or holds another method's examples:
   chat for supervised, preference for DPO, reinforcement prompts for
   reinforcement): none of those makes a job at all, and the message names
   the file's param (`training_file`, `validation_file`).
   A reinforcement job's grader is checked as OpenAI checks one
   (`graders.validate_grader`, context "rft": the param is the grader's field,
   `grader.graders.label.reference`; a judge model must be one the evals app
   knows), and every `{{item.<field>}}` its templates read must be on every
   line of both files (the file is read line by line; the error names the
   file's param, the line, the field and the grader).
2. The job is stored in `validating_files` with the events
   "Created fine-tuning job: …" and "Validating training file: …".
3. `auto` is resolved with the training file's example count, the resolved
   spec is stored next to the requested one, and the job is queued
   ("Files validated, moving job to queued state").

The stored `spec` is the `JobSpec` dict as requested (`auto` kept, every
default filled in) with `model` = the base model's name and the files as
public ids; the worker fields (`job_id`, `output_dir`) are the worker's to fill.

`rerun(parent, by, spec=None)` is a new job from a job's spec as it was
requested (or an edited copy), which remembers its parent.
"""

import secrets
from pathlib import PurePath

from django.db import transaction

from training.datasets import iter_numbered_examples
from training.engine.spec import WORKER_FIELDS, JobSpec, local_tracking_folder, resolve_auto, spec_errors
from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob, JobError

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def check_spec(spec):
    """The typed spec of a request, or JobError naming the first bad field (all of them in `.errors`)."""
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


def check_launcher(typed):
    """What this studio's launcher cannot run (ATTUNE_LAUNCHER: `n_nodes` above what it allows, a Slurm
    partition that does not exist) is refused before any job is made; JobError names the field."""
    from training import launchers

    problems = launchers.current().check(typed.model_dump(mode="json"))
    if problems:
        field, message = problems[0]
        raise JobError(field, f"{field}: {message}", "invalid_value")


def _inside_job_folder(path):
    path = PurePath(path)
    return not path.is_absolute() and ".." not in path.parts


def _check_integration_paths(typed):
    # Paths typed by a person stay inside the job folder: a relative path without `..`.
    board = typed.integrations.tensorboard
    if board is not None and board.log_dir and not _inside_job_folder(board.log_dir):
        raise JobError("integrations.tensorboard.log_dir",
                       "integrations.tensorboard.log_dir: give a folder relative to the job folder, "
                       "without '..' (leave it empty for <job>/tensorboard).", "invalid_value")
    flow = typed.integrations.mlflow
    if flow is not None:
        local = local_tracking_folder(flow.tracking_uri)
        if local is not None and not _inside_job_folder(local):
            raise JobError("integrations.mlflow.tracking_uri",
                           "integrations.mlflow.tracking_uri: use an http(s) tracking server, or a folder "
                           "relative to the job folder without '..'.", "invalid_value")


def check_metadata(metadata):
    """OpenAI's limits on a job's metadata: string keys and values, 16 pairs, 64 / 512 characters."""
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
        if len(key) > MAX_METADATA_KEY:
            raise JobError("metadata", f"metadata key {key[:20]!r}… is longer than {MAX_METADATA_KEY} "
                                       "characters.", "invalid_value")
        if len(value) > MAX_METADATA_VALUE:
            raise JobError(f"metadata.{key}", f"metadata.{key} is longer than {MAX_METADATA_VALUE} characters.",
                           "invalid_value")
    return metadata


def _find_base_model(name):
    base = BaseModel.objects.filter(name=name).first()
    if base is None:
        known = ", ".join(BaseModel.objects.values_list("name", flat=True)[:20]) or "none yet"
        raise JobError("model", f"Unknown base model '{name}'. Known base models: {known}, or a fine-tuned "
                                "model (ft:…) of this studio.", "model_not_found")
    return base


# The LoRA settings a job that continues an adapter must share with it.
ADAPTER_SHAPE = ("lora_r", "lora_alpha", "lora_target_modules")


def starting_point(typed):
    """(base model, checkpoint or None) of a request's `model`: a base model's name, or a fine-tuned model
    (`ft:…`, a job's or an epoch checkpoint's) whose weights the job starts from.

    A LoRA snapshot with `adapter: lora` goes on training that adapter on the same base, so its LoRA settings
    (rank, alpha, target modules) must be the adapter's; with `adapter: full` the adapter is merged into its
    base and every weight trains. A full-weight snapshot trains in full only: an adapter on top of it would be
    served on weights that are not a base model."""
    if not typed.model.startswith("ft:"):
        return _find_base_model(typed.model), None
    checkpoint = Checkpoint.for_model_name(typed.model)
    if checkpoint is None or not checkpoint.full_path.is_dir():
        raise JobError("model", f"Unknown fine-tuned model '{typed.model}': no checkpoint of this studio has that "
                                "name. GET /v1/models, or the playground's snapshot list, names them.",
                       "model_not_found")
    if not checkpoint.is_adapter:
        if typed.adapter != "full":
            raise JobError("adapter", f"{typed.model} holds full weights, so a job on it trains in full: set "
                                      "adapter to 'full'.", "invalid_value")
        return checkpoint.job.base_model, checkpoint
    if typed.adapter == "lora":
        own = checkpoint.job.spec_values
        for field in ADAPTER_SHAPE:
            wanted = getattr(own, field)
            if getattr(typed, field) != wanted:
                raise JobError(field, f"{field}: {typed.model} is a LoRA adapter with {field} {wanted!r}, and "
                                      f"training continues that adapter: set {field} to {wanted!r} (or adapter "
                                      "'full' to merge it and train every weight).", "invalid_value")
    return checkpoint.job.base_model, checkpoint


def _find_file(file_id, param, method):
    """The DataFile `param` names, or JobError when there is none or it cannot feed a job of `method`."""
    if file_id is None:
        return None
    data_file = DataFile.objects.filter(public_id=file_id).first()
    if data_file is None:
        raise JobError(param, f"No file with id '{file_id}' ({param}). Upload it first, or pick one of the "
                              "files listed on the datasets page.", "file_not_found")
    if data_file.purpose != "fine-tune":
        raise JobError(param, f"File {file_id} ({param}) has purpose '{data_file.purpose}'; a job needs a "
                              "file uploaded with purpose 'fine-tune'.", "invalid_file_purpose")
    problem = file_problem(data_file, param, method)
    if problem:
        code, message = problem
        raise JobError(param, message, code)
    return data_file


def file_problem(data_file, param, method):
    """(code, message) when `data_file` cannot feed a job of `method`, else None."""
    label = "Training file" if param == "training_file" else "Validation file"
    if not data_file.usable:
        first = (data_file.errors or [{}])[0]
        if first.get("code") == "invalid_n_examples":
            # The datasets report speaks of any file; name the one this job uses.
            return "invalid_n_examples", first["message"].replace("Training file", label)
        if data_file.status == "uploaded" and not data_file.n_errors:
            return ("file_not_ready", f"{label} {data_file.public_id} is still being validated; start the job "
                                      "once its report is ready.")
        n = data_file.n_errors or 1
        message = first.get("message") or data_file.status_details or "the file failed validation"
        return (first.get("code") or "invalid_file",
                f"{label} {data_file.filename} ({data_file.public_id}) has {n} error(s) and cannot start a job; "
                f"fix them and upload it again. The first: {message}")
    wanted = METHOD_FORMATS[method]
    if data_file.format and data_file.format != wanted:
        held = FORMAT_WORDS.get(data_file.format, f"{data_file.format} examples")
        return ("invalid_file_format",
                f"{label} {data_file.public_id} ({param}) holds {held}, but a {method} job needs "
                f"{FORMAT_WORDS[wanted]}.")
    return None


# The file format each method trains on, and how a message names it.
METHOD_FORMATS = {"supervised": "chat", "dpo": "preference", "reinforcement": "reinforcement"}
FORMAT_WORDS = {
    "chat": "supervised chat examples (conversations that end with an assistant answer)",
    "preference": "preference examples (input, preferred_output, non_preferred_output)",
    "reinforcement": "reinforcement prompts (messages that end with a user turn, and the fields the grader reads)",
}


def _judge_exists(name):
    """Whether a model grader's judge is one the evals app can ask, found through the app registry."""
    from django.apps import apps

    return apps.get_app_config("evals").judge_exists(name)


def check_grader(grader):
    """A reinforcement job's grader, validated as OpenAI validates one; JobError names its field."""
    from graders import GraderError, validate_grader

    try:
        return validate_grader(grader, context="rft", param="grader", model_exists=_judge_exists)
    except GraderError as exc:
        raise JobError(exc.param, exc.message, exc.code) from None


def check_item_fields(grader, data_file, param):
    """Every `{{item.<field>}}` the grader reads is on every line of `data_file`, which is read one line at
    a time; JobError names `param`, the first line without one, the field and the grader."""
    from graders.templates import TemplateError, lookup

    references = item_references_of(grader)
    if not references or data_file is None:
        return
    label = "training file" if param == "training_file" else "validation file"
    for number, example in iter_numbered_examples(data_file.full_path):
        for name, text, path in references:
            try:
                lookup(path, None, example)
            except TemplateError:
                field = text[2:-2].strip().removeprefix("item.")
                raise JobError(param, f"Line {number} of {label} {data_file.filename} ({data_file.public_id}) "
                                      f"has no field '{field}', which grader '{name}' reads as {text}.",
                               "missing_item_field") from None


def item_references_of(grader):
    from graders import item_references

    # One check per variable, the first grader that reads it named.
    seen, unique = set(), []
    for name, text, path in item_references(grader):
        key = tuple(path)
        if key not in seen:
            seen.add(key)
            unique.append((name, text, path))
    return unique


def _check_eval(eval_id):
    """The eval a job runs on each epoch checkpoint exists and has prompts to run. The evals app is found
    through the app registry: training imports nothing of the apps built on it."""
    if not eval_id:
        return
    from django.apps import apps

    found = apps.get_model("evals", "Eval").objects.filter(public_id=eval_id).first()
    if found is None:
        raise JobError("eval", f"No eval with id '{eval_id}' (eval). Create it on the Evals page or with "
                               "POST /v1/evals first.", "eval_not_found")
    if not found.epoch_data_source:
        raise JobError("eval", f"Eval {eval_id} (eval) has no prompts of its own to run on each checkpoint: "
                               "give it attune.data_source (the Evals page does) or pick another eval.",
                       "eval_without_prompts")


def create_job(spec, user, parent=None, metadata=None):
    """Validate a request and make the job; see the module docstring for what raises JobError."""
    spec = dict(spec) if isinstance(spec, dict) else spec
    if isinstance(spec, dict) and "seed" not in spec:
        # OpenAI generates a seed when none is given; storing it makes a re-run reproduce the run.
        spec["seed"] = secrets.randbelow(2**31)
    typed = check_spec(spec)
    check_launcher(typed)
    metadata = check_metadata(metadata)
    base, init_checkpoint = starting_point(typed)
    if typed.method == "reinforcement":
        grader = check_grader(typed.grader)
    training_file = _find_file(typed.training_file, "training_file", typed.method)
    validation_file = _find_file(typed.validation_file, "validation_file", typed.method)
    if typed.method == "reinforcement":
        check_item_fields(grader, training_file, "training_file")
        check_item_fields(grader, validation_file, "validation_file")
    _check_eval(typed.eval)

    stored = typed.model_dump(mode="json", exclude=set(WORKER_FIELDS))
    with transaction.atomic():
        job = FineTuningJob.objects.create(
            created_by=user if getattr(user, "is_authenticated", False) else None,
            base_model=base, init_checkpoint=init_checkpoint, training_file=training_file,
            validation_file=validation_file, parent=parent,
            spec=stored, suffix=typed.suffix or "", seed=typed.seed, metadata=metadata,
            status=FineTuningJob.VALIDATING)
    job.record_event(f"Created fine-tuning job: {job.public_id}")
    validating = f"Validating training file: {training_file.public_id}"
    if validation_file is not None:
        validating += f" and validation file: {validation_file.public_id}"
    job.record_event(validating)

    resolved, _summary = resolve_auto(typed, training_file.n_examples)
    job.change_status(FineTuningJob.QUEUED, only_from=[FineTuningJob.VALIDATING],
                      resolved_spec=resolved.model_dump(mode="json", exclude=set(WORKER_FIELDS)),
                      events=[{"message": "Files validated, moving job to queued state"}])
    return job


def rerun(parent, by, spec=None):
    """A new job from `parent`'s spec as requested (`auto` kept), or an edited copy of it."""
    return create_job(parent.spec if spec is None else spec, by, parent=parent, metadata=parent.metadata)

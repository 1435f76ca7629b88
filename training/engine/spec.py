"""JobSpec: the one typed definition of a fine-tuning job.

The engine reads it from SPEC.json, the new-job form is generated from
`form_fields()`, and the /v1 API validates request bodies with it. Importing
this module imports pydantic only (no torch), so Django pages stay fast.

What it gives:

- `JobSpec`: every field with help text, range and tags: its group ("basic",
  "hyperparameters", "advanced", "integrations", "worker"), the methods it
  applies to, whether OpenAI's request has a place for it; unknown keys are
  refused (`extra="forbid"`). Every list of field names (`HYPERPARAMETERS`,
  `hyperparameters_for(method)`, `WORKER_FIELDS`, `AUTO_FIELDS`, …) is derived
  from the tags, here and nowhere else.
- `SpecValues(requested, resolved)`: a stored job's values by field name, as
  requested, as resolved, and the one to show.
- `spec_errors(data)`: `[(field, message), ...]`, the field as a dotted path
  (`integrations.wandb.project`), for forms and API `param`s.
- `resolve_auto(spec, n_train_examples)`: a copy with every "auto" replaced
  by the documented rules below, plus the resolved values as a dict.
- `form_fields()`: the flat list of fields with help, type, default, range,
  choices and group.

Rules for "auto" (resolved once, at job start):

- n_epochs: OpenAI's published rule. Start at 3; if n × 3 < 100 use
  min(25, 100 // n); if n × 3 > 25,000 use max(1, 25,000 // n).
- batch_size: about 1/50th of the examples, rounded down to a power of two,
  between 1 and 32 (480 examples → 8, 10 → 1). Capped at 32 so an "auto" job
  fits the memory of one GPU for the models Attune expects. DPO takes at least
  8 pairs a step (or every pair of a smaller file): one pair a step at a
  supervised rate drove a real model to answer nothing at all.
- learning_rate_multiplier: 1.0. The learning rate is the multiplier times a
  base rate per method and adapter type (`BASE_LEARNING_RATE`): supervised
  LoRA 2e-4, full 2e-5; DPO LoRA 2e-5, full 1e-6, since DPO's loss pushes
  whole answers up and down and needs a far gentler step.
- beta (DPO): 0.1, TRL's default.

Not supported: the reinforcement method, per-field "auto" for the advanced
fields, several training files per job.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AUTO = "auto"

# The learning rate is learning_rate_multiplier × this, by method and adapter type.
BASE_LEARNING_RATE = {"supervised": {"lora": 2e-4, "full": 2e-5}, "dpo": {"lora": 2e-5, "full": 1e-6}}
DPO_MIN_AUTO_BATCH_SIZE = 8
MAX_LEARNING_RATE_MULTIPLIER = 100.0
DEFAULT_BETA = 0.1
AUTO_BATCH_SIZE_CAP = 32

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


# The tags on each field (`json_schema_extra`, like the `metadata` of TRL's config dataclasses), from
# which every list of field names is derived (`names`, `hyperparameters_for`, `WORKER_FIELDS`, …):
#   group    basic | hyperparameters | advanced | integrations | worker (filled in by the worker for each
#            run, never typed by a person); the form's sections follow it
#   methods  the methods a field applies to, when not all of them
#   openai   the field has its own place in OpenAI's job request (the others come under `attune`)
#   auto     the field may be "auto", resolved once at job start (with its `min` and `max`)
GROUPS = ("basic", "hyperparameters", "advanced", "integrations", "worker")


def _field(default=..., *, description, group="basic", methods=None, openai=False, **kwargs):
    assert group in GROUPS, group
    extra = {"group": group}
    if methods:
        extra["methods"] = list(methods)
    if openai:
        extra["openai"] = True
    extra.update(kwargs.pop("json_schema_extra", {}))
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WandbIntegration(_Strict):
    project: str = _field(description="W&B project the run is logged to.", group="integrations",
                          min_length=1, max_length=128)
    entity: str | None = _field(None, description="W&B team or user; the API key's default entity if empty.",
                                group="integrations", max_length=128)
    name: str | None = _field(None, description="Display name of the run; the job id if empty.",
                              group="integrations", max_length=128)
    tags: list[Annotated[str, Field(max_length=64)]] = _field(
        default_factory=list, description="Tags added to the run (at most 50, 64 characters each).",
        group="integrations", max_length=50)


class MlflowIntegration(_Strict):
    tracking_uri: str = _field(description="MLflow tracking URI (http://…, file:/…, or a local path).",
                               group="integrations", min_length=1)
    experiment: str = _field("attune", description="MLflow experiment name; created if missing.",
                             group="integrations", min_length=1, max_length=256)


def local_tracking_folder(uri: str) -> str | None:
    """The folder an MLflow tracking URI names when it is local (`file:` dropped), None for a server."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return uri.removeprefix("file://").removeprefix("file:")


class TensorboardIntegration(_Strict):
    log_dir: str | None = _field(None, description="TensorBoard log folder; <output_dir>/tensorboard if empty.",
                                 group="integrations")


class Integrations(_Strict):
    wandb: WandbIntegration | None = _field(None, description="Log metrics and config to Weights & Biases.",
                                            group="integrations", title="Weights & Biases")
    mlflow: MlflowIntegration | None = _field(None, description="Log metrics and params to MLflow.",
                                              group="integrations", title="MLflow")
    tensorboard: TensorboardIntegration | None = _field(None, description="Write TensorBoard event files.",
                                                        group="integrations", title="TensorBoard")


class JobSpec(_Strict):
    """One fine-tuning job, as stored, sent to the engine and shown in the form."""

    # --- basic -------------------------------------------------------------
    job_id: str | None = _field(None, description="Public id of the job (ftjob-…); also the W&B run id.",
                                group="worker", max_length=128)
    model: str = _field(description="Base model: a Hugging Face model id or a local folder.", openai=True,
                        min_length=1)
    training_file: str = _field(description="Path of the training JSONL file.", openai=True, min_length=1)
    validation_file: str | None = _field(None, description="Path of the validation JSONL file (optional).",
                                         openai=True)
    method: Literal["supervised", "dpo"] = _field(
        "supervised", description="supervised: learn the assistant answers; dpo: learn to prefer one answer "
                                  "over another.", openai=True)
    adapter: Literal["lora", "full"] = _field(
        "lora", description="lora: train small low-rank adapters (fast, small checkpoints); full: train every "
                            "weight.")

    # --- hyperparameters ---------------------------------------------------
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Literal["auto"] = _field(
        AUTO, description="Passes over the training file (1–50, or auto).", group="hyperparameters", openai=True,
        json_schema_extra={"min": 1, "max": 50, "auto": True})
    batch_size: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = _field(
        AUTO, description="Examples per optimizer step, across all GPUs (1–256, or auto). With packing, "
                          "packed rows per step.", group="hyperparameters", openai=True,
        json_schema_extra={"min": 1, "max": 256, "auto": True})
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=MAX_LEARNING_RATE_MULTIPLIER)] | Literal["auto"] = _field(
        AUTO, description=f"Multiplies the base learning rate (supervised: LoRA "
                          f"{BASE_LEARNING_RATE['supervised']['lora']:g}, full "
                          f"{BASE_LEARNING_RATE['supervised']['full']:g}; DPO: LoRA "
                          f"{BASE_LEARNING_RATE['dpo']['lora']:g}, full {BASE_LEARNING_RATE['dpo']['full']:g}); "
                          f"> 0 and ≤ {MAX_LEARNING_RATE_MULTIPLIER:g}, or auto.", group="hyperparameters",
        openai=True, json_schema_extra={"min": 0, "max": MAX_LEARNING_RATE_MULTIPLIER, "auto": True})
    beta: Annotated[float, Field(gt=0, le=2)] | Literal["auto"] = _field(
        AUTO, description="DPO only: how close the model stays to the base model; higher is closer "
                          "((0, 2], or auto).", group="hyperparameters", methods=["dpo"], openai=True,
        json_schema_extra={"min": 0, "max": 2, "auto": True})
    seed: int = _field(0, description="Random seed: the same spec and data give the same run.", openai=True,
                       ge=0, le=2147483647)
    suffix: str | None = _field(None, description="Up to 64 characters added to the fine-tuned model name.",
                                openai=True, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")

    # --- LoRA --------------------------------------------------------------
    lora_r: int = _field(16, description="LoRA rank: size of the adapter matrices.", group="advanced",
                         ge=1, le=512)
    lora_alpha: int = _field(32, description="LoRA scaling; the update is scaled by alpha / r.",
                             group="advanced", ge=1, le=4096)
    lora_dropout: float = _field(0.0, description="Dropout on the LoRA input.", group="advanced", ge=0, le=0.9)
    lora_target_modules: list[str] | Literal["all-linear"] = _field(
        "all-linear", description="Module names that get adapters (e.g. q_proj, v_proj), or all-linear.",
        group="advanced")

    # --- advanced ----------------------------------------------------------
    max_seq_length: int = _field(1024, description="Longest example in tokens; longer ones are truncated "
                                                   "(from the end) with a warning.",
                                 group="advanced", ge=16, le=131072)
    gradient_accumulation_steps: int = _field(1, description="Micro-batches summed per optimizer step; "
                                                             "batch_size must be divisible by it × n_gpus.",
                                              group="advanced", ge=1, le=256)
    warmup_ratio: float = _field(0.0, description="Share of the steps over which the learning rate warms up.",
                                 group="advanced", ge=0, le=0.5)
    lr_scheduler: Literal[LR_SCHEDULERS] = _field("linear", description="Learning-rate schedule after warm-up.",
                                                  group="advanced")
    weight_decay: float = _field(0.0, description="AdamW weight decay.", group="advanced", ge=0, le=1)
    packing: bool = _field(False, description="Pack several examples into rows of max_seq_length; examples "
                                              "never attend to each other. Faster when example lengths vary; "
                                              "supervised only.", group="advanced",
                            methods=["supervised"])
    eval_interval: int = _field(10, description="Evaluate on a fixed sample of the validation file every "
                                                "this many steps.", group="advanced", ge=1, le=100000)
    eval_samples: int = _field(16, description="Size of that fixed validation sample.", group="advanced",
                               ge=1, le=4096)
    keep_last_n: int | None = _field(None, description="Keep the optimizer state of only the last N epoch "
                                                       "checkpoints (weights are kept); empty keeps all.",
                                     group="advanced", ge=1, le=1000)
    logging_steps: int = _field(1, description="Report training metrics every this many steps.",
                                group="advanced", ge=1, le=10000)
    n_gpus: int = _field(1, description="GPUs for this job; more than 1 launches torchrun.", group="advanced",
                         ge=1, le=64)
    # --- evaluation (the studio's; the engine never reads them) ------------------
    eval: str | None = _field(None, description="An eval (eval_…) run on every epoch checkpoint, off the training "
                                                "path; its scores land in the checkpoint's metrics.",
                              group="advanced", max_length=64, pattern=r"^eval_[A-Za-z0-9]+$")
    best_checkpoint_metric: str = _field(
        AUTO, description="What marks the best checkpoint: full_valid_loss (lowest), eval_mean_score or "
                          "eval_pass_rate (highest), or eval:<testing criterion name>; auto takes eval_mean_score "
                          "when the job names an eval, else full_valid_loss.", group="advanced", min_length=1,
        max_length=300)
    output_dir: str = _field("var/jobs/local", description="The job folder; checkpoints go under it.",
                             group="worker", min_length=1)

    # --- integrations ------------------------------------------------------
    integrations: Integrations = _field(default_factory=Integrations,
                                        description="Experiment trackers to log to.", group="integrations",
                                        openai=True)

    @field_validator("lora_target_modules")
    @classmethod
    def _non_empty_modules(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give at least one module name, or all-linear")
        return value

    @field_validator("best_checkpoint_metric")
    @classmethod
    def _known_metric(cls, metric):
        if not (metric in (AUTO, "full_valid_loss", "eval_mean_score", "eval_pass_rate")
                or (metric.startswith("eval:") and len(metric) > 5)):
            raise ValueError(f"{metric!r} is not one of auto, full_valid_loss, eval_mean_score, eval_pass_rate "
                             "or eval:<testing criterion name>")
        return metric

    @model_validator(mode="after")
    def _batch_divides(self):
        if isinstance(self.batch_size, int):
            per_step = self.gradient_accumulation_steps * self.n_gpus
            if self.batch_size % per_step:
                raise ValueError(
                    f"batch_size ({self.batch_size}) must be divisible by gradient_accumulation_steps × n_gpus "
                    f"({per_step})")
        metric = self.best_checkpoint_metric
        if metric.startswith("eval") and not self.eval:
            raise ValueError(f"best_checkpoint_metric {metric!r} needs an eval; name one in 'eval'")
        if self.packing and not applies_to("packing", self.method):
            raise ValueError("packing applies to supervised fine-tuning only; turn it off for DPO")
        return self

    @property
    def learning_rate(self) -> float | None:
        if self.learning_rate_multiplier == AUTO:
            return None
        return BASE_LEARNING_RATE[self.method][self.adapter] * self.learning_rate_multiplier


# --- the lists of names, each derived from the tags once ----------------------

def _tags(info) -> dict:
    return info.json_schema_extra or {}


def names(group: str) -> tuple[str, ...]:
    """The JobSpec fields of one group, in the order JobSpec declares them."""
    return tuple(name for name, info in JobSpec.model_fields.items() if _tags(info)["group"] == group)


METHODS = get_args(JobSpec.model_fields["method"].annotation)
HYPERPARAMETERS = names("hyperparameters")
# Filled in by the worker for each run (the job's id and folder); never stored, never typed by a person.
WORKER_FIELDS = names("worker")
# What may be "auto": the values the resolved spec holds in place of the requested ones.
AUTO_FIELDS = tuple(name for name, info in JobSpec.model_fields.items() if _tags(info).get("auto"))
OPENAI_FIELDS = tuple(name for name, info in JobSpec.model_fields.items() if _tags(info).get("openai"))
# Each integration and its name for people.
INTEGRATIONS = {name: info.title for name, info in Integrations.model_fields.items()}


def applies_to(name: str, method: str) -> bool:
    methods = _tags(JobSpec.model_fields[name]).get("methods")
    return methods is None or method in methods


def hyperparameters_for(method: str | None = None) -> tuple[str, ...]:
    """The hyperparameters a job of `method` takes; with no method, those that every method takes."""
    if method is None:
        return tuple(name for name in HYPERPARAMETERS if "methods" not in _tags(JobSpec.model_fields[name]))
    return tuple(name for name in HYPERPARAMETERS if applies_to(name, method))


class SpecValues:
    """A job's spec as requested and as resolved, read through JobSpec (its defaults fill what a stored spec
    leaves out).

    `values.requested.n_epochs` is what was asked for ("auto" kept), `values.resolved.n_epochs` what the
    job runs with (`resolved` is None until the job has been resolved), and `values.n_epochs` the one to
    show: the resolved value of a field that may be "auto" once there is one, else the requested value.
    """

    def __init__(self, requested: dict | None, resolved: dict | None = None):
        # No validation: a stored spec was validated when it was stored, and reading it must not fail.
        self.requested = JobSpec.model_construct(**(requested or {}))
        self.resolved = JobSpec.model_construct(**resolved) if resolved else None

    def __getattr__(self, name):
        if name not in JobSpec.model_fields:
            raise AttributeError(name)
        if self.resolved is not None and name in AUTO_FIELDS:
            return getattr(self.resolved, name)
        return getattr(self.requested, name, None)

    def hyperparameters(self) -> dict:
        """{name: value} for the hyperparameters of the job's method."""
        return {name: getattr(self, name) for name in hyperparameters_for(self.method)}

    @property
    def base_learning_rate(self) -> float:
        """The learning rate at multiplier 1 for the job's method and adapter."""
        return BASE_LEARNING_RATE[self.method][self.adapter]


def spec_errors(data: Any) -> list[tuple[str, str]]:
    """Validate `data`; return [(dotted field, message)], empty when valid."""
    try:
        JobSpec.model_validate(data)
    except ValidationError as exc:
        return _errors_from(exc)
    return []


def _errors_from(exc: ValidationError) -> list[tuple[str, str]]:
    errors: dict[str, list[str]] = {}
    union_errors = set()
    for err in exc.errors():
        field = _field_path(err["loc"])
        if len(err["loc"]) > 1 and _auto_meta(field) is not None:
            union_errors.add(field)
        message = err["msg"].removeprefix("Value error, ")
        if not field:
            # A model-level check has no location; its message starts with the field it is about.
            first = message.split(" ", 1)[0]
            field = first if first in JobSpec.model_fields else "__all__"
        if err["type"] == "extra_forbidden":
            message = f"unknown field '{field.rsplit('.', 1)[-1]}'"
        errors.setdefault(field, []).append(message)
    result = []
    for field, messages in errors.items():
        meta = _auto_meta(field)
        if field in union_errors:
            # An int | "auto" union reports one error per branch; say it once.
            low, high = meta
            if _type_name(JobSpec.model_fields[field].annotation) == "int":
                result.append((field, f"must be an integer from {low} to {high}, or 'auto'"))
            else:
                result.append((field, f"must be a number greater than {low:g} and at most {high:g}, or 'auto'"))
        else:
            result.append((field, "; ".join(dict.fromkeys(messages))))
    return result


def _field_path(loc) -> str:
    """Turn a pydantic location into a dotted field path, dropping union branch tags."""
    parts, model = [], JobSpec
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
            continue
        if model is not None and part in model.model_fields:
            parts.append(part)
            annotation = model.model_fields[part].annotation
            model = next((a for a in getattr(annotation, "__args__", (annotation,))
                          if isinstance(a, type) and issubclass(a, BaseModel)), None)
        elif model is not None and not parts:
            parts.append(part)  # an unknown top-level key
        elif model is not None and _is_nested_extra(parts):
            parts.append(part)
    return ".".join(parts)


def _is_nested_extra(parts):
    return bool(parts) and parts[0] == "integrations"


def _auto_meta(field):
    if field not in JobSpec.model_fields:
        return None
    extra = JobSpec.model_fields[field].json_schema_extra or {}
    if not extra.get("auto"):
        return None
    return extra["min"], extra["max"]


def parse_spec(data: Any) -> JobSpec:
    """`JobSpec.model_validate` that raises `SpecError` naming each bad field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_errors_from(exc)) from None


class SpecError(ValueError):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


# --- auto resolution --------------------------------------------------------

def auto_n_epochs(n_examples: int) -> int:
    n = max(1, n_examples)
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25000:
        return max(1, 25000 // n)
    return 3


def auto_batch_size(n_examples: int, per_step: int = 1, method: str = "supervised") -> int:
    """≈ n/50 rounded down to a power of two, in [1, 32] (DPO: at least 8, or n), and a multiple of
    `per_step`."""
    target = max(1, n_examples // 50)
    size = min(AUTO_BATCH_SIZE_CAP, 2 ** int(math.log2(target)))
    if method == "dpo":
        size = max(size, min(DPO_MIN_AUTO_BATCH_SIZE, 2 ** int(math.log2(max(1, n_examples)))))
    return max(per_step, size - size % per_step)


def resolve_auto(spec: JobSpec, n_train_examples: int) -> tuple[JobSpec, dict]:
    """Return (spec with no "auto" left, {the resolved hyperparameters})."""
    per_step = spec.gradient_accumulation_steps * spec.n_gpus
    updates = {}
    if spec.n_epochs == AUTO:
        updates["n_epochs"] = auto_n_epochs(n_train_examples)
    if spec.batch_size == AUTO:
        updates["batch_size"] = auto_batch_size(n_train_examples, per_step, spec.method)
    if spec.learning_rate_multiplier == AUTO:
        updates["learning_rate_multiplier"] = 1.0
    if spec.beta == AUTO:
        updates["beta"] = DEFAULT_BETA
    if spec.best_checkpoint_metric == AUTO:
        updates["best_checkpoint_metric"] = "eval_mean_score" if spec.eval else "full_valid_loss"
    resolved = spec.model_copy(update=updates)
    resolved = JobSpec.model_validate(resolved.model_dump())  # re-check ranges and divisibility
    summary = {name: getattr(resolved, name) for name in hyperparameters_for(resolved.method)}
    summary["learning_rate"] = resolved.learning_rate
    return resolved, summary


# --- form generation ---------------------------------------------------------

def form_fields() -> list[dict]:
    """Every leaf field: name (dotted), help, type, default, min, max, choices, auto, group."""
    return list(_walk(JobSpec, ""))


def _walk(model, prefix):
    for name, info in model.model_fields.items():
        extra = dict(info.json_schema_extra or {})
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        nested = next((a for a in args or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is not None:
            yield from _walk(nested, f"{prefix}{name}.")
            continue
        low = high = None
        for meta in info.metadata:
            low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
            low = getattr(meta, "gt", None) if getattr(meta, "gt", None) is not None else low
            high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
        low = extra.get("min", low)
        high = extra.get("max", high)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        yield {
            "name": prefix + name,
            "help": info.description,
            "type": _type_name(annotation),
            "required": info.is_required(),
            "default": default,
            "min": low,
            "max": high,
            "choices": _choices(annotation),
            "auto": bool(extra.get("auto")),
            "group": extra.get("group", "basic"),
        }


def _choices(annotation):
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is Literal:
        return list(args)
    return None


def _type_name(annotation):
    text = repr(annotation)
    for name in ("bool", "int", "float", "list", "str"):
        if name in text:
            return name
    return "str"

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
  choices, group and the methods a field applies to.

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
- beta: DPO 0.1, TRL's default; reinforcement 0.0, TRL's GRPO default (no reference model is loaded,
  and recent GRPO work drops the KL term).
- num_generations (reinforcement): 8 × compute_multiplier, rounded, in [2, 64]; with a batch_size given,
  the largest divisor of it that is at most that.
- batch_size (reinforcement): completions per step, as TRL counts them: num_generations × prompts per
  step, with the prompts per step the supervised rule's figure between 2 and 8.
- eval_interval: 10 steps (reinforcement: a quarter of an epoch, at least 1); eval_samples: 16.
- compute_multiplier 1.0; reasoning_effort "default".

Not supported: per-field "auto" for the other advanced fields, several training files per job.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AUTO = "auto"

# The learning rate is learning_rate_multiplier × this, by method and adapter type.
BASE_LEARNING_RATE = {"supervised": {"lora": 2e-4, "full": 2e-5}, "dpo": {"lora": 2e-5, "full": 1e-6},
                      "reinforcement": {"lora": 2e-5, "full": 1e-6}}
DPO_MIN_AUTO_BATCH_SIZE = 8
MAX_LEARNING_RATE_MULTIPLIER = 100.0
DEFAULT_BETA = {"dpo": 0.1, "reinforcement": 0.0}
DEFAULT_NUM_GENERATIONS = 8
DEFAULT_EVAL_INTERVAL = 10
DEFAULT_EVAL_SAMPLES = 16
REASONING_EFFORTS = ("default", "low", "medium", "high")
# TRL's GRPO losses that need nothing more than the completions and their rewards.
GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")
AUTO_BATCH_SIZE_CAP = 32
MAX_NODES = 64

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
# What may mark a job's best checkpoint (besides eval:<criterion>): the loss lowest, the others highest.
BEST_METRICS = ("full_valid_loss", "full_valid_mean_reward", "eval_mean_score", "eval_pass_rate")


# The tags on each field (`json_schema_extra`, like the `metadata` of TRL's config dataclasses), from
# which every list of field names is derived (`names`, `hyperparameters_for`, `WORKER_FIELDS`, …):
#   group    basic | hyperparameters | advanced | integrations | worker (filled in by the worker for each
#            run, never typed by a person); the form's sections follow it
#   methods  the methods a field applies to, when not all of them
#   openai   the field has its own place in OpenAI's job request (the others come under `attune`): true
#            for every method it applies to, or the list of methods for which it does (beta is a DPO
#            hyperparameter of OpenAI's, and one of Attune's GRPO settings for reinforcement)
#   auto     the field may be "auto", resolved once at job start (with its `min` and `max`)
GROUPS = ("basic", "hyperparameters", "advanced", "integrations", "worker")


def _field(default=..., *, description, group="basic", methods=None, openai=False, **kwargs):
    assert group in GROUPS, group
    extra = {"group": group}
    if methods:
        extra["methods"] = list(methods)
    if openai:
        extra["openai"] = list(openai) if isinstance(openai, list | tuple) else True
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
    method: Literal["supervised", "dpo", "reinforcement"] = _field(
        "supervised", description="supervised: learn the assistant answers; dpo: learn to prefer one answer "
                                  "over another; reinforcement: learn from a grader's rewards for the model's own "
                                  "answers (GRPO).", openai=True)
    grader: dict | None = _field(
        None, description="Reinforcement only: the grader whose score is the reward (string_check, "
                          "text_similarity, python, score_model or multi).", methods=["reinforcement"], openai=True)
    response_format: dict | None = _field(
        None, description="Reinforcement only: a json_schema response format; an answer that is not JSON "
                          "matching the schema scores 0 and counts as a parse error.", methods=["reinforcement"],
        openai=True)
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
    beta: Annotated[float, Field(ge=0, le=2)] | Literal["auto"] = _field(
        AUTO, description="DPO and reinforcement: how close the model stays to the base model; higher is closer "
                          "(DPO (0, 2], default 0.1; reinforcement [0, 2], the KL weight, default 0: no reference "
                          "model is loaded; or auto).", group="hyperparameters", methods=["dpo", "reinforcement"],
        openai=["dpo"], json_schema_extra={"min": 0, "max": 2, "auto": True})
    compute_multiplier: Annotated[float, Field(ge=0.00001, le=10)] | Literal["auto"] = _field(
        AUTO, description="Reinforcement only: scales the exploration, the completions sampled per prompt "
                          "(num_generations 8 × this when auto; 0.00001–10, or auto).", group="hyperparameters",
        methods=["reinforcement"], openai=True, json_schema_extra={"min": 0.00001, "max": 10, "auto": True})
    reasoning_effort: Literal[REASONING_EFFORTS + (AUTO,)] = _field(
        AUTO, description="Reinforcement only: default, low, medium or high, passed to a chat template that reads "
                          "reasoning_effort; a model without one ignores it (the job says so).",
        group="hyperparameters", methods=["reinforcement"], openai=True, json_schema_extra={"auto": True})
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
    quantization: Literal["none", "4bit", "8bit"] = _field(
        "none", description="QLoRA: load the base model's linear layers quantized through bitsandbytes (4bit: "
                            "NF4 with double quantization; 8bit: LLM.int8) and train LoRA adapters on top; far "
                            "less GPU memory, a little slower. The adapter is a normal LoRA adapter. LoRA only.",
        group="advanced")

    # --- advanced ----------------------------------------------------------
    max_seq_length: int = _field(1024, description="Longest example in tokens; longer ones are truncated "
                                                   "(from the end) with a warning.",
                                 group="advanced", ge=16, le=131072)
    gradient_accumulation_steps: int = _field(1, description="Micro-batches summed per optimizer step; "
                                                             "batch_size must be divisible by it × n_gpus × n_nodes.",
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
    eval_interval: Annotated[int, Field(ge=1, le=100000)] | Literal["auto"] = _field(
        DEFAULT_EVAL_INTERVAL, description="Evaluate on a fixed sample of the validation file every this many "
                                           "steps (1–100000, or auto).", group="advanced", openai=["reinforcement"],
        json_schema_extra={"min": 1, "max": 100000, "auto": True})
    eval_samples: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = _field(
        DEFAULT_EVAL_SAMPLES, description="Size of that fixed validation sample (1–4096, or auto).",
        group="advanced", openai=["reinforcement"], json_schema_extra={"min": 1, "max": 4096, "auto": True})
    # --- reinforcement (GRPO) ------------------------------------------------------
    num_generations: Annotated[int, Field(ge=2, le=64)] | Literal["auto"] = _field(
        AUTO, description="Reinforcement: completions sampled per prompt; their rewards are compared within the "
                          "group, so batch_size must be a multiple of it (2–64, or auto).", group="advanced",
        methods=["reinforcement"], json_schema_extra={"min": 2, "max": 64, "auto": True})
    max_completion_length: int = _field(
        256, description="Reinforcement: longest sampled answer in tokens; a longer one is cut there and graded "
                         "as it is.", group="advanced", methods=["reinforcement"], ge=1, le=32768)
    temperature: float = _field(
        1.0, description="Reinforcement: sampling temperature of the training completions (validation answers "
                         "are greedy).", group="advanced", methods=["reinforcement"], gt=0, le=2)
    loss_type: Literal[GRPO_LOSSES] = _field(
        "dapo", description="Reinforcement: TRL's GRPO loss. dapo (token-level, no length bias), grpo (per "
                            "sequence), dr_grpo (a constant normaliser), bnpo, cispo, sapo.", group="advanced",
        methods=["reinforcement"])
    slurm_partition: str | None = _field(None, description="Slurm partition the job is submitted to, under the "
                                                           "slurm launcher; empty takes ATTUNE_SLURM_PARTITION "
                                                           "(or the cluster's default).", group="advanced",
                                         max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    keep_last_n: int | None = _field(None, description="Keep the optimizer state of only the last N epoch "
                                                       "checkpoints (weights are kept); empty keeps all.",
                                     group="advanced", ge=1, le=1000)
    logging_steps: int = _field(1, description="Report training metrics every this many steps.",
                                group="advanced", ge=1, le=10000)
    n_gpus: int = _field(1, description="GPUs for this job on each node (processes on a host without a GPU); more "
                                        "than 1 launches torchrun.", group="advanced", ge=1, le=64)
    n_nodes: int = _field(1, description=f"Hosts for this job (1–{MAX_NODES}), n_gpus on each; more than 1 runs one "
                                         "torchrun per host, meeting at the first host's address.",
                          group="advanced", ge=1, le=MAX_NODES)
    distributed: Literal["ddp", "fsdp"] = _field(
        "ddp", description="How several processes share the work: ddp (each holds the whole model) or fsdp (the "
                           "weights, gradients and optimizer state are sharded across them; needs n_gpus × n_nodes "
                           "above 1).", group="advanced")
    # --- evaluation (the studio's; the engine never reads them) ------------------
    eval: str | None = _field(None, description="An eval (eval_…) run on every epoch checkpoint, off the training "
                                                "path; its scores land in the checkpoint's metrics.",
                              group="advanced", max_length=64, pattern=r"^eval_[A-Za-z0-9]+$")
    best_checkpoint_metric: str = _field(
        AUTO, description="What marks the best checkpoint: full_valid_loss (lowest), full_valid_mean_reward, "
                          "eval_mean_score or eval_pass_rate (highest), or eval:<testing criterion name>; auto takes "
                          "eval_mean_score when the job names an eval, else full_valid_mean_reward for "
                          "reinforcement and full_valid_loss for the others.", group="advanced", min_length=1,
        max_length=300)
    output_dir: str = _field("var/jobs/local", description="The job folder; checkpoints go under it.",
                             group="worker", min_length=1)
    init_from: str | None = _field(None, description="The snapshot folder a job on a fine-tuned model starts "
                                                     "from: a LoRA adapter (trained on, or merged into `model` "
                                                     "for full fine-tuning) or full weights.", group="worker")
    judge_url: str | None = _field(None, description="Reinforcement: the studio's /v1 address, which score_model "
                                                     "and label_model graders ask (the token comes in "
                                                     "ATTUNE_JUDGE_TOKEN).", group="worker")
    python_grader_limits: dict | None = _field(None, description="Reinforcement: the python graders' sandbox "
                                                                 "limits (cpu_seconds, memory_mb, wall_seconds).",
                                               group="worker")

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
        if not (metric in (AUTO,) + BEST_METRICS or (metric.startswith("eval:") and len(metric) > 5)):
            raise ValueError(f"{metric!r} is not one of auto, {', '.join(BEST_METRICS)} or eval:<testing criterion "
                             "name>")
        return metric

    @model_validator(mode="after")
    def _batch_divides(self):
        if isinstance(self.batch_size, int):
            per_step = self.gradient_accumulation_steps * self.world_size
            if self.batch_size % per_step:
                raise ValueError(
                    f"batch_size ({self.batch_size}) must be divisible by gradient_accumulation_steps × n_gpus × "
                    f"n_nodes ({per_step})")
        if self.distributed == "fsdp" and self.world_size == 1:
            raise ValueError("distributed fsdp shards the model across processes and needs more than one "
                             "(n_gpus × n_nodes is 1); use ddp, or raise n_gpus or n_nodes")
        metric = self.best_checkpoint_metric
        if metric.startswith("eval") and not self.eval:
            raise ValueError(f"best_checkpoint_metric {metric!r} needs an eval; name one in 'eval'")
        if self.packing and not applies_to("packing", self.method):
            raise ValueError("packing applies to supervised fine-tuning only; turn it off for "
                             f"{'DPO' if self.method == 'dpo' else self.method}")
        if metric == "full_valid_mean_reward" and self.method != "reinforcement":
            raise ValueError("best_checkpoint_metric full_valid_mean_reward is a reinforcement job's; pick "
                             "full_valid_loss or an eval's score")
        if self.quantization != "none" and self.adapter != "lora":
            raise ValueError(f"quantization {self.quantization!r} needs adapter 'lora' (QLoRA trains adapters on "
                             "a frozen quantized base; full fine-tuning cannot update quantized weights): set "
                             "adapter to lora or quantization to none")
        if self.method == "dpo" and self.beta != AUTO and self.beta == 0:
            raise ValueError("beta must be greater than 0 for DPO")
        if self.method == "reinforcement":
            self._check_reinforcement()
        else:
            for name in ("grader", "response_format"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to the reinforcement method only")
        return self

    def _check_reinforcement(self):
        if not isinstance(self.grader, dict) or not self.grader:
            raise ValueError("grader is required for the reinforcement method: the grader whose score is the "
                             "reward")
        if not isinstance(self.grader.get("type"), str):
            raise ValueError("grader must have a 'type' (string_check, text_similarity, python, score_model or "
                             "multi)")
        if self.response_format is not None:
            response_format_problem = _response_format_problem(self.response_format)
            if response_format_problem:
                raise ValueError(f"response_format {response_format_problem}")
        if isinstance(self.batch_size, int) and isinstance(self.num_generations, int) \
                and self.batch_size % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide batch_size ({self.batch_size}): batch_size "
                "counts the completions of a step, num_generations per prompt, and a prompt's completions are "
                f"compared with each other (try batch_size {self.batch_size // self.num_generations * self.num_generations or self.num_generations})")

    @property
    def world_size(self) -> int:
        """The processes training together: n_gpus on each of n_nodes."""
        return self.n_gpus * self.n_nodes

    @property
    def learning_rate(self) -> float | None:
        if self.learning_rate_multiplier == AUTO:
            return None
        return BASE_LEARNING_RATE[self.method][self.adapter] * self.learning_rate_multiplier


def _response_format_problem(value):
    """What is wrong with a response_format ({"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}), or None."""
    if value.get("type") != "json_schema":
        return "must have type 'json_schema' (a reinforcement answer is graded as text otherwise: leave it out)"
    schema = value.get("json_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("schema"), dict):
        return "needs json_schema.schema, a JSON Schema object"
    unknown = sorted(set(value) - {"type", "json_schema"}) or sorted(
        set(schema) - {"name", "schema", "strict", "description"})
    if unknown:
        return f"has an unknown key {unknown[0]!r}"
    return None


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
# Each integration and its name for people.
INTEGRATIONS = {name: info.title for name, info in Integrations.model_fields.items()}


def applies_to(name: str, method: str) -> bool:
    methods = _tags(JobSpec.model_fields[name]).get("methods")
    return methods is None or method in methods


def is_openai(name: str, method: str | None = None) -> bool:
    """Whether OpenAI's request has a place for `name` in a job of `method` (with no method: in every job)."""
    tag = _tags(JobSpec.model_fields[name]).get("openai")
    return tag is True or (method is not None and isinstance(tag, list) and method in tag)


def hyperparameters_for(method: str | None = None) -> tuple[str, ...]:
    """The hyperparameters OpenAI's request takes for a job of `method` (under
    `method.<method>.hyperparameters`); with no method, those that every method takes."""
    if method is None:
        return tuple(name for name in HYPERPARAMETERS
                     if "methods" not in _tags(JobSpec.model_fields[name]) and is_openai(name))
    return tuple(name for name, info in JobSpec.model_fields.items()
                 if _tags(info)["group"] in ("hyperparameters", "advanced") and applies_to(name, method)
                 and is_openai(name, method))


def extension_fields(method: str | None = None) -> tuple[str, ...]:
    """The fields OpenAI's request has no place for in a job of `method`, which a person sets under the
    `attune` key; with no method, those of any method."""
    methods = (method,) if method else METHODS
    return tuple(name for name, info in JobSpec.model_fields.items()
                 if _tags(info)["group"] != "worker"
                 and any(applies_to(name, m) and not is_openai(name, m) for m in methods))


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
    if not extra.get("auto") or "min" not in extra:  # a choice with "auto" among its values has no range
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


def auto_num_generations(compute_multiplier: float, batch_size) -> int:
    """8 × compute_multiplier in [2, 64]; with a batch_size given, the largest divisor of it up to that."""
    target = min(64, max(2, round(DEFAULT_NUM_GENERATIONS * compute_multiplier)))
    if isinstance(batch_size, int):
        divisors = [n for n in range(2, min(target, batch_size) + 1) if batch_size % n == 0]
        if not divisors:
            raise SpecError([("batch_size", f"must be at least 2 for the reinforcement method, to compare a "
                                            f"prompt's completions with each other (got {batch_size})")])
        return divisors[-1]
    return target


def resolve_auto(spec: JobSpec, n_train_examples: int) -> tuple[JobSpec, dict]:
    """Return (spec with no "auto" left, {the resolved hyperparameters})."""
    per_step = spec.gradient_accumulation_steps * spec.world_size
    reinforcement = spec.method == "reinforcement"
    updates = {}
    if spec.n_epochs == AUTO:
        updates["n_epochs"] = auto_n_epochs(n_train_examples)
    if spec.compute_multiplier == AUTO:
        updates["compute_multiplier"] = 1.0
    if spec.reasoning_effort == AUTO:
        updates["reasoning_effort"] = "default"
    if spec.num_generations == AUTO:
        # Only reinforcement samples several answers a prompt; the others keep the default, unused.
        updates["num_generations"] = auto_num_generations(
            updates.get("compute_multiplier", spec.compute_multiplier),
            spec.batch_size) if reinforcement else DEFAULT_NUM_GENERATIONS
    if spec.batch_size == AUTO:
        if reinforcement:
            generations = updates.get("num_generations", spec.num_generations)
            prompts = min(8, max(2, auto_batch_size(n_train_examples)))
            size = generations * prompts
            # A multiple of the generations and of the completions each process and micro-step takes.
            updates["batch_size"] = size * per_step // math.gcd(size, per_step)
        else:
            updates["batch_size"] = auto_batch_size(n_train_examples, per_step, spec.method)
    if spec.learning_rate_multiplier == AUTO:
        updates["learning_rate_multiplier"] = 1.0
    if spec.beta == AUTO:
        updates["beta"] = DEFAULT_BETA.get(spec.method, DEFAULT_BETA["dpo"])
    if spec.eval_interval == AUTO:
        interval = DEFAULT_EVAL_INTERVAL
        if reinforcement:
            batch = updates.get("batch_size", spec.batch_size)
            generations = updates.get("num_generations", spec.num_generations)
            steps_per_epoch = math.ceil(n_train_examples / max(1, batch // generations))
            interval = max(1, steps_per_epoch // 4)
        updates["eval_interval"] = interval
    if spec.eval_samples == AUTO:
        updates["eval_samples"] = DEFAULT_EVAL_SAMPLES
    if spec.best_checkpoint_metric == AUTO:
        updates["best_checkpoint_metric"] = ("eval_mean_score" if spec.eval else
                                             "full_valid_mean_reward" if reinforcement else "full_valid_loss")
    resolved = spec.model_copy(update=updates)
    resolved = JobSpec.model_validate(resolved.model_dump())  # re-check ranges and divisibility
    summary = {name: getattr(resolved, name) for name in hyperparameters_for(resolved.method)}
    summary["learning_rate"] = resolved.learning_rate
    if reinforcement:
        summary.update({name: getattr(resolved, name) for name in ("num_generations", "beta")})
    return resolved, summary


# --- form generation ---------------------------------------------------------

def form_fields() -> list[dict]:
    """Every leaf field: name (dotted), help, type, default, min, max, choices, auto, group, and methods (the
    methods it applies to; None: every method)."""
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
            "methods": extra.get("methods"),
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

"""Estimates before launch: the tokens a job will train, the disk its checkpoints will take, and how long
it will run on this studio's hardware.

- Tokens: the training file's token statistics for the base model (`datasets.stats_for`, computed once and
  kept on the file) times the resolved epochs. A DPO pair trains on both outputs, each after the prompt:
  twice the prompt-and-preferred count (the rejected output counted as long as the preferred one). A
  reinforcement prompt is answered `num_generations` times, each answer at most `max_completion_length`
  tokens after the prompt: an upper bound.
- Disk: one checkpoint an epoch. The size is that of the latest checkpoint of a past job on the same base
  model, adapter and LoRA rank. Without one it is worked out from the base's config (LoRA: r × (in + out)
  parameters for each adapted linear layer) or its weight files (full fine-tuning), in float32 with
  AdamW's two optimizer states.
- Time: the seconds per token (counted as above) of the latest succeeded jobs (up to `TIME_SAMPLE`) on the
  same base model, adapter, method and device, from start to finish, so loading, validation and checkpoints
  count; times the tokens. With no such job there is no estimate yet, and the form says so.
"""

import json
import statistics
from functools import lru_cache

from django.db.models import Prefetch

from training.engine.spec import JobSpec
from training.models import Checkpoint, FineTuningJob, JobEvent

TIME_SAMPLE = 5
# Adapted linear layers of a Llama-style decoder layer (Llama, Mistral, Qwen, SmolLM...): (in, out) features.
_LLAMA_LINEAR = {
    "q_proj": lambda c: (c["hidden_size"], c["num_attention_heads"] * c["head_dim"]),
    "k_proj": lambda c: (c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]),
    "v_proj": lambda c: (c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]),
    "o_proj": lambda c: (c["num_attention_heads"] * c["head_dim"], c["hidden_size"]),
    "gate_proj": lambda c: (c["hidden_size"], c["intermediate_size"]),
    "up_proj": lambda c: (c["hidden_size"], c["intermediate_size"]),
    "down_proj": lambda c: (c["intermediate_size"], c["hidden_size"]),
}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# float32 weights and AdamW's two states (the optimizer state is what resuming needs).
BYTES_PER_TRAINED_PARAMETER = 4 * 3


@lru_cache(maxsize=1)
def training_device():
    """Where a job started now would train: "cuda" when torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tokens_per_epoch(spec, stats):
    """Tokens one epoch trains, from the file's token statistics (`tokens_total`, `tokens_mean`)."""
    if spec.method == "dpo":
        return 2 * stats["tokens_total"]
    if spec.method == "reinforcement":
        prompts = stats["tokens_total"]
        n_prompts = round(stats["tokens_total"] / stats["tokens_mean"]) if stats["tokens_mean"] else 0
        return spec.num_generations * (prompts + n_prompts * spec.max_completion_length)
    return stats["tokens_total"]


def _config(base):
    local = base.local_path
    if local is None or not (local / "config.json").is_file():
        return None
    return json.loads((local / "config.json").read_text(encoding="utf-8"))


def lora_parameters(config, spec):
    """Parameters of the LoRA adapter on a Llama-style base, or None for another architecture."""
    if config is None:
        return None
    config = {**config, "head_dim": config.get("head_dim") or (
        config["hidden_size"] // config["num_attention_heads"] if "hidden_size" in config and
        "num_attention_heads" in config else None)}
    config.setdefault("num_key_value_heads", config.get("num_attention_heads"))
    needed = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
              "num_hidden_layers")
    if any(not config.get(key) for key in needed):
        return None
    targets = spec.lora_target_modules
    names = list(_LLAMA_LINEAR) if targets in ("all-linear", ["all-linear"]) else list(
        [targets] if isinstance(targets, str) else targets)
    if any(name not in _LLAMA_LINEAR for name in names):
        return None
    per_layer = sum(spec.lora_r * sum(_LLAMA_LINEAR[name](config)) for name in names)
    return per_layer * config["num_hidden_layers"]


def _weights_bytes(base, config):
    local = base.local_path
    if local is None:
        return None
    files = list(local.glob("*.safetensors"))
    if not files:
        return None
    stored = sum(f.stat().st_size for f in files)
    element = _DTYPE_BYTES.get(str((config or {}).get("dtype") or (config or {}).get("torch_dtype")), 4)
    return stored * 4 // element


def checkpoint_bytes(spec, base):
    """(bytes of one checkpoint, where the figure comes from), or (None, why not)."""
    past = Checkpoint.objects.filter(job__base_model=base, job__status=FineTuningJob.SUCCEEDED, bytes__gt=0)
    for checkpoint in past.order_by("-created_at", "-id")[:20]:
        resolved = checkpoint.job.resolved_spec or checkpoint.job.spec
        if resolved.get("adapter", "lora") == spec.adapter and (
                spec.adapter == "full" or resolved.get("lora_r", 16) == spec.lora_r):
            return checkpoint.bytes, f"the checkpoints of {checkpoint.job.public_id}"
    config = _config(base)
    if spec.adapter == "lora":
        parameters = lora_parameters(config, spec)
        if parameters is None:
            return None, "no past checkpoint, and the base's architecture is not one whose adapter size is known"
        return parameters * BYTES_PER_TRAINED_PARAMETER, "the adapter's size, worked out from the base's config"
    weights = _weights_bytes(base, config)
    if weights is None:
        return None, "no past checkpoint, and the base's weights are not on this disk"
    return weights * 3, "the base's weights in float32 with AdamW's two states"


def _past_seconds_per_token(spec, base, device):
    jobs = FineTuningJob.objects.filter(base_model=base, status=FineTuningJob.SUCCEEDED, trained_tokens__gt=0,
                                        started_at__isnull=False, finished_at__isnull=False)
    started = Prefetch("events", queryset=JobEvent.objects.filter(dedupe_key="started"), to_attr="started_events")
    rates = []
    for job in jobs.select_related("training_file").prefetch_related(started).order_by("-finished_at", "-id")[:50]:
        resolved = job.resolved_spec or job.spec
        ran_on = (job.started_events[0].data or {}).get("device") if job.started_events else None
        if resolved.get("method", "supervised") != spec.method or resolved.get("adapter", "lora") != spec.adapter:
            continue
        if ran_on != device:
            continue
        # Per token as this module counts them (the engine's count differs for DPO and reinforcement), from
        # the statistics the file keeps; the engine's count when the file has none.
        stats = job.training_file.stats.get(base.name) if job.training_file_id else None
        try:
            typed = JobSpec.model_validate(resolved)
            tokens = tokens_per_epoch(typed, stats) * typed.n_epochs if stats and "tokens_total" in stats else 0
        except ValueError:
            tokens = 0
        rates.append(((job.finished_at - job.started_at).total_seconds() / (tokens or job.trained_tokens),
                      job.public_id))
        if len(rates) == TIME_SAMPLE:
            break
    return rates


def estimate(spec, base, stats):
    """What the form shows before launch, for a resolved spec (no `auto` left): a dict with `tokens`,
    `checkpoint_bytes` and `disk_bytes` (or None) with `disk_basis`, and `seconds` (or None) with
    `time_basis`, which says what the figure comes from or why there is none."""
    device = training_device()
    tokens = tokens_per_epoch(spec, stats) * spec.n_epochs if stats else None
    one, disk_basis = checkpoint_bytes(spec, base)
    result = {"tokens": tokens, "n_epochs": spec.n_epochs, "checkpoint_bytes": one,
              "disk_bytes": one * spec.n_epochs if one is not None else None, "disk_basis": disk_basis,
              "device": device, "seconds": None}
    if tokens is None:
        result["time_basis"] = "no token statistics for this file and base model"
        return result
    rates = _past_seconds_per_token(spec, base, device)
    if not rates:
        result["time_basis"] = (f"no estimate yet: no finished {spec.method} job with a {spec.adapter} adapter on "
                                f"{base.name} on this studio's {device} to learn from")
        return result
    result["seconds"] = tokens * statistics.median(rate for rate, _ in rates)
    result["time_basis"] = "from " + ", ".join(public_id for _, public_id in rates) + (
        f" (the median time per trained token of {len(rates)} finished jobs)" if len(rates) > 1 else
        " (its time per trained token)")
    return result


def estimate_request(spec):
    """`estimate` for a job request as `create_job` takes it (`auto` allowed), or None when the request is
    not valid yet (create_job names what is wrong) or its file has no token statistics."""
    from training.datasets import stats_for
    from training.engine.spec import resolve_auto
    from training.jobs import _find_file, check_spec, starting_point
    from training.models import JobError

    try:
        typed = check_spec(dict(spec))
        base, _snapshot = starting_point(typed)
        training_file = _find_file(typed.training_file, "training_file", typed.method)
        resolved, _summary = resolve_auto(typed, training_file.n_examples)
    except (JobError, ValueError):
        return None
    try:
        stats = stats_for(training_file, base)
    except OSError:  # the file went missing
        stats = {}
    return estimate(resolved, base, stats if "tokens_total" in stats else None)

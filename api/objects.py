"""The JSON objects of the OpenAI API (file, fine-tuning job, job event, job checkpoint, model), built
from Attune's rows. Every field the SDK types is always sent."""

from training.engine.spec import extension_fields, hyperparameters_for
from training.ids import unix

ORGANIZATION_ID = "org-attune"
CHECKPOINT_METRICS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                      "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")
# A reinforcement checkpoint's figures (named as the engine's checkpoint lines name them).
RFT_CHECKPOINT_METRICS = ("train_mean_reward", "valid_reward_mean", "full_valid_mean_reward",
                          "full_valid_mean_parse_error", "frac_reward_zero_std", "completion_tokens_mean",
                          "full_valid_grader_scores")


def file_object(data_file):
    return {
        "id": data_file.public_id,
        "object": "file",
        "bytes": data_file.bytes,
        "created_at": unix(data_file.created_at),
        "expires_at": None,
        "filename": data_file.filename,
        "purpose": data_file.purpose,
        "status": data_file.status,
        "status_details": data_file.status_details or None,
    }


def job_integrations(job):
    integrations = (job.spec or {}).get("integrations") or {}
    items = []
    if integrations.get("wandb"):
        wandb = integrations["wandb"]
        items.append({"type": "wandb", "wandb": {
            "project": wandb.get("project"), "name": wandb.get("name"), "entity": wandb.get("entity"),
            "tags": wandb.get("tags") or [], "run_id": job.public_id}})
    for kind in ("mlflow", "tensorboard"):
        if integrations.get(kind) is not None:
            items.append({"type": kind, kind: integrations[kind]})
    return items


def job_error(job):
    if not job.error:
        return {}
    return {"code": job.error.get("code"), "message": job.error.get("message"), "param": job.error.get("param")}


def job_object(job):
    values = job.spec_values
    method = values.method
    hyperparameters = values.hyperparameters()
    return {
        "id": job.public_id,
        "object": "fine_tuning.job",
        "created_at": unix(job.created_at),
        # A job on a fine-tuned model names that model (ft:…), as it was asked for.
        "model": (job.spec or {}).get("model") or job.base_model.name,
        "organization_id": ORGANIZATION_ID,
        "status": job.status,
        "training_file": job.training_file.public_id,
        "validation_file": job.validation_file.public_id if job.validation_file_id else None,
        # The deprecated top-level object: the hyperparameters every method takes.
        "hyperparameters": {name: hyperparameters[name] for name in hyperparameters_for()},
        "method": {"type": method, method: method_section(values, hyperparameters)},
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": unix(job.finished_at),
        "trained_tokens": job.trained_tokens,
        "result_files": list(job.result_files or []),
        "error": job_error(job),
        "seed": job.seed,
        "estimated_finish": unix(job.estimated_finish),
        "integrations": job_integrations(job),
        "metadata": job.metadata,
        "user_provided_suffix": job.suffix or None,
        "usage_metrics": None,
        "shared_with_openai": False,
        "attune": {name: getattr(values, name) for name in extension_fields(method)},
    }


def method_section(values, hyperparameters):
    """`method.<type>` of a job object: its hyperparameters, and a reinforcement job's grader and format."""
    section = {"hyperparameters": hyperparameters}
    if values.method == "reinforcement":
        section.update(grader=values.grader, response_format=values.response_format)
    return section


def event_object(event):
    return {
        "id": event.public_id,
        "object": "fine_tuning.job.event",
        "created_at": unix(event.created_at),
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_object(checkpoint, best_checkpoint=...):
    metrics = {name: checkpoint.metrics.get(name) for name in CHECKPOINT_METRICS}
    # A DPO checkpoint adds its reward figures (`train_reward_margin`, `full_valid_reward_accuracy`, …).
    metrics.update({name: value for name, value in checkpoint.metrics.items() if "_reward_" in name})
    metrics.update({name: checkpoint.metrics[name] for name in RFT_CHECKPOINT_METRICS if name in checkpoint.metrics})
    metrics["step"] = float(checkpoint.step) if metrics["step"] is None else metrics["step"]
    # A job that names an eval adds each epoch's scores (`eval_mean_score`, `eval_pass_rate`, `eval_scores`).
    metrics.update({name: value for name, value in checkpoint.metrics.items() if name.startswith("eval_")})
    best = checkpoint.job.best_checkpoint() if best_checkpoint is ... else best_checkpoint
    return {
        "id": checkpoint.public_id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": unix(checkpoint.created_at),
        "fine_tuned_model_checkpoint": checkpoint.model_name,
        "fine_tuning_job_id": checkpoint.job.public_id,
        "step_number": checkpoint.step,
        "metrics": metrics,
        "attune": {"is_best": best is not None and best.pk == checkpoint.pk, "best_metric": checkpoint.job.best_metric[0]},
    }


def model_object(model_id, created, owned_by):
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}

"""Experiment trackers fed from the protocol lines (rank 0 only).

Each tracker gets the same metric names as the stdout lines (`train_loss`,
`valid_loss`, `full_valid_loss`, …) at the line's step, so W&B, MLflow,
TensorBoard and Attune's own charts agree.

- W&B: `wandb.init(project, entity, name, tags, id=<job id>, config=<resolved
  spec>)`, resumable by id; WANDB_MODE=offline works. Default tags follow
  OpenAI's: `attune/fine-tuning`, `attune/<job id>`.
- MLflow: tracking URI and experiment from the spec; params = the resolved
  spec, flattened; one run per job (run name = job id).
- TensorBoard: scalar event files under the log dir.

Not supported: logging artifacts (checkpoints) to the trackers.
"""

import os
import pathlib

TRACKED = ("train_loss", "train_mean_token_accuracy", "learning_rate", "tokens_per_second",
           "valid_loss", "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy",
           "train_reward_margin", "train_reward_accuracy", "valid_reward_margin", "valid_reward_accuracy")


def _scalars(line):
    return {k: float(v) for k, v in line.items() if k in TRACKED and isinstance(v, (int, float))}


def _flatten(data, prefix=""):
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class WandbTracker:
    def __init__(self, settings, spec_dict, job_id, output_dir):
        import wandb

        tags = ["attune/fine-tuning", *([f"attune/{job_id}"] if job_id else []), *settings.tags]
        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name or job_id,
            id=job_id,
            resume="allow" if job_id else None,
            tags=tags,
            config=spec_dict,
            dir=str(output_dir),
            reinit="finish_previous",
        )

    def handle(self, line):
        scalars = _scalars(line)
        if scalars and "step" in line:
            self.run.log(scalars, step=line["step"])

    def close(self, ok=True):
        self.run.finish(exit_code=0 if ok else 1)


class MlflowTracker:
    def __init__(self, settings, spec_dict, job_id):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_experiment(settings.experiment)
        self.run = mlflow.start_run(run_name=job_id)
        params = {k: ("" if v is None else str(v))[:500] for k, v in _flatten(spec_dict).items()}
        mlflow.log_params(params)

    def handle(self, line):
        scalars = _scalars(line)
        if scalars and "step" in line:
            self.mlflow.log_metrics(scalars, step=int(line["step"]))

    def close(self, ok=True):
        self.mlflow.end_run(status="FINISHED" if ok else "FAILED")


class TensorboardTracker:
    def __init__(self, settings, output_dir):
        from torch.utils.tensorboard import SummaryWriter

        log_dir = settings.log_dir or os.path.join(output_dir, "tensorboard")
        pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=log_dir)

    def handle(self, line):
        for key, value in _scalars(line).items():
            self.writer.add_scalar(key, value, global_step=line["step"])

    def close(self, ok=True):
        self.writer.close()


def open_trackers(spec, spec_dict):
    """The trackers the spec asks for."""
    trackers = []
    settings = spec.integrations
    if settings.wandb:
        trackers.append(WandbTracker(settings.wandb, spec_dict, spec.job_id, spec.output_dir))
    if settings.mlflow:
        trackers.append(MlflowTracker(settings.mlflow, spec_dict, spec.job_id))
    if settings.tensorboard:
        trackers.append(TensorboardTracker(settings.tensorboard, spec.output_dir))
    return trackers

"""The models `/v1/models` lists and the other routes accept by name: every
base model and every servable checkpoint, the final one under its job's
`fine_tuned_model` name, each as an OpenAI model object (id, created, owned_by).

A fine-tuned model is its checkpoint: deleting the model deletes that
checkpoint's weights and row. The job keeps its `fine_tuned_model` field, as
OpenAI's jobs do after their model is deleted.
"""

import shutil
from dataclasses import dataclass

from django.conf import settings
from django.db.models.deletion import ProtectedError, RestrictedError

from api.errors import ApiError
from api.objects import model_object
from training.ids import unix
from training.models import BaseModel, Checkpoint

BASE_OWNER = "system"


def _owner(checkpoint):
    user = checkpoint.job.created_by
    return f"user-{user.username}" if user else "org-attune"


@dataclass
class FoundModel:
    name: str
    base_model: BaseModel | None = None
    checkpoint: Checkpoint | None = None

    def as_object(self):
        if self.base_model is not None:
            return model_object(self.name, unix(self.base_model.created_at), BASE_OWNER)
        return model_object(self.name, unix(self.checkpoint.created_at), _owner(self.checkpoint))

    def delete(self):
        if self.base_model is not None:
            raise ApiError(f"'{self.name}' is a base model; the API deletes fine-tuned models and checkpoints only.",
                           param="model", code="model_not_deletable")
        checkpoint = self.checkpoint
        if not checkpoint.job.is_finished:
            raise ApiError(f"'{self.name}' belongs to job {checkpoint.job.public_id}, which is still "
                           f"{checkpoint.job.status}; cancel it or wait for it to finish first.", param="model",
                           code="model_in_use")
        folder = checkpoint.full_path.resolve()
        try:
            checkpoint.delete()
        except (ProtectedError, RestrictedError):
            raise ApiError(f"'{self.name}' is still referenced (ratings or rating tasks use it) and cannot be "
                           "deleted.", param="model", code="model_in_use") from None
        if folder.is_relative_to(settings.ATTUNE_HOME.resolve()) and folder != settings.ATTUNE_HOME.resolve():
            shutil.rmtree(folder, ignore_errors=True)


def _checkpoints():
    return Checkpoint.objects.select_related("job__base_model", "job__created_by").order_by("job__created_at", "step")


def list_models():
    data = [model_object(b.name, unix(b.created_at), BASE_OWNER) for b in BaseModel.objects.order_by("name")]
    seen = {d["id"] for d in data}
    for checkpoint in _checkpoints():
        name = checkpoint.model_name
        if name not in seen:
            seen.add(name)
            data.append(model_object(name, unix(checkpoint.created_at), _owner(checkpoint)))
    return data


RATER_OWNER = "org-attune"


def rater_models(user):
    """What an evaluator's key lists: the snapshots of the rating tasks assigned to them, each under its
    opaque alias while the task is blind to them and under its name once the names show; never a job id
    or an admin's user name."""
    data, seen = [], set()
    for task in user.rating_tasks.order_by("created_at", "id"):
        revealed = task.names_revealed_to(user)
        names = [name if revealed else task.snapshot_alias(user, name) for name in task.snapshot_names]
        for name in sorted(names):
            if name not in seen:
                seen.add(name)
                data.append(model_object(name, unix(task.created_at), RATER_OWNER))
    return data


def find_model(name):
    """A base model or a checkpoint by its API name, or None."""
    base = BaseModel.objects.filter(name=name).first()
    if base is not None:
        return FoundModel(name, base_model=base)
    if not name.startswith("ft:"):
        return None
    candidates = _checkpoints().filter(job__fine_tuned_model=name, is_final=True)
    parts = name.split(":")
    if parts[-1].startswith("ckpt-step-") and len(parts) >= 5:
        candidates = _checkpoints().filter(model_tag=parts[-2])
    for checkpoint in candidates:
        if checkpoint.model_name == name:
            return FoundModel(name, checkpoint=checkpoint)
    return None

"""Snapshots: everything a prompt can be sent to.

A snapshot is a base model (`attune-tiny`), a fine-tuned model
(`ft:<base>:<suffix>:<tag>`, the final epoch's checkpoint) or any epoch
checkpoint (`ft:<base>:<suffix>:<tag>:ckpt-step-<N>`). The playground, the
rating tasks and `/v1/chat/completions` all name snapshots this way.

The stable interface, for the API and the pages:

    resolve_snapshot(model_name) -> Snapshot      # raises UnknownModel
    snapshot_for_checkpoint(checkpoint) -> Snapshot
    list_snapshots(query="", job=None, suffix=None, epoch=None, limit=200) -> list[Snapshot]

A `Snapshot` is a plain frozen dataclass: the inference backends read only
its fields, never the database, so a snapshot can also be built by hand
(`Snapshot.from_paths`) for a model that lives only on disk.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

BASE = "base"
LORA = "lora"
FULL = "full"


class UnknownModel(LookupError):
    """The name is not a base model, a fine-tuned model or a checkpoint of this studio."""

    def __init__(self, model_name):
        self.model_name = model_name
        super().__init__(f"The model '{model_name}' does not exist: it is not a base model, a fine-tuned "
                         "model or a checkpoint of this studio.")

    def __str__(self):
        return self.args[0]


@dataclass(frozen=True)
class Snapshot:
    name: str                    # the model name requests use
    kind: str                    # base | lora | full
    base_model: str              # the BaseModel's name
    base_path: str               # what from_pretrained receives for the base
    weights_path: str = ""       # the adapter folder (lora) or weights folder (full); "" for a base
    job_id: str = ""             # ftjob-…
    checkpoint_id: str = ""      # ftckpt_…
    suffix: str = ""
    epoch: int | None = None
    step: int | None = None
    is_final: bool = False
    lora_rank: int | None = None
    created: int = 0
    trust_remote_code: bool = False

    @property
    def label(self):
        """A short human label for lists: the name and, for checkpoints, the epoch."""
        if self.kind == BASE:
            return f"{self.name} (base)"
        tail = f"epoch {self.epoch}, step {self.step}" + (", final" if self.is_final else "")
        return f"{self.name} ({tail})"

    @property
    def key(self):
        """A stable identifier for caches: never the same for two different weight folders."""
        if self.kind == BASE:
            return "base-" + hashlib.sha1(self.base_path.encode()).hexdigest()[:12]
        return self.checkpoint_id or ("path-" + hashlib.sha1(self.weights_path.encode()).hexdigest()[:12])

    def as_dict(self):
        return {"name": self.name, "kind": self.kind, "base_model": self.base_model, "job_id": self.job_id,
                "checkpoint_id": self.checkpoint_id, "suffix": self.suffix, "epoch": self.epoch,
                "step": self.step, "is_final": self.is_final, "lora_rank": self.lora_rank, "label": self.label}

    @classmethod
    def from_paths(cls, name, base_path, weights_path="", base_model=None):
        """A snapshot of files on disk with no database row (the inference server, tests, benchmarks)."""
        kind = BASE
        if weights_path:
            kind = LORA if (Path(weights_path) / "adapter_config.json").exists() else FULL
        return cls(name=name, kind=kind, base_model=base_model or name, base_path=str(base_path),
                   weights_path=str(weights_path or ""), lora_rank=adapter_rank(weights_path) if kind == LORA else None)


def adapter_rank(folder):
    """The largest LoRA rank in a PEFT adapter folder (`r`, or the biggest of `rank_pattern`)."""
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks) or None


def _base_snapshot(base):
    return Snapshot(name=base.name, kind=BASE, base_model=base.name, base_path=base.load_path,
                    created=int(base.created_at.timestamp()), trust_remote_code=base.trust_remote_code)


def snapshot_for_checkpoint(checkpoint):
    job = checkpoint.job
    folder = checkpoint.full_path
    kind = LORA if checkpoint.is_adapter else FULL
    return Snapshot(
        name=checkpoint.model_name, kind=kind, base_model=job.base_model.name, base_path=job.base_model.load_path,
        weights_path=str(folder), job_id=job.public_id, checkpoint_id=checkpoint.public_id, suffix=job.suffix,
        epoch=checkpoint.epoch, step=checkpoint.step, is_final=checkpoint.is_final,
        lora_rank=adapter_rank(folder) if kind == LORA else None,
        created=int(checkpoint.created_at.timestamp()), trust_remote_code=job.base_model.trust_remote_code,
    )


def resolve_snapshot(model_name):
    """The snapshot a model name stands for, or UnknownModel."""
    from training.models import BaseModel, Checkpoint

    name = (model_name or "").strip()
    if not name:
        raise UnknownModel(model_name)
    if not name.startswith("ft:"):
        base = BaseModel.objects.filter(name=name).first()
        if base is None:
            raise UnknownModel(model_name)
        return _base_snapshot(base)

    checkpoint = Checkpoint.for_model_name(name)
    if checkpoint is None:
        raise UnknownModel(model_name)
    return snapshot_for_checkpoint(checkpoint)


def first_lineup():
    """What the compare page offers before anything is picked: the default base model, its newest
    succeeded fine-tune and that job's first epoch checkpoint, when they exist."""
    from training.models import BaseModel, Checkpoint, FineTuningJob

    base = BaseModel.default()
    if base is None:
        return []
    lineup = [_base_snapshot(base)]
    job = FineTuningJob.objects.filter(base_model=base, status=FineTuningJob.SUCCEEDED).select_related(
        "base_model").order_by("-finished_at").first()
    checkpoints = list(Checkpoint.objects.filter(job=job).order_by("epoch")) if job else []
    # The final checkpoint, then the first epoch's when it is another one.
    for checkpoint in checkpoints[-1:] + (checkpoints[:1] if len(checkpoints) > 1 else []):
        checkpoint.job = job
        if checkpoint.full_path.is_dir():
            lineup.append(snapshot_for_checkpoint(checkpoint))
    return lineup


def list_snapshots(query="", job=None, suffix=None, epoch=None, limit=200):
    """Base models, then checkpoints newest job first; `query` matches a name, job id or suffix."""
    from django.db.models import Q

    from training.models import BaseModel, Checkpoint

    query = (query or "").strip()
    if query.startswith("ft:"):
        # A pasted model name finds its snapshot even when no field holds the whole name.
        try:
            found = resolve_snapshot(query)
        except UnknownModel:
            found = None
        if found and (not job or found.job_id == job) and (epoch is None or found.epoch == epoch):
            return [found]
    out = []
    if not job and not suffix and epoch is None:
        bases = BaseModel.objects.all()
        if query:
            bases = bases.filter(name__icontains=query)
        out.extend(_base_snapshot(b) for b in bases)
    checkpoints = Checkpoint.objects.select_related("job__base_model").order_by("-job__created_at", "-step")
    if job:
        checkpoints = checkpoints.filter(job__public_id=job)
    if suffix:
        checkpoints = checkpoints.filter(job__suffix__icontains=suffix)
    if epoch is not None:
        checkpoints = checkpoints.filter(epoch=epoch)
    if query:
        checkpoints = checkpoints.filter(Q(job__public_id__icontains=query) | Q(job__suffix__icontains=query)
                                         | Q(job__fine_tuned_model__icontains=query)
                                         | Q(model_tag__icontains=query) | Q(public_id__icontains=query)
                                         | Q(job__base_model__name__icontains=query))
    for checkpoint in checkpoints[: max(0, limit - len(out))]:
        out.append(snapshot_for_checkpoint(checkpoint))
    return out[:limit]

"""Tiny models for the playground tests, built here with no download, and their rows.

`build_tiny_models(root)`: attune-tiny's architecture built from a small corpus, three LoRA adapters with
random (non-zero) weights of ranks 4, 8 and 8, one adapter of rank 32 (too big for a server started with
--max-lora-rank 16), and a full-weight checkpoint (the base with perturbed weights); each built once.

`register_snapshots(models)` registers them in the database as a base model, a job and its epoch
checkpoints, so they resolve by name like real ones. `tiny_snapshots`, `answers` and `stream_in_thread`
send prompts to them through any backend without a database. No pytest here: a studio's process
imports this too.
"""

from dataclasses import dataclass
from pathlib import Path

CORPUS = [
    "where is my order 1234", "please cancel my order", "i want a refund for the lamp",
    "how do i reset my password", "update my shipping address to berlin", "the mug arrived broken",
    "speak to a human please", "close my account", "does the kettle come in blue", "track order 9876",
]


@dataclass
class TinyModels:
    root: Path
    base: Path
    adapters: list
    big_adapter: Path
    full: Path


def _make_adapter(base, out, rank, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)  # make each adapter's answers differ clearly from the base's
    peft_model.save_pretrained(out)


def build_tiny_models(root):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.demo_model import build_tiny_model

    root = Path(root)
    base = root / "tiny-base"
    if not (base / "model.safetensors").exists():
        build_tiny_model(base, CORPUS * 3, seed=1, pretrain_steps=0)
    adapters = []
    for n, (rank, seed) in enumerate([(4, 11), (8, 12), (8, 13)]):
        folder = root / "job" / "checkpoints" / f"epoch-{n + 1}-step-{(n + 1) * 10}"
        if not (folder / "adapter_model.safetensors").exists():
            _make_adapter(base, folder, rank, seed)
            AutoTokenizer.from_pretrained(base).save_pretrained(folder)
        adapters.append(folder)
    big = root / "big-rank"
    if not (big / "adapter_model.safetensors").exists():
        _make_adapter(base, big, 32, 14)
    full = root / "full" / "checkpoints" / "epoch-1-step-10"
    if not (full / "model.safetensors").exists():
        model = AutoModelForCausalLM.from_pretrained(base)
        torch.manual_seed(15)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        model.save_pretrained(full, safe_serialization=True)
        shutil.copy(base / "tokenizer.json", full / "tokenizer.json")
        shutil.copy(base / "tokenizer_config.json", full / "tokenizer_config.json")
        if (base / "chat_template.jinja").exists():
            shutil.copy(base / "chat_template.jinja", full / "chat_template.jinja")
    return TinyModels(root=root, base=base, adapters=adapters, big_adapter=big, full=full)


@dataclass
class Registered:
    base: object
    job: object
    checkpoints: list
    full_job: object
    full_checkpoint: object

    @property
    def names(self):
        return [self.base.name] + [c.model_name for c in self.checkpoints]


def register_snapshots(models):
    """A base model, a LoRA job with three epoch checkpoints, and a full fine-tune with one."""
    from django.conf import settings

    from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob

    base = BaseModel.objects.create(name="tiny", source=str(models.base), has_chat_template=True)
    data = DataFile.objects.create(filename="train.jsonl", path="train.jsonl", status="processed", n_examples=10)
    job = FineTuningJob.objects.create(base_model=base, training_file=data, suffix="intents", status="succeeded")
    checkpoints = []
    for epoch, folder in enumerate(models.adapters, 1):
        checkpoints.append(Checkpoint.objects.create(
            job=job, epoch=epoch, step=epoch * 10, path=str(folder.relative_to(settings.ATTUNE_HOME)),
            is_final=epoch == len(models.adapters)))
    job.fine_tuned_model = job.model_name()
    job.save(update_fields=["fine_tuned_model"])
    full_job = FineTuningJob.objects.create(base_model=base, training_file=data, suffix="full", status="succeeded")
    full_checkpoint = Checkpoint.objects.create(job=full_job, epoch=1, step=10, is_final=False,
                                                path=str(models.full.relative_to(settings.ATTUNE_HOME)))
    return Registered(base=base, job=job, checkpoints=checkpoints, full_job=full_job, full_checkpoint=full_checkpoint)


def tiny_snapshots(models, n_adapters=2):
    """The tiny base and its first `n_adapters` adapters, as snapshots of the files on disk."""
    from playground.snapshots import Snapshot

    base = Snapshot.from_paths("tiny", models.base)
    loras = [Snapshot.from_paths(f"lora-{n}", models.base, folder, base_model="tiny")
             for n, folder in enumerate(models.adapters[:n_adapters])]
    return [base, *loras]


def answers(backend, snapshots, messages, params):
    """One final event (done or error) per snapshot, from one request to `backend`."""
    import asyncio

    from playground.inference import collect

    return asyncio.run(collect(backend.generate(snapshots, messages, params), len(snapshots)))


def stream_in_thread(backend, snapshots, messages, params, wait_s=60):
    """Start a request in a thread of its own; once its first event is in, return (events, thread):
    `events` fills as the stream goes on."""
    import asyncio
    import threading

    events, started = [], threading.Event()

    async def stream():
        async for event in backend.generate(snapshots, messages, params):
            events.append(event)
            started.set()

    thread = threading.Thread(target=lambda: asyncio.run(stream()))
    thread.start()
    assert started.wait(wait_s), f"no event within {wait_s} s"
    return events, thread

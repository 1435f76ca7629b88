"""Checkpoint export: a checkpoint as its adapter, or merged into its base, as a zip streamed from disk.

- `adapter`: the checkpoint folder's weights and config (adapter_model.safetensors
  + adapter_config.json, or model.safetensors + config.json for a full
  fine-tune), the tokenizer and attune_spec.json. Trainer's resume state
  (optimizer, scheduler, RNG) is left out.
- `merged`: the base model with the LoRA folded in (PEFT's
  `merge_and_unload`), saved as safetensors with its config and tokenizer:
  a plain model any transformers or vLLM loads. Built once under
  ATTUNE_HOME/exports/ and reused.

The zip is written while it is sent (ZIP_STORED: safetensors do not
compress), so memory stays flat whatever the model size.
"""

import os
import shutil
import zipfile
from pathlib import Path

from django.conf import settings

RESUME_STATE = {"optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin",
                "COMPLETE", "attune_state.json"}
CHUNK = 1 << 20


def export_files(folder):
    """The files of a checkpoint folder that belong in an export: (path, name in the zip)."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name in RESUME_STATE or path.name.startswith("rng_state"):
            continue
        if path.suffix in (".bin", ".pt", ".pth", ".pkl"):  # safetensors only
            continue
        out.append((path, str(path.relative_to(folder))))
    return out


def merged_folder(checkpoint):
    """The merged model of a LoRA checkpoint, built on first request."""
    target = settings.ATTUNE_HOME / "exports" / f"{checkpoint.public_id}-merged"
    if (target / "COMPLETE").exists():
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = checkpoint.job.base_model
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(base.load_path, dtype=torch.float32, use_safetensors=True,
                                                 trust_remote_code=base.trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(checkpoint.full_path)).merge_and_unload()
    merged.save_pretrained(staging, safe_serialization=True)
    tokenizer_source = checkpoint.full_path if (checkpoint.full_path / "tokenizer_config.json").exists() \
        else base.load_path
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(staging)
    spec = checkpoint.full_path / "attune_spec.json"
    if spec.exists():
        shutil.copy(spec, staging / "attune_spec.json")
    (staging / "COMPLETE").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


class _Pipe:
    """A write-only file for ZipFile whose bytes are handed out as they are written."""

    def __init__(self):
        self.chunks = []
        self.offset = 0

    def write(self, data):
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self):
        return self.offset

    def flush(self):
        pass

    def drain(self):
        out, self.chunks = b"".join(self.chunks), []
        return out


def stream_zip(files):
    """Yield a zip of (path, name) pairs, reading each file in chunks."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in files:
            info = zipfile.ZipInfo.from_file(path, arcname=name)
            info.compress_type = zipfile.ZIP_STORED
            with open(path, "rb") as source, archive.open(info, mode="w", force_zip64=True) as target:
                while block := source.read(CHUNK):
                    target.write(block)
                    yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()

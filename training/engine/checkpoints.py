"""The job folder's checkpoint layout, written so a half-written one is never loaded.

    <output_dir>/
      checkpoints/epoch-<E>-step-<N>/   one per epoch end; a servable snapshot
      pause-state/                      the state saved on SIGUSR1 (at most one)
      .trainer/checkpoint-<N>/          where Trainer writes; renamed when complete

Each finished folder holds the weights (adapter_model.safetensors +
adapter_config.json, or model.safetensors + config.json), the tokenizer,
`attune_spec.json` (the resolved spec), `attune_state.json` (epoch, step,
metrics, trained tokens) and Trainer's resume state (optimizer.pt,
scheduler.pt, rng_state*.pth, trainer_state.json). `COMPLETE` is written
last, every file and the folder are flushed to the disk (fsync), then the
folder is renamed into place in one `os.replace` and its parent flushed, so
a power cut never publishes a folder whose files are not all there.

What a kill can leave behind is tidied before a run starts (`tidy`): an
unfinished `.trainer/checkpoint-<N>` is removed; a `<name>.old` (the folder
being replaced) is removed, or put back when the kill came before its
replacement took its place. A `.old` folder is never taken for a checkpoint.

`keep_last_n` removes the resume state of older epoch checkpoints (their
weights stay servable); only the newest can then be resumed from.
"""

import json
import os
import pathlib
import re
import shutil

from .spec import WORKER_FIELDS

MARKER = "COMPLETE"
SPEC_FILE = "attune_spec.json"
STATE_FILE = "attune_state.json"
RESUME_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "trainer_state.json",
                "training_args.bin")  # optimizer.bin: the full optimizer state FSDP writes

# The spec fields that may differ between a run and its resume without changing the training.
# n_nodes as n_gpus: batch_size is the global batch whatever the number of processes, so only the data order
# changes; distributed is compared (a DDP optimizer state and an FSDP one are saved differently).
IGNORED_ON_RESUME = {*WORKER_FIELDS, "integrations", "suffix", "n_gpus", "n_nodes"}
EPOCH_FOLDER = re.compile(r"epoch-\d+-step-\d+")
TRASH_SUFFIX = ".old"


def checkpoints_dir(output_dir):
    return pathlib.Path(output_dir) / "checkpoints"


def pause_dir(output_dir):
    return pathlib.Path(output_dir) / "pause-state"


def trainer_dir(output_dir):
    return pathlib.Path(output_dir) / ".trainer"


def epoch_name(epoch, step):
    return f"epoch-{epoch}-step-{step}"


def finalize(written, final, spec_dict, state):
    """Add our files to Trainer's folder `written`, mark it complete and move it to `final`."""
    written, final = pathlib.Path(written), pathlib.Path(final)
    (written / SPEC_FILE).write_text(json.dumps(spec_dict, indent=2, sort_keys=True))
    (written / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    (written / MARKER).write_text("")
    _sync_tree(written)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Replacing (a pause state, or an epoch re-saved after a resume): move the old one aside first.
        trash = final.with_name(final.name + TRASH_SUFFIX)
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(written, final)
        _sync(final.parent)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(written, final)
        _sync(final.parent)
    return final


def _sync(path):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(folder):
    """fsync every file under `folder`, then each folder, deepest first, `folder` itself last."""
    folders = []
    for root, _dirs, files in os.walk(folder):
        folders.append(root)
        for name in files:
            _sync(os.path.join(root, name))
    for root in reversed(folders):
        _sync(root)


def tidy(output_dir):
    """Clear what a kill left in the job folder; returns one sentence per thing done."""
    done = []
    for partial in sorted(trainer_dir(output_dir).glob("checkpoint-*")):
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            done.append(f"Removed the unfinished checkpoint folder {partial.name} of an earlier run.")
    trash = sorted(checkpoints_dir(output_dir).glob(f"*{TRASH_SUFFIX}"))
    pause_trash = pause_dir(output_dir).with_name(pause_dir(output_dir).name + TRASH_SUFFIX)
    for old in trash + ([pause_trash] if pause_trash.is_dir() else []):
        kept = old.with_name(old.name.removesuffix(TRASH_SUFFIX))
        if not kept.exists() and is_complete(old):
            os.replace(old, kept)  # killed between moving it aside and putting its replacement in place
            _sync(kept.parent)
            done.append(f"Put back {kept.name}, whose replacement was not written.")
        else:
            shutil.rmtree(old, ignore_errors=True)
    return done


def folder_bytes(folder):
    return sum(f.stat().st_size for f in pathlib.Path(folder).rglob("*") if f.is_file())


def weight_bytes(folder):
    return sum(f.stat().st_size for f in pathlib.Path(folder).glob("*.safetensors"))


def read_state(folder):
    return json.loads((pathlib.Path(folder) / STATE_FILE).read_text())


def is_complete(folder):
    return (pathlib.Path(folder) / MARKER).exists()


def is_resumable(folder):
    return is_complete(folder) and (pathlib.Path(folder) / "trainer_state.json").exists()


def epoch_checkpoints(output_dir):
    """Complete epoch checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    found = [p for p in root.glob("epoch-*-step-*")
             if EPOCH_FOLDER.fullmatch(p.name) and p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: read_state(p)["step"])


def latest_resumable(output_dir):
    """The complete checkpoint or pause state with the highest step, or None."""
    candidates = [p for p in epoch_checkpoints(output_dir) if is_resumable(p)]
    pause = pause_dir(output_dir)
    if pause.is_dir() and is_resumable(pause):
        candidates.append(pause)
    if not candidates:
        return None
    return max(candidates, key=lambda p: read_state(p)["step"])


def prune(output_dir, keep_last_n):
    """Drop the resume state of all but the newest `keep_last_n` epoch checkpoints."""
    if not keep_last_n:
        return []
    pruned = []
    for folder in epoch_checkpoints(output_dir)[:-keep_last_n]:
        removed = False
        for item in folder.iterdir():
            if item.name in RESUME_FILES or item.name.startswith("rng_state"):
                item.unlink()
                removed = True
        if removed:
            pruned.append(folder)
    return pruned


def spec_mismatches(saved, current):
    """["field: saved → current", ...] for the fields that change the training."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in IGNORED_ON_RESUME:
            continue
        if saved.get(key) != current.get(key):
            out.append(f"{key}: {saved.get(key)!r} → {current.get(key)!r}")
    return out

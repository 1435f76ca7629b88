"""The job folder's checkpoint layout across kills and a full disk (training/engine/checkpoints.py).

The fast tests write folders as the engine does; the slow ones run the engine on a tiny model, one of
them on a real 1.5 MB tmpfs so the save really runs out of space.
"""

import json
import os
import subprocess

import pytest

from tests.training.engine_helpers import demo_files, of_type, run_in_process, write_spec
from training.engine import checkpoints


def trainer_folder(output_dir, step, complete_files=True):
    """What Trainer leaves in .trainer/checkpoint-<step> before the callback finishes it."""
    written = checkpoints.trainer_dir(output_dir) / f"checkpoint-{step}"
    (written / "nested").mkdir(parents=True)
    (written / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (written / "nested" / "rng_state.pth").write_bytes(b"\1" * 8)
    if complete_files:
        (written / "trainer_state.json").write_text("{}")
    return written


def publish(output_dir, epoch, step):
    final = checkpoints.checkpoints_dir(output_dir) / checkpoints.epoch_name(epoch, step)
    state = {"step": step, "epoch": epoch, "metrics": {"step": step}, "kind": "epoch"}
    return checkpoints.finalize(trainer_folder(output_dir, step), final, {"seed": 0}, state)


def test_finalize_flushes_every_file_and_folder_before_the_rename_that_publishes_them(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), final.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    final = checkpoints.checkpoints_dir(tmp_path) / "epoch-1-step-6"
    written = trainer_folder(tmp_path, 6)
    checkpoints.finalize(written, final, {"seed": 0}, {"step": 6, "epoch": 1, "metrics": {}})
    before = {os.path.relpath(path, written) for path, published in synced if not published}
    expected = {os.path.relpath(p, final) for p in final.rglob("*")} | {"."}
    assert before == expected  # every file, every folder, the folder itself: all before the rename
    assert synced[-1] == (str(final.parent), True)  # then the rename itself


def test_a_folder_moved_aside_is_never_taken_for_a_checkpoint(tmp_path):
    first = publish(tmp_path, 1, 6)
    second = publish(tmp_path, 2, 12)
    # An epoch saved again after a resume is moved aside as <name>.old first; a kill can leave it there.
    os.replace(second, second.with_name(second.name + ".old"))
    assert checkpoints.epoch_checkpoints(tmp_path) == [first]
    assert checkpoints.latest_resumable(tmp_path) == first


def test_tidy_removes_unfinished_trainer_folders_and_copies_moved_aside(tmp_path):
    kept = publish(tmp_path, 1, 6)
    aside = kept.with_name(kept.name + ".old")
    publish(tmp_path, 1, 5).rename(aside)
    trainer_folder(tmp_path, 12, complete_files=False)  # killed while Trainer wrote it
    sentences = checkpoints.tidy(tmp_path)
    assert sentences == ["Removed the unfinished checkpoint folder checkpoint-12 of an earlier run."]
    assert list(checkpoints.trainer_dir(tmp_path).iterdir()) == []
    assert sorted(p.name for p in checkpoints.checkpoints_dir(tmp_path).iterdir()) == ["epoch-1-step-6"]


def test_tidy_puts_back_a_checkpoint_whose_replacement_was_not_written(tmp_path):
    pause = checkpoints.finalize(trainer_folder(tmp_path, 3), checkpoints.pause_dir(tmp_path), {},
                                 {"step": 3, "epoch": None, "metrics": {}, "kind": "pause"})
    epoch = publish(tmp_path, 1, 6)
    # Killed between moving each aside and renaming its replacement into place.
    os.replace(epoch, epoch.with_name(epoch.name + ".old"))
    os.replace(pause, pause.with_name(pause.name + ".old"))
    assert checkpoints.latest_resumable(tmp_path) is None
    assert checkpoints.tidy(tmp_path) == ["Put back epoch-1-step-6, whose replacement was not written.",
                                          "Put back pause-state, whose replacement was not written."]
    assert checkpoints.epoch_checkpoints(tmp_path) == [epoch]
    assert checkpoints.latest_resumable(tmp_path) == epoch and checkpoints.is_resumable(pause)


# --- the real engine (slow) ---------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_a_resume_after_a_kill_in_the_middle_of_a_save_uses_the_checkpoint_moved_aside(tmp_path, tiny_model):
    train, _ = demo_files(tmp_path)
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), n_epochs=1)
    status, lines = run_in_process(spec)
    assert status == 0
    job = tmp_path / "job"
    folder = job / "checkpoints" / "epoch-1-step-6"
    # A kill while epoch 1 was saved again: the complete folder moved aside, its replacement half-written.
    os.replace(folder, folder.with_name(folder.name + ".old"))
    trainer_folder(job, 6, complete_files=False)

    status, resumed = run_in_process(spec, "--resume")
    assert status == 0, resumed[-1]
    texts = [line["text"] for line in of_type(resumed, "message")]
    assert texts[:3] == ["Removed the unfinished checkpoint folder checkpoint-6 of an earlier run.",
                         "Put back epoch-1-step-6, whose replacement was not written.",
                         "Resuming from epoch-1-step-6 at step 6."]
    assert resumed[-1]["type"] == "done" and resumed[-1]["final_checkpoint"] == str(folder)
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["epoch-1-step-6"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs: room for one checkpoint of the tiny model (about 1 MB) and not for a second."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_pauses_the_engine_and_resume_continues_once_there_is_room(tmp_path, tiny_model, small_disk):
    train, _ = demo_files(tmp_path)
    job = small_disk / "job"
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), n_epochs=2, output_dir=str(job),
                      lora_r=4)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    assert [c["epoch"] for c in of_type(lines, "checkpoint")] == [1]
    paused = lines[-1]
    assert (paused["type"], paused["reason"], paused["step"]) == ("paused", "disk_full", 12)
    assert paused["message"] == (
        f"The disk holding {job} is full: the state at step 12 could not be saved. The job is paused. Free "
        "space (or set keep_last_n to keep fewer optimizer states), then resume it: it continues from "
        "epoch-1-step-6 (step 6).")
    assert list(checkpoints.trainer_dir(job).glob("checkpoint-*")) == []  # the unfinished save is gone

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # room made
    status, resumed = run_in_process(spec, "--resume")
    assert status == 0 and resumed[-1]["type"] == "done"
    assert of_type(resumed, "message")[0]["text"] == "Resuming from epoch-1-step-6 at step 6."
    assert [c["epoch"] for c in of_type(resumed, "checkpoint")] == [2]
    assert json.loads((job / "checkpoints" / "epoch-2-step-12" / "attune_state.json").read_text())["step"] == 12

"""Checkpoint export: the adapter as it is, or merged into the base, as a zip streamed from disk."""

import asyncio
import io
import zipfile

import pytest

from playground.inference import SamplingParams, collect
from playground.snapshots import resolve_snapshot


def _zip(resp):
    assert resp.status_code == 200, resp.content[:300] if not resp.streaming else resp.status_code
    assert resp.streaming and resp["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(resp.streaming_content)))


def test_adapter_download_holds_the_adapter_and_tokenizer_only(admin_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    (checkpoint.full_path / "optimizer.pt").write_bytes(b"resume state")
    archive = _zip(admin_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/?format=adapter"))
    names = set(archive.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "optimizer.pt" not in names
    original = (checkpoint.full_path / "adapter_model.safetensors").read_bytes()
    assert archive.read("adapter_model.safetensors") == original


def test_merged_download_is_a_plain_model_that_answers_like_base_plus_adapter(admin_client, snapshots, tmp_path,
                                                                             builtin_backend):
    from playground.snapshots import Snapshot

    checkpoint = snapshots.checkpoints[1]
    archive = _zip(admin_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/?format=merged"))
    names = set(archive.namelist())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and "adapter_config.json" not in names
    archive.extractall(tmp_path / "merged")
    messages = [{"role": "user", "content": "please cancel my order"}]
    params = SamplingParams(temperature=0, max_tokens=8)
    merged = Snapshot.from_paths("merged", tmp_path / "merged", tmp_path / "merged")
    adapter = resolve_snapshot(checkpoint.model_name)
    texts = asyncio.run(collect(builtin_backend.generate([merged, adapter], messages, params), 2))
    assert texts[0].type == "done" and texts[0].text == texts[1].text


def test_a_full_weight_checkpoint_downloads_its_weights(admin_client, snapshots):
    checkpoint = snapshots.full_checkpoint
    archive = _zip(admin_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/?format=merged"))
    assert "model.safetensors" in archive.namelist()


def test_only_admins_download_checkpoints(evaluator_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    assert evaluator_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/").status_code == 403


@pytest.mark.parametrize("query, status", [("?format=gguf", 400), ("", 200)])
def test_the_format_is_checked(admin_client, snapshots, query, status):
    checkpoint = snapshots.checkpoints[0]
    assert admin_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/{query}").status_code == status


def test_a_checkpoint_whose_files_are_gone_says_so(admin_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    checkpoint.path = "jobs/gone/checkpoints/epoch-9-step-90"
    checkpoint.save()
    resp = admin_client.get(f"/playground/checkpoints/{checkpoint.public_id}/download/")
    assert resp.status_code == 410 and b"missing" in resp.content

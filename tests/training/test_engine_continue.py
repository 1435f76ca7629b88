"""Jobs on a fine-tuned model: the engine starts from the snapshot in `init_from` (tiny model, real runs).

- A LoRA snapshot with `adapter: lora` goes on training that adapter. DPO then scores against the adapter
  as it was (its frozen `ref` copy), not against the bare base.
- With `adapter: full` the adapter is merged into the base first; a full snapshot is loaded as it is.
"""

import pytest

from tests.training.engine_helpers import (
    demo_files,
    of_type,
    preference_rows,
    run_in_process,
    write_jsonl,
    write_spec,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lora_parent(tmp_path_factory, tiny_model):
    """A one-epoch supervised LoRA run's checkpoint folder (6 steps)."""
    folder = tmp_path_factory.mktemp("parent")
    train, _valid = demo_files(folder)
    spec = write_spec(folder, model=str(tiny_model), training_file=str(train), n_epochs=1)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    return of_type(lines, "checkpoint")[-1]["path"]


def _weights(folder, name):
    from safetensors.torch import load_file

    return load_file(f"{folder}/{name}")


def test_dpo_on_a_lora_snapshot_trains_its_adapter_against_it(tmp_path, tiny_model, lora_parent):
    parent = _weights(lora_parent, "adapter_model.safetensors")
    train = write_jsonl(tmp_path / "pref.jsonl", preference_rows(16))
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), method="dpo", n_epochs=1,
                      init_from=lora_parent, learning_rate_multiplier=100)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    started = of_type(lines, "started")[0]
    assert started["trainable_params"] == sum(v.numel() for v in parent.values())

    # The reference is a frozen copy of the adapter as it was loaded, so training started from the snapshot;
    # the first step compares the model with itself.
    assert of_type(lines, "metrics")[0]["train_reward_margin"] == pytest.approx(0.0, abs=1e-3)
    folder = of_type(lines, "checkpoint")[-1]["path"]
    reference = _weights(f"{folder}/ref", "adapter_model.safetensors")
    trained = _weights(folder, "adapter_model.safetensors")
    assert reference.keys() == parent.keys() == trained.keys()
    for key, value in parent.items():
        assert torch.equal(reference[key], value), key
    assert any(not torch.equal(trained[k], parent[k]) for k in parent)


def test_a_snapshot_folder_without_safetensors_weights_is_refused(tmp_path, tiny_model):
    train, _ = demo_files(tmp_path)
    empty = tmp_path / "not-a-snapshot"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), init_from=str(empty))
    status, lines = run_in_process(spec)
    assert status != 0
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "model_not_found"
    assert str(empty) in lines[-1]["message"] and "safetensors" in lines[-1]["message"]


def _merged(tiny_model, adapter_folder):
    from training.engine.evaluate import load_for_inference

    model, _tokenizer = load_for_inference(adapter_folder, tiny_model)
    return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def _distance(one, other):
    return max((one[k].float() - other[k].float()).abs().max().item() for k in one if k in other)


def test_full_fine_tuning_of_a_lora_snapshot_starts_from_it_merged(tmp_path, tiny_model, lora_parent):
    from safetensors.torch import load_file

    train, _ = demo_files(tmp_path, n_train=8)
    # One step at the smallest rate the spec allows: the weights stay where they started.
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), adapter="full", n_epochs=1,
                      init_from=lora_parent, learning_rate_multiplier=0.001)
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    started = of_type(lines, "started")[0]
    assert started["trainable_params"] == started["total_params"]
    trained = load_file(f"{of_type(lines, 'checkpoint')[-1]['path']}/model.safetensors")
    merged = _merged(tiny_model, lora_parent)
    base = load_file(str(tiny_model / "model.safetensors"))
    assert _distance(trained, merged) < 0.05 * _distance(merged, base)


def test_a_full_snapshot_is_the_starting_weights(tmp_path, tiny_model):
    from safetensors.torch import load_file

    train, _ = demo_files(tmp_path, n_train=8)
    (tmp_path / "one").mkdir()
    first = write_spec(tmp_path / "one", model=str(tiny_model), training_file=str(train), adapter="full",
                       n_epochs=1, learning_rate_multiplier=10)
    status, lines = run_in_process(first)
    assert status == 0, lines[-1]
    snapshot = of_type(lines, "checkpoint")[-1]["path"]
    (tmp_path / "two").mkdir()
    second = write_spec(tmp_path / "two", model=str(tiny_model), training_file=str(train), adapter="full",
                        n_epochs=1, init_from=snapshot, learning_rate_multiplier=0.001)
    status, lines = run_in_process(second)
    assert status == 0, lines[-1]
    start = load_file(f"{snapshot}/model.safetensors")
    trained = load_file(f"{of_type(lines, 'checkpoint')[-1]['path']}/model.safetensors")
    base = load_file(str(tiny_model / "model.safetensors"))
    assert _distance(trained, start) < 0.05 * _distance(start, base)

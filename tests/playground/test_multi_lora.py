"""Several LoRA adapters in one batch (playground/inference/multi_lora.py) against PEFT's own mixed batch."""

import pytest

from playground.inference.multi_lora import BASE_ADAPTER, Stack

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny base with three adapters: ranks 4 and 8 on attention and MLP, rank 2 on attention only."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.playground.tiny_models import CORPUS
    from training.demo_model import build_tiny_model

    root = tmp_path_factory.mktemp("multi-lora")
    build_tiny_model(root / "base", CORPUS * 3, seed=1, pretrain_steps=0)
    specs = {"wide": (4, ["q_proj", "v_proj", "down_proj"]), "deep": (8, ["q_proj", "k_proj", "o_proj", "up_proj"]),
             "thin": (2, ["v_proj"])}
    for seed, (name, (rank, targets)) in enumerate(specs.items()):
        torch.manual_seed(seed)
        peft = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                              LoraConfig(r=rank, lora_alpha=3 * rank, target_modules=targets,
                                         init_lora_weights=False, task_type="CAUSAL_LM"))
        peft.save_pretrained(root / name)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"), root / "wide",
                                      adapter_name="wide")
    model.load_adapter(root / "deep", adapter_name="deep")
    model.load_adapter(root / "thin", adapter_name="thin")
    model.root = root
    return model.eval()


def _ids(rows, length=12):
    return torch.randint(5, 200, (1, length), generator=torch.Generator().manual_seed(7)).expand(rows, -1)


ROWS = ["deep", BASE_ADAPTER, "wide", "thin", "deep"]


def test_stacked_rows_equal_peft_mixed_batch(model):
    ids = _ids(len(ROWS))
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=ROWS).logits
        stack = Stack.build(model, sorted(set(ROWS) - {BASE_ADAPTER}))
        assert stack is not None and len(stack.layers) == 4 * 6  # q k v o up down on 4 layers
        with stack.applied(ROWS):
            got = model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    # And the rows really differ: each adapter changes its answer.
    assert not torch.allclose(got[0], got[1], atol=1e-3) and not torch.allclose(got[2], got[3], atol=1e-3)


def test_each_row_equals_its_adapter_alone(model):
    ids = _ids(len(ROWS))
    stack = Stack.build(model, ["deep", "thin", "wide"])
    with torch.inference_mode():
        with stack.applied(ROWS):
            batched = model(input_ids=ids).logits
        for row, name in enumerate(ROWS):
            if name == BASE_ADAPTER:
                with model.disable_adapter():
                    alone = model(input_ids=ids[:1]).logits[0]
            else:
                model.set_adapter(name)
                alone = model(input_ids=ids[:1]).logits[0]
            assert torch.allclose(batched[row], alone, atol=1e-4), name


def test_the_model_is_left_as_it_was(model):
    ids = _ids(1)
    model.set_adapter("wide")
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        with Stack.build(model, ["deep", "wide"]).applied(["deep", "wide"]):
            pass
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert all(not module.disable_adapters for module in Stack.build(model, ["wide"]).switched)
    assert not any(module._forward_hooks for module in model.modules())


def test_other_kinds_of_adapter_are_not_stacked(model):
    """A DoRA adapter has no plain A·B form: the batch goes to PEFT's mixed path instead."""
    from peft import LoraConfig

    model.add_adapter("dora", LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False))
    try:
        assert Stack.build(model, ["wide", "dora"]) is None
        assert Stack.build(model, ["wide", "deep"]) is not None
    finally:
        model.delete_adapter("dora")


@pytest.fixture(scope="module")
def lm_head_adapter(model):
    """An adapter that also saves its own copy of lm_head (PEFT's modules_to_save)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model.root / "base"),
                          LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"],
                                     init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param))
    peft.save_pretrained(model.root / "own-head")
    return model.root / "own-head"


def test_adapters_with_whole_module_copies_are_not_mixed(model, lm_head_adapter):
    from playground.inference.multi_lora import mixable

    model.load_adapter(lm_head_adapter, adapter_name="own_head")
    try:
        assert not mixable(model, ["wide", "own_head"]) and mixable(model, ["wide", "deep", BASE_ADAPTER])
        assert Stack.build(model, ["wide", "own_head"]) is None
    finally:
        model.delete_adapter("own_head")


def test_the_backend_decodes_such_snapshots_one_at_a_time(model, lm_head_adapter):
    """Each output equals its snapshot decoded alone, the base row included."""
    import asyncio

    from playground.inference import SamplingParams, collect
    from playground.inference.builtin import BuiltinBackend
    from playground.snapshots import Snapshot

    base = model.root / "base"
    chosen = [Snapshot.from_paths("wide", base, model.root / "wide", base_model="base"),
              Snapshot.from_paths("own-head", base, lm_head_adapter, base_model="base"),
              Snapshot.from_paths("base", base, None, base_model="base")]
    backend = BuiltinBackend()
    messages = [{"role": "user", "content": "where is my order 1234"}]
    params = SamplingParams(temperature=0, max_tokens=8)

    def run(snapshots):
        return asyncio.run(collect(backend.generate(snapshots, messages, params), len(snapshots)))

    together = run(chosen)
    assert all(e.type == "done" for e in together), [e.error for e in together]
    alone = [run([snapshot])[0].text for snapshot in chosen]
    assert [e.text for e in together] == alone
    assert len(set(alone)) == 3  # the own lm_head really changes the answer


def test_another_adapters_module_copy_does_not_leak_into_a_stacked_batch(model, lm_head_adapter):
    """An adapter with its own lm_head is loaded and active; a stacked batch of others must not use it."""
    ids = _ids(2)
    rows = ["wide", BASE_ADAPTER]
    model.load_adapter(lm_head_adapter, adapter_name="own_head")
    try:
        with torch.inference_mode():
            model.set_adapter("wide")
            wide = model(input_ids=ids[:1]).logits[0]
            with model.disable_adapter():
                base = model(input_ids=ids[:1]).logits[0]
            model.set_adapter("own_head")
            with Stack.build(model, ["wide"]).applied(rows):
                batched = model(input_ids=ids).logits
            own = model(input_ids=ids[:1]).logits[0]
        assert torch.allclose(batched[0], wide, atol=1e-4) and torch.allclose(batched[1], base, atol=1e-4)
        assert not torch.allclose(own, base, atol=1e-2)  # the copy is in use again afterwards
    finally:
        model.delete_adapter("own_head")


def test_a_batch_peft_must_mix_is_split_when_a_loaded_adapter_has_module_copies(model, lm_head_adapter,
                                                                                  tmp_path):
    """DoRA cannot be stacked; PEFT's mixed batch fails once an adapter with its own lm_head is loaded."""
    import asyncio

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from playground.inference import SamplingParams, collect
    from playground.inference.builtin import BuiltinBackend
    from playground.snapshots import Snapshot

    base = model.root / "base"
    torch.manual_seed(9)
    dora = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True,
                                     init_lora_weights=False, task_type="CAUSAL_LM"))
    dora.save_pretrained(tmp_path / "dora")
    snap = {name: Snapshot.from_paths(name, base, path, base_model="base")
            for name, path in (("wide", model.root / "wide"), ("dora", tmp_path / "dora"),
                               ("own-head", lm_head_adapter))}
    backend = BuiltinBackend()
    messages = [{"role": "user", "content": "where is my order 1234"}]
    params = SamplingParams(temperature=0, max_tokens=8)

    def run(snapshots):
        return asyncio.run(collect(backend.generate(snapshots, messages, params), len(snapshots)))

    alone = {name: run([s])[0].text for name, s in snap.items()}  # own-head is now loaded (and was active)
    together = run([snap["wide"], snap["dora"]])
    assert all(e.type == "done" for e in together), [e.error for e in together]
    assert [e.text for e in together] == [alone["wide"], alone["dora"]]

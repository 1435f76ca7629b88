"""QLoRA: the spec's `quantization`, a base quantized by bitsandbytes under LoRA adapters, on the CPU.

bitsandbytes 0.50.2's CPU backend runs 4-bit (NF4) and 8-bit (LLM.int8) layers here. The fast tests cover
the refusals and that an evaluation does not cut the gradient; the slow one trains a 4-bit job and serves its
adapter on the unquantized base.
"""

import io
import json
import shutil

import pytest

from tests.training.engine_helpers import demo_files, of_type, run_in_process, write_spec

torch = pytest.importorskip("torch")


@pytest.fixture
def files(tmp_path):
    return demo_files(tmp_path)


def _error(lines):
    errors = of_type(lines, "error")
    assert len(errors) == 1 and lines[-1] is errors[0]
    return errors[0]


def _built_job(spec_path):
    from training.engine.report import Reporter
    from training.engine.run import Job

    job = Job(spec_path, Reporter(io.StringIO()))
    job.load_spec()
    job.load_tokenizer()
    job.build_model()
    return job


def test_qlora_without_bitsandbytes_is_quantization_unavailable(tmp_path, tiny_model, files, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # this host without the package
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), quantization="4bit")
    status, lines = run_in_process(spec)
    error = _error(lines)
    assert status == 1 and error["code"] == "quantization_unavailable"
    assert "quantization 4bit needs bitsandbytes" in error["message"] and "quantization to none" in error["message"]


def test_qlora_refuses_full_fine_tuning_before_loading_anything(tmp_path, tiny_model, files):
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), adapter="full",
                      quantization="8bit")
    error = _error(run_in_process(spec)[1])
    assert error["code"] == "invalid_spec" and "quantization '8bit' needs adapter 'lora'" in error["message"]


def test_qlora_on_a_model_with_nothing_to_quantize_is_quantization_failed(tmp_path, tiny_model, files):
    """A Llama with no decoder layers: its only linear layer is the output head, which bitsandbytes keeps in
    full precision, so transformers would load it "quantized" with nothing quantized (and only log it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    headless = tmp_path / "no-layers"
    config = AutoConfig.from_pretrained(tiny_model)
    config.num_hidden_layers = 0
    AutoModelForCausalLM.from_config(config).save_pretrained(headless)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, headless / name)
    spec = write_spec(tmp_path, model=str(headless), training_file=str(files[0]), quantization="4bit")
    status, lines = run_in_process(spec)
    error = _error(lines)
    assert status == 1 and error["code"] == "quantization_failed"
    assert "quantization 4bit" in error["message"] and str(headless) in error["message"]
    assert "no linear layers" in error["message"]


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_qlora_loads_quantized_layers_under_trainable_adapters(tmp_path, tiny_model, files, quantization):
    import bitsandbytes as bnb

    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), quantization=quantization)
    job = _built_job(spec)
    layer = bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt
    quantized = [name for name, module in job.model.named_modules() if isinstance(module, layer)]
    assert len(quantized) == 4 * 7  # q, k, v, o, gate, up, down in each of the 4 layers; the head stays
    trainable = [name for name, p in job.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert 0 < job.trainable_params < job.total_params


def test_qlora_4bit_gradients_are_the_same_after_an_evaluation(tmp_path, tiny_model, files):
    """On a CPU with AVX512-bf16, bitsandbytes repacks a 4-bit layer for a kernel without a backward the first
    time it runs in eval mode; the engine keeps the trainable layout, so an evaluation changes nothing."""
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), quantization="4bit")
    model = _built_job(spec).model
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would hide the base layers' share of the gradient
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))

    def gradients():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = gradients()
    first = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert before[first].abs().sum() > 0
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.slow
def test_qlora_4bit_trains_and_its_adapter_serves_on_the_unquantized_base(tmp_path, tiny_model, files):
    import asyncio

    from peft import PeftModel
    from safetensors.torch import load_file

    from playground.inference import SamplingParams, collect
    from playground.inference.builtin import BuiltinBackend
    from playground.snapshots import Snapshot
    from training.engine.evaluate import load_for_inference

    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(files[0]), validation_file=str(files[1]),
                      n_epochs=2, quantization="4bit")
    status, lines = run_in_process(spec)
    assert status == 0, lines[-1]
    losses = [l["train_loss"] for l in of_type(lines, "metrics")]
    assert len(losses) == 12 and all(l == l and l < 100 for l in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0  # falling
    full = [l["full_valid_loss"] for l in of_type(lines, "eval", scope="full")]
    assert len(full) == 2 and full[1] < full[0]
    final = lines[-1]["final_checkpoint"]

    # A normal LoRA adapter: LoRA weights only, saved in full precision, no quantization state.
    adapter = load_file(f"{final}/adapter_model.safetensors")
    assert adapter and all("lora_" in k and v.dtype == torch.float32 for k, v in adapter.items())
    assert json.loads(open(f"{final}/attune_spec.json").read())["quantization"] == "4bit"

    # Served on the unquantized base, it gives logits close to the quantized model it was trained on: the same
    # top token everywhere, a gap smaller than the two bases' own and a fraction of what the adapter changed
    # (measured: mean |Δ| 0.041 against 0.071 between the bases and 0.32 from the adapter).
    served, tokenizer = load_for_inference(final, tiny_model)
    quantized = PeftModel.from_pretrained(_built_job(spec).model.get_base_model(), final).eval()
    rows = [json.loads(line) for line in files[1].read_text().splitlines()][:8]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        on_fp32, on_4bit = served(**batch).logits[mask], quantized(**batch).logits[mask]
        with served.disable_adapter():
            base = served(**batch).logits[mask]
    with torch.no_grad(), quantized.disable_adapter():
        base_4bit = quantized(**batch).logits[mask]
    gap = (on_fp32 - on_4bit).abs().mean().item()
    assert gap < (base - base_4bit).abs().mean().item()
    assert gap < 0.25 * (on_fp32 - base).abs().mean().item()
    assert (on_fp32.argmax(-1) == on_4bit.argmax(-1)).float().mean() > 0.95

    # The playground's builtin backend loads it unchanged, as any LoRA snapshot.
    snapshot = Snapshot.from_paths("qlora", tiny_model, final, base_model="attune-tiny")
    messages = rows[0]["messages"][:-1]
    [event] = asyncio.run(collect(BuiltinBackend().generate([snapshot], messages,
                                                            SamplingParams(temperature=0, max_tokens=8)), 1))
    assert event.type == "done", event.error
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    greedy = served.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert event.text == tokenizer.decode(greedy[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

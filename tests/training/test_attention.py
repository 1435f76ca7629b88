"""Packed rows' attention (training/engine/attention.py) against transformers' own SDPA."""

import copy

import pytest

from tests.training.engine_helpers import build_test_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(sdpa, varlen): the same tiny Llama twice, the second switched to the packed-row attention."""
    from transformers import AutoModelForCausalLM

    from training.engine.attention import NAME, use_varlen

    folder = build_test_model(tmp_path_factory.mktemp("model") / "attune-tiny")
    sdpa = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    sdpa.config.use_cache = False
    varlen = copy.deepcopy(sdpa)
    assert use_varlen(varlen) and varlen.config._attn_implementation == NAME
    return sdpa, varlen


def packed_batch(lengths, vocab, seed=0):
    """One padding-free row of examples of these lengths, as TRL's collator builds it."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    generator = torch.Generator().manual_seed(seed)
    examples = [{"input_ids": torch.randint(5, vocab, (n,), generator=generator).tolist()} for n in lengths]
    return examples, DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)


# Lengths 3..70 span several length buckets, and are out of order.
LENGTHS = [30, 3, 70, 9, 9, 41, 17]


def test_each_packed_example_sees_only_itself(models):
    _, varlen = models
    examples, batch = packed_batch(LENGTHS, varlen.config.vocab_size)
    with torch.no_grad():
        packed = varlen(**batch).logits[0]
        start = 0
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            alone = varlen(input_ids=ids).logits[0]
            assert torch.allclose(packed[start:start + ids.shape[1]], alone, atol=1e-4)
            start += ids.shape[1]
    assert start == packed.shape[0]


def test_loss_and_gradients_equal_the_block_diagonal_mask(models):
    sdpa, varlen = models
    _, batch = packed_batch(LENGTHS, sdpa.config.vocab_size, seed=1)
    for model in models:
        model.zero_grad()
    reference = sdpa(**batch).loss
    reference.backward()
    loss = varlen(**batch).loss
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    for (name, a), (_, b) in zip(sdpa.named_parameters(), varlen.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_a_new_batch_gets_its_own_layout(models):
    """The example layout is kept for the layers of one forward, never carried into the next batch."""
    sdpa, varlen = models
    for seed, lengths in enumerate(([12, 40, 5], [40, 12, 5, 20], [57])):
        _, batch = packed_batch(lengths, sdpa.config.vocab_size, seed=seed)
        with torch.no_grad():
            assert torch.allclose(varlen(**batch).logits, sdpa(**batch).logits, atol=1e-4)


def test_padded_batches_use_the_usual_mask(models):
    """Evaluation's right-padded batches with an attention mask are unchanged."""
    sdpa, varlen = models
    ids = torch.randint(5, sdpa.config.vocab_size, (3, 25), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    mask[2, 20:] = 0
    with torch.no_grad():
        expected = sdpa(input_ids=ids, attention_mask=mask).logits
        got = varlen(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


def test_a_saved_model_names_no_private_attention(models, tmp_path):
    _, varlen = models
    varlen.save_pretrained(tmp_path)
    assert "attune_varlen" not in (tmp_path / "config.json").read_text()


def test_sliding_window_models_keep_their_attention():
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from training.engine.attention import use_varlen

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, vocab_size=64)
    mistral = MistralForCausalLM(MistralConfig(sliding_window=16, attn_implementation="sdpa", **small))
    assert not use_varlen(mistral) and mistral.config._attn_implementation == "sdpa"
    eager = LlamaForCausalLM(LlamaConfig(attn_implementation="eager", **small))
    assert not use_varlen(eager)
    assert use_varlen(LlamaForCausalLM(LlamaConfig(attn_implementation="sdpa", **small)))

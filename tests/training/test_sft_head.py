"""The engine's plain LM-head loss (training/engine/sft.py) against TRL's fused one."""

import pytest

from tests.training.engine_helpers import build_test_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoTokenizer

    from training.demo_data import make_demo_data
    from training.engine.data import sft_rows

    folder = build_test_model(tmp_path_factory.mktemp("model") / "attune-tiny")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows, _ = sft_rows(tokenizer, make_demo_data(0)[0][:16], 256, "training_file")
    return folder, tokenizer, rows


def _trainer(setup, tmp_path, plain_head, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from training.engine.sft import SFTTrainer

    folder, tokenizer, rows = setup
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path / str(plain_head)), per_device_train_batch_size=8, report_to="none",
                     use_cpu=True, gradient_checkpointing=False, max_length=256, **config)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      plain_head=plain_head)


@pytest.mark.parametrize("packing", [False, True])
def test_plain_head_reports_what_the_fused_head_does(setup, tmp_path, packing):
    config = dict(packing=True, packing_strategy="bfd", padding_free=True) if packing else {}
    figures = []
    for plain_head in (False, True):
        trainer = _trainer(setup, tmp_path, plain_head, **config)
        trainer.model.train()
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        grad = next(p.grad for n, p in trainer.model.named_parameters() if "q_proj" in n)
        figures.append((loss.item(), trainer._metrics["train"]["mean_token_accuracy"][-1],
                        trainer._metrics["train"]["num_tokens"][-1], grad.clone()))
    (fused_loss, fused_acc, fused_tokens, fused_grad), (loss, acc, tokens, grad) = figures
    assert loss == pytest.approx(fused_loss, abs=1e-5)
    assert acc == pytest.approx(fused_acc) and tokens == fused_tokens > 0
    assert torch.allclose(grad, fused_grad, atol=1e-6)


def test_the_plain_head_is_for_small_logits_on_a_cpu():
    from training.engine.sft import use_plain_head

    assert use_plain_head("cpu", 8, 1024, 1024)
    assert not use_plain_head("cpu", 8, 1024, 128256)  # 4 GiB of logits: TRL's tiles
    assert not use_plain_head("cuda", 8, 1024, 1024)


def test_the_engine_turns_trl_activation_checkpointing_off(tmp_path):
    """TRL's configs default to activation checkpointing, measured 8× slower on a CPU."""
    from trl import SFTConfig

    from training.engine.run import _checkpointing_argument

    assert SFTConfig(output_dir=str(tmp_path), use_cpu=True).gradient_checkpointing
    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, **{_checkpointing_argument(): False})
    assert not config.gradient_checkpointing
    assert not getattr(config, "activation_checkpointing", False)

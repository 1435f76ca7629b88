"""TRL's SFTTrainer with a choice of how the loss meets the LM head.

TRL computes the SFT loss through a fused, tiled LM head (`fused_lm_head=True`): it never builds the
(batch, tokens, vocabulary) logits, which matters on a GPU with a 128k vocabulary. On a CPU with a small
vocabulary the tiles cost more than the logits they save: on attune-tiny a training step measured 13 %
slower than with transformers' own causal-LM loss (`bench/train_overhead.py` compares the engine with a
bare Trainer).

`SFTTrainer` here takes the plain path when `plain_head` is set: the model's logits and transformers'
loss (which honours `num_items_in_batch` like TRL's), and the same logged figures TRL records
(`mean_token_accuracy` over labelled tokens, `num_tokens` of non-padding input). `use_plain_head` says
when: on a CPU, when one batch's logits fit in `PLAIN_HEAD_MAX_BYTES`.
"""

import torch
from transformers import Trainer
from trl import SFTTrainer as _TRLSFTTrainer

PLAIN_HEAD_MAX_BYTES = 1 << 30


def use_plain_head(device, rows_per_batch, max_tokens, vocab_size):
    return device == "cpu" and rows_per_batch * max_tokens * vocab_size * 4 <= PLAIN_HEAD_MAX_BYTES


class SFTTrainer(_TRLSFTTrainer):
    def __init__(self, *args, plain_head=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain_head = plain_head

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.plain_head:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        labels = inputs["labels"]  # Trainer.compute_loss pops them when it smooths labels
        loss, outputs = Trainer.compute_loss(self, model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            targets = labels[..., 1:]
            labelled = targets != -100
            correct = ((outputs.logits[..., :-1, :].argmax(-1) == targets) & labelled).sum()
            gather = self.accelerator.gather_for_metrics
            n_labelled, n_correct = gather(labelled.sum()).sum(), gather(correct).sum()
        self._metrics[mode]["mean_token_accuracy"].append(
            (n_correct / n_labelled).item() if n_labelled > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = inputs["attention_mask"].sum()
            else:  # padding-free: one row of real tokens
                tokens = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += gather(tokens).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss

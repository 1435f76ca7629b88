"""Validation figures and greedy exact match.

- `assistant_loss(model, rows)`: cross-entropy and top-1 accuracy over the
  labelled (assistant, weight 1) tokens only, token-weighted over all of
  `rows` (not a mean of batch means), so a checkpoint's `full_valid_loss`
  can be recomputed from the file alone. Under several processes each rank
  scores a shard and the sums are all-reduced.
- `load_for_inference(path, base)`: a checkpoint (LoRA adapter or full
  weights) or a base model, with its tokenizer, from safetensors.
- `exact_match(checkpoint, base, heldout_rows)`: share of held-out prompts
  whose greedy answer equals `expected` (stripped).

Not supported: sampling-based metrics, DPO validation (the engine uses
TRL's own evaluation for DPO).
"""

import pathlib

import torch


def _pad(seqs, value):
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs])


@torch.no_grad()
def assistant_loss(model, rows, batch_size=16, pad_token_id=0):
    """{"loss", "accuracy", "tokens"} over the labelled tokens of `rows` (input_ids/labels dicts)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    shard = rows[rank::world]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, tokens
    for begin in range(0, len(shard), batch_size):
        batch = shard[begin : begin + batch_size]
        input_ids = _pad([r["input_ids"] for r in batch], pad_token_id).to(device)
        labels = _pad([r["labels"] for r in batch], -100).to(device)
        attention_mask = _pad([[1] * len(r["input_ids"]) for r in batch], 0).to(device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
        logits, targets = logits[:, :-1], labels[:, 1:]
        mask = targets != -100
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none")
        totals[0] += losses.sum().double().cpu()
        totals[1] += ((logits.argmax(-1) == targets) & mask).sum().double().cpu()
        totals[2] += mask.sum().double().cpu()
    if distributed:
        # gloo and nccl both reduce a CPU/GPU tensor; keep it on the model's device for nccl.
        reduced = totals.to(device)
        dist.all_reduce(reduced)
        totals = reduced.cpu()
    if was_training:
        model.train()
    tokens = int(totals[2])
    if tokens == 0:
        return {"loss": None, "accuracy": None, "tokens": 0}
    return {"loss": float(totals[0] / tokens), "accuracy": float(totals[1] / tokens), "tokens": tokens}


def load_for_inference(path, base_model_path=None, device="cpu"):
    """(model, tokenizer) for a base model folder or a checkpoint folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = pathlib.Path(path)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(folder))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer_dir = folder if (folder / "tokenizer_config.json").exists() else base_model_path
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return model.to(device).eval(), tokenizer


@torch.no_grad()
def greedy_answers(model, tokenizer, conversations, max_new_tokens=16, batch_size=32):
    tokenizer.padding_side = "left"
    answers = []
    for begin in range(0, len(conversations), batch_size):
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations[begin : begin + batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(next(model.parameters()).device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = output[:, batch["input_ids"].shape[1]:]
        answers.extend(tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new)
    return answers


def exact_match(checkpoint_or_model_path, base_model_path, heldout_rows) -> float:
    """Share of `heldout_rows` ({"messages", "expected"}) answered exactly, greedy decoding."""
    model, tokenizer = load_for_inference(checkpoint_or_model_path or base_model_path, base_model_path)
    answers = greedy_answers(model, tokenizer, [row["messages"] for row in heldout_rows])
    hits = sum(answer == row["expected"].strip() for answer, row in zip(answers, heldout_rows, strict=True))
    return hits / len(heldout_rows)

"""attune-tiny: the demo base model, built locally with no download.

- A byte-level BPE tokenizer trained (with the `tokenizers` library) on the
  demo corpus, with special tokens `<|start|>`, `<|end|>` (end of turn, the
  EOS) and `<|pad|>`, and a Jinja chat template for system / user /
  assistant / tool messages. Assistant turns are wrapped in
  `{% generation %}` markers, so `return_assistant_tokens_mask=True` works.
- Every corpus string that is one snake_case identifier is one token, so a
  two-word label (`cancel_order`) is a single-token decision. The demo's
  one-word labels (`cancel`) stay as BPE splits them, one to four tokens:
  with them added as tokens (which also splits off every use of the word in
  a user message), the demo's LoRA run reached 73 %, not at least 95 %.
- A small LlamaForCausalLM (4 layers, hidden 256, 4 heads of 64, 2 KV
  heads, vocab a multiple of 64) that vLLM can serve, initialised from
  `seed` and saved as safetensors. By default it is not pre-trained: the
  demo's LoRA run (4 epochs, batch 8, learning_rate_multiplier 10, r 16,
  all-linear; about 25 s on 2 idle CPU cores) takes the random-initialised
  model from 0 % to at least 95 % exact match on the validation prompts,
  while 3-6 epochs on a copy pre-trained with `pretrain_steps=300` (or 100
  at a lower rate) stay flat at 16-34 %: the brief full-weight pre-training
  below left a base that LoRA could not steer, so it only runs when asked
  for.
- `pretrain_steps > 0` pre-trains on generic synthetic chat (full weights,
  transformers Trainer) that uses the corpus's words but never its task:
  either "echo these words", or "answer with one label from this list"
  where the labels are made-up word pairs (`lamp_oslo`) and the user's
  message contains the words of the right one.
- Deterministic: the same corpus and seed give byte-identical files (on one
  machine; CPU float results may differ across CPU types).

Not supported: a model that knows language. attune-tiny is a demo base that
makes a fine-tuning run quick to watch, nothing more.
"""

import json
import pathlib
import random
import re
import tempfile

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}"
    "{{ message['content'] or '' }}"
    "{% if message.get('tool_calls') %}{{ message['tool_calls'] | tojson }}{% endif %}"
    "{{ '<|end|>' }}"
    "{% endgeneration %}"
    "{% else %}"
    "{{ (message['content'] or '') + '<|end|>' }}"
    "{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|pad|>", "<|start|>", "<|end|>"]
TOKENIZER_VOCAB = 1024  # a target; BPE stops earlier when the corpus has no more pairs to merge

MODEL_SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 1024,
}


def build_tokenizer(corpus):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    # A corpus string that is one snake_case identifier (an intent label such as `reset_password`) becomes
    # one token: the byte-level pre-tokenizer would split it at `_` into three, and a class decision that
    # is one token is what a few minutes of fine-tuning on a CPU can learn.
    labels = sorted({text for text in corpus if re.fullmatch(r"[a-z]+(_[a-z]+)+", text)})
    tok.add_tokens([AddedToken(label, single_word=True, normalized=False) for label in labels])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|start|>",
        eos_token="<|end|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


PRETRAIN_STEPS = 0  # see the module docstring: the demo's LoRA run learns from the random-initialised model
PRETRAIN_BATCH = 16
PRETRAIN_LR = 3e-3


def pretraining_chats(corpus, seed, n):
    """`n` generic chats built from the corpus's words (see the module docstring)."""
    rng = random.Random(seed)
    words = sorted({w for text in corpus for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2})
    taken = set(corpus)  # never build a label that the corpus itself uses (the real intents)
    chats = []
    for _ in range(n):
        if rng.random() < 0.3:
            said = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
            chats.append([{"role": "user", "content": f"repeat: {said}"}, {"role": "assistant", "content": said}])
            continue
        labels = []
        while len(labels) < rng.randint(3, 10):
            label = f"{rng.choice(words)}_{rng.choice(words)}"
            if label not in taken and label not in labels:
                labels.append(label)
        answer = rng.choice(labels)
        message = [rng.choice(words) for _ in range(rng.randint(2, 8))]
        for word in answer.split("_"):
            message.insert(rng.randint(0, len(message)), word)
        chats.append([
            {"role": "system", "content": "Answer with exactly one label from: " + ", ".join(labels) + "."},
            {"role": "user", "content": " ".join(message)},
            {"role": "assistant", "content": answer},
        ])
    return chats


def pretrain(model, tokenizer, corpus, seed, steps):
    from transformers import Trainer, TrainingArguments
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from training.engine.data import tokenize_chat

    rows = []
    for chat in pretraining_chats(corpus, seed, steps * PRETRAIN_BATCH):
        input_ids, labels, _ = tokenize_chat(tokenizer, chat, MODEL_SHAPE["max_position_embeddings"])
        rows.append({"input_ids": input_ids, "labels": labels})
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=PRETRAIN_BATCH,
            learning_rate=PRETRAIN_LR, warmup_steps=0.1, lr_scheduler_type="cosine", weight_decay=0.0,
            save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=50, seed=seed,
            use_cpu=True, dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))
        trainer.train()
    model.config.use_cache = True


def build_tiny_model(out_dir: pathlib.Path, corpus: list[str], seed: int = 0, *,
                     pretrain_steps: int = PRETRAIN_STEPS) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus)
    vocab = len(tokenizer)
    config = LlamaConfig(
        vocab_size=(vocab + 63) // 64 * 64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if pretrain_steps:
        pretrain(model, tokenizer, corpus, seed, pretrain_steps)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # A README for people browsing var/models/.
    (out_dir / "README.md").write_text(
        "# attune-tiny\n\nBuilt by `training.demo_model.build_tiny_model` from the demo corpus "
        f"(seed {seed}, " + (f"{pretrain_steps} pre-training steps on generic synthetic chat" if pretrain_steps
                             else "random-initialised, not pre-trained") + ").\n"
    )
    json.loads((out_dir / "config.json").read_text())  # fail here, not later, if it is not valid JSON


if __name__ == "__main__":
    import sys

    from training.demo_data import corpus_texts

    build_tiny_model(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "var/models/attune-tiny"), corpus_texts())

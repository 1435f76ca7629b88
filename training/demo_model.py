"""attune-tiny: the demo base model, built locally with no download.

- A byte-level BPE tokenizer trained (with the `tokenizers` library) on the
  demo corpus, with special tokens `<|start|>`, `<|end|>` (end of turn, the
  EOS) and `<|pad|>`, and a Jinja chat template for system / user /
  assistant / tool messages. Assistant turns are wrapped in
  `{% generation %}` markers, so `return_assistant_tokens_mask=True` works.
- A small LlamaForCausalLM (4 layers, hidden 256, 4 heads of 64, 2 KV
  heads, vocab a multiple of 64) that vLLM can serve, randomly initialised
  from `seed` and saved as safetensors.
- Deterministic: the same corpus and seed give byte-identical files.

Not supported: a pre-trained base. attune-tiny knows nothing before it is
fine-tuned; its only job is to make a fine-tuning run quick to watch.
"""

import json
import pathlib

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
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
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|start|>",
        eos_token="<|end|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


def build_tiny_model(out_dir: pathlib.Path, corpus: list[str], seed: int = 0) -> None:
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
        f"(seed {seed}). Randomly initialised: it is useful only once fine-tuned.\n"
    )
    json.loads((out_dir / "config.json").read_text())  # fail here, not later, if it is not valid JSON


if __name__ == "__main__":
    import sys

    from training.demo_data import corpus_texts

    build_tiny_model(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "var/models/attune-tiny"), corpus_texts())

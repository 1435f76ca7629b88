"""Reading JSONL files in OpenAI's fine-tuning formats and turning them into model inputs.

Chat lines (`{"messages": [...]}`) become `input_ids` + `labels`: the text is
rendered with the tokenizer's own chat template, and only the tokens of
assistant messages are labelled (the rest are -100), so the loss is the
assistant-only loss. An assistant message with `"weight": 0` stays in the
context but is not trained on. The spans are found by rendering each prefix
of the conversation, so any template that renders a conversation as the
concatenation of its turns works, with or without `{% generation %}` markers.

Preference lines (`{"input": {"messages"}, "preferred_output": [...],
"non_preferred_output": [...]}`, or the older `*_completion` names) become
TRL's conversational `prompt` / `chosen` / `rejected` rows.

Examples longer than `max_seq_length` are truncated from the end, as the
OpenAI platform does; the engine reports how many with a warning.

Not supported: images, audio, `tools` definitions (tool calls in assistant
messages and `tool` messages are rendered by the template), legacy
prompt/completion lines.
"""

import json
import pathlib

from .report import EngineError

# Keys the chat template sees; `weight` is ours and is stripped.
TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def read_jsonl(path, what):
    """Parse a JSONL file; `what` ("training_file", …) names it in errors."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise EngineError("file_not_found", f"{what} not found: {path}. Upload the file again or fix the path.")
    rows = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EngineError("invalid_file", f"{what} line {number} is not valid JSON: {exc.msg}.") from None
            if not isinstance(row, dict):
                raise EngineError("invalid_file", f"{what} line {number} is not a JSON object.")
            rows.append(row)
    if not rows:
        raise EngineError("invalid_file", f"{what} has no examples.")
    return rows


def _template_message(message):
    return {k: message[k] for k in TEMPLATE_KEYS if k in message}


def _render(tokenizer, messages, generation_prompt=False):
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def tokenize_chat(tokenizer, messages, max_length):
    """Return (input_ids, labels, was_truncated) for one conversation."""
    clean = [_template_message(m) for m in messages]
    text = _render(tokenizer, clean)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        start = _render(tokenizer, clean[:index], generation_prompt=True)
        end = _render(tokenizer, clean[: index + 1])
        if not (text.startswith(end) and end.startswith(start)):
            # The template rewrites earlier turns (some drop past reasoning); label the answer text alone.
            at = text.find(message.get("content") or "\0", len(start) if text.startswith(start) else 0)
            if at < 0:
                continue
            spans.append((at, at + len(message["content"])))
            continue
        spans.append((len(start), len(end)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = []
    span_index = 0
    for token_id, (char_start, _char_end) in zip(input_ids, encoded["offset_mapping"], strict=True):
        while span_index < len(spans) and char_start >= spans[span_index][1]:
            span_index += 1
        inside = span_index < len(spans) and spans[span_index][0] <= char_start < spans[span_index][1]
        labels.append(token_id if inside else -100)
    truncated = len(input_ids) > max_length
    return input_ids[:max_length], labels[:max_length], truncated


def sft_rows(tokenizer, rows, max_length, what):
    """Tokenized rows for supervised training, and the number that were truncated."""
    out, n_truncated = [], 0
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise EngineError("invalid_file", f"{what} line {number} has no 'messages' list.")
        input_ids, labels, truncated = tokenize_chat(tokenizer, messages, max_length)
        n_truncated += truncated
        if all(label == -100 for label in labels):
            # Nothing to learn (all weights 0, or the answer was cut off): keep it out of the loss mean.
            continue
        out.append({"input_ids": input_ids, "labels": labels})
    return out, n_truncated


def dpo_rows(rows, what):
    """Preference lines as TRL conversational prompt/chosen/rejected rows."""
    out = []
    for number, row in enumerate(rows, start=1):
        prompt = (row.get("input") or {}).get("messages")
        chosen = row.get("preferred_output", row.get("preferred_completion"))
        rejected = row.get("non_preferred_output", row.get("non_preferred_completion"))
        if not isinstance(prompt, list) or not chosen or not rejected:
            raise EngineError(
                "invalid_file",
                f"{what} line {number} is not a preference example: it needs input.messages, "
                "preferred_output and non_preferred_output.")
        out.append({
            "prompt": [_template_message(m) for m in prompt],
            "chosen": [_template_message(m) for m in chosen],
            "rejected": [_template_message(m) for m in rejected],
        })
    return out


def count_tokens(rows):
    return sum(len(row["input_ids"]) for row in rows)

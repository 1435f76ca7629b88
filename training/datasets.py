"""Validation of uploaded JSONL training data in OpenAI's fine-tuning formats (chat, preference and
reinforcement).

`validate_lines(stream)` reads a binary stream line by line — the file is
never held in memory whole — and returns a `Report`: the format (`chat`,
`preference` or `reinforcement`), the example count, blank lines, and every
error with its line number, a stable code and a message a person can act on.
Codes follow the OpenAI cookbook's checker where it has one (`data_type`,
`missing_messages_list`, `message_missing_key`, `message_unrecognized_key`,
`unrecognized_role`, `missing_content`, `example_missing_assistant_message`);
the rest are Attune's own and listed in `CODES`.

The formats, told apart line by line by how `messages` ends:

- chat (supervised): `messages` that end with an assistant answer (or with a
  tool message after an assistant's call); roles system, user, assistant,
  tool, function; `weight` 0/1 on assistant messages; `tools`,
  `parallel_tool_calls`, `functions`.
- reinforcement: `messages` whose last message is a user turn (roles system,
  developer, user, assistant, tool; `developer` only here), and any other
  keys, the fields a grader reads as `{{item.<key>}}`. A line with no
  assistant message that ends with a user turn is a reinforcement prompt; in
  a reinforcement file, a line that ends with another role is an error
  (`last_message_not_user`).
- preference (DPO): `input`, `preferred_output`, `non_preferred_output`.

One file holds one format, the one of its first example (`mixed_formats`
names both).

Accepted: a UTF-8 BOM, CRLF line ends, blank lines (skipped and counted), the
DPO preference format with `*_output` or the older `*_completion` names,
tool calls and tool messages. Not supported: images, the legacy
prompt/completion format, `tools` on a reinforcement prompt
(`tools_not_supported`: its answers are sampled and graded as text).

`token_stats` measures examples with a base model's tokenizer and chat
template; `store_upload` is the one way a file enters the studio (pages and
API both call it).
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

MIN_EXAMPLES = 10
MAX_STORED_ERRORS = 500
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_SKIP_CHUNK = 1024 * 1024

CODES = {
    "empty_file": "The file has no examples.",
    "file_too_large": "The file is larger than the upload limit.",
    "line_too_long": "The line is longer than the line limit (ATTUNE_MAX_LINE_MB).",
    "invalid_utf8": "The line is not valid UTF-8 text.",
    "invalid_json": "The line is not valid JSON.",
    "data_type": "The line is JSON but not an object.",
    "missing_messages_list": "The example has no non-empty `messages` list.",
    "example_unrecognized_key": "The example has a key Attune does not know.",
    "message_not_object": "A message is not a JSON object.",
    "message_missing_key": "A message lacks `role` or `content`.",
    "message_unrecognized_key": "A message has a key outside the chat format.",
    "unrecognized_role": "A message has a role outside system, user, assistant, tool (and developer in a "
                         "reinforcement prompt).",
    "missing_content": "A message's content is empty or not text.",
    "invalid_weight": "`weight` must be 0 or 1.",
    "weight_not_on_assistant": "`weight` is only allowed on assistant messages.",
    "invalid_tool_calls": "`tool_calls` must be a non-empty list of objects on an assistant message.",
    "tool_call_missing_id": "A tool call has no `id` (a non-empty string).",
    "duplicate_tool_call_id": "Two tool calls of one conversation share an `id`.",
    "invalid_tool_call_type": "A tool call's `type` is not \"function\".",
    "tool_call_missing_name": "A tool call has no `function.name` (a non-empty string).",
    "tool_call_missing_arguments": "A tool call has no `function.arguments`.",
    "invalid_tool_call_arguments": "A tool call's `function.arguments` is not a string holding JSON.",
    "tool_message_missing_tool_call_id": "A tool message has no `tool_call_id`.",
    "unknown_tool_call_id": "A tool message answers a `tool_call_id` no earlier assistant message issued.",
    "example_missing_assistant_message": "The chat example has no assistant message, and does not end with a user "
                                         "message as a reinforcement prompt does.",
    "last_message_not_user": "A reinforcement prompt's last message is not a user message.",
    "tools_not_supported": "A reinforcement prompt carries `tools`, which reinforcement jobs do not support yet.",
    "no_trained_assistant_message": "Every assistant message has weight 0, so nothing would be trained.",
    "invalid_preference_input": "`input` must be an object with a non-empty `messages` list.",
    "invalid_preference_output": "A preference output must be a list of exactly one assistant message with text.",
    "mixed_formats": "The line's format differs from the file's first example.",
    "invalid_n_examples": "The file has too few examples.",
}

ROLES = {"system", "user", "assistant", "tool", "function"}
REINFORCEMENT_ROLES = {"system", "developer", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
CHAT_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
# What a reinforcement prompt may not carry yet (its other keys are the grader's fields).
REINFORCEMENT_REFUSED_KEYS = ("tools", "functions")
# How an error names a line's format and the file's.
FORMAT_NAMES = {
    "chat": "a supervised chat example (it ends with an assistant answer)",
    "preference": "a preference (DPO) example",
    "reinforcement": "a reinforcement prompt (it ends with a user message)",
    "items": "an eval item",
}
PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output",
                   "preferred_completion", "non_preferred_completion"}


@dataclass
class Report:
    format: str = ""
    n_examples: int = 0
    n_blank_lines: int = 0
    n_lines: int = 0
    bytes: int = 0
    n_errors: int = 0
    errors: list = field(default_factory=list)

    def add(self, line, code, message):
        self.n_errors += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append({"line": line, "code": code, "message": message})

    @property
    def ok(self):
        return self.n_errors == 0

    def first_json_error(self):
        """The first line that is not a JSON object (what the API refuses at upload time)."""
        for err in self.errors:
            if err["code"] in ("invalid_utf8", "invalid_json", "data_type"):
                return err
        return None


def _hint(text, limit=40):
    text = text.strip()
    return text[:limit] + ("…" if len(text) > limit else "")


def _check_message(msg, where, errors, reinforcement=False):
    """Append (code, message) pairs for one chat message (of a reinforcement prompt: `developer` is a role,
    `weight` is not a key)."""
    if not isinstance(msg, dict):
        errors.append(("message_not_object", f"{where} is not a JSON object."))
        return
    unknown = sorted(set(msg) - MESSAGE_KEYS)
    if unknown:
        errors.append(("message_unrecognized_key",
                       f"{where} has unrecognized key(s) {', '.join(map(repr, unknown))}; allowed keys are "
                       f"{', '.join(sorted(MESSAGE_KEYS))}."))
    role = msg.get("role")
    if "role" not in msg:
        errors.append(("message_missing_key", f"{where} has no `role`."))
    elif role not in (REINFORCEMENT_ROLES if reinforcement else ROLES):
        if reinforcement:
            hint = "use one of system, developer, user, assistant, tool."
        elif role == "developer":
            hint = ("developer is a role of reinforcement prompts only (lines that end with a user message); "
                    "use system in a chat example.")
        else:
            hint = "use one of system, user, assistant, tool."
        errors.append(("unrecognized_role", f"{where} has role {role!r}; {hint}"))
    has_calls = "tool_calls" in msg or "function_call" in msg
    if "tool_calls" in msg:
        calls = msg["tool_calls"]
        if role != "assistant" or not isinstance(calls, list) or not calls or not all(
                isinstance(c, dict) for c in calls):
            errors.append(("invalid_tool_calls",
                           f"{where}: `tool_calls` must be a non-empty list of "
                           "{\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}} "
                           "on an assistant message."))
        else:
            for j, call in enumerate(calls):
                _check_tool_call(call, f"{where}.tool_calls[{j}]", errors)
    if "content" not in msg:
        if not has_calls:
            errors.append(("message_missing_key", f"{where} has no `content`."))
    else:
        content = msg["content"]
        if content is None and has_calls:
            pass
        elif isinstance(content, list) and role in ("user", "system", "developer"):
            if not content or not all(isinstance(p, dict) and p.get("type") == "text"
                                      and isinstance(p.get("text"), str) for p in content):
                errors.append(("missing_content",
                               f"{where}: content parts must be {{\"type\": \"text\", \"text\": …}}; "
                               "images are not supported."))
        elif not isinstance(content, str):
            errors.append(("missing_content", f"{where}: `content` must be a string."))
        elif not content.strip() and not has_calls:
            errors.append(("missing_content", f"{where} has empty content."))
    if "weight" in msg:
        if reinforcement:
            errors.append(("message_unrecognized_key",
                           f"{where} has `weight`, which only the answers of a supervised chat example take; a "
                           "reinforcement prompt's messages are not trained on: remove it."))
        elif role != "assistant":
            errors.append(("weight_not_on_assistant",
                           f"{where} has `weight` but is a {role!r} message; only assistant messages take a weight."))
        elif msg["weight"] not in (0, 1) or isinstance(msg["weight"], bool):
            errors.append(("invalid_weight", f"{where} has weight {msg['weight']!r}; use 0 or 1."))


_JSON_KINDS = {dict: "object", list: "array", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _check_tool_call(call, where, errors):
    """Append (code, message) pairs for one entry of an assistant message's `tool_calls`."""
    if not isinstance(call.get("id"), str) or not call["id"].strip():
        errors.append(("tool_call_missing_id",
                       f"{where} has no `id`; give each call an id (e.g. \"call_1\") that its tool message "
                       "answers with `tool_call_id`."))
    if call.get("type") != "function":
        errors.append(("invalid_tool_call_type",
                       f"{where} has type {call.get('type')!r}; it must be \"function\"."))
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"].strip():
        errors.append(("tool_call_missing_name",
                       f"{where} has no `function.name`; a call is "
                       "{\"function\": {\"name\": …, \"arguments\": \"{…}\"}}."))
    if not isinstance(function, dict):
        return
    if "arguments" not in function:
        errors.append(("tool_call_missing_arguments",
                       f"{where} has no `function.arguments`; give the arguments as a JSON string, "
                       "\"{}\" for none."))
        return
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        errors.append(("invalid_tool_call_arguments",
                       f"{where}: `function.arguments` is a JSON {_JSON_KINDS.get(type(arguments), 'value')}; "
                       "it must be a string holding JSON, e.g. \"{\\\"id\\\": 1}\"."))
        return
    try:
        json.loads(arguments)
    except (ValueError, RecursionError):
        errors.append(("invalid_tool_call_arguments",
                       f"{where}: `function.arguments` does not parse as JSON; it starts with: "
                       f"{_hint(arguments)!r}"))


def _check_tool_answers(messages, prefix, errors):
    """Each tool message answers a call an earlier assistant message issued in the same conversation."""
    issued = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        calls = msg.get("tool_calls") if msg.get("role") == "assistant" else None
        if isinstance(calls, list):
            for j, call in enumerate(calls):
                call_id = call.get("id") if isinstance(call, dict) else None
                if not isinstance(call_id, str) or not call_id.strip():
                    continue
                if call_id in issued:
                    errors.append(("duplicate_tool_call_id",
                                   f"{prefix}[{i}].tool_calls[{j}] reuses the id {call_id!r}; each call of a "
                                   "conversation needs its own id."))
                issued.add(call_id)
        if msg.get("role") != "tool":
            continue
        answered = msg.get("tool_call_id")
        if not isinstance(answered, str) or not answered.strip():
            errors.append(("tool_message_missing_tool_call_id",
                           f"{prefix}[{i}] is a tool message without `tool_call_id`; give the id of the call "
                           "it answers."))
        elif answered not in issued:
            errors.append(("unknown_tool_call_id",
                           f"{prefix}[{i}] answers tool_call_id {answered!r}, which no earlier assistant message "
                           "in this conversation issued."))


def _line_format(messages, file_format):
    """chat or reinforcement, from how `messages` ends (and, for a line that ends with neither an assistant
    answer nor a user turn, from the file's format and the roles in it)."""
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    last = messages[-1].get("role") if isinstance(messages[-1], dict) else None
    if last == "user":
        return "reinforcement"
    if last == "assistant":
        return "chat"
    if file_format == "reinforcement" or "developer" in roles:
        return "reinforcement"
    return "chat"


def check_example(obj, file_format=""):
    """Return (format, [(code, message), ...]) for one decoded line; `file_format` is the format of the
    file's first example ("" for the first one)."""
    errors = []
    if not isinstance(obj, dict):
        return "", [("data_type", f"The line is a JSON {type(obj).__name__}, not an object.")]
    if "messages" not in obj and ("input" in obj or "preferred_output" in obj or "preferred_completion" in obj):
        return "preference", _check_preference(obj)
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return "chat", [("missing_messages_list",
                         "The example needs a non-empty `messages` list (or the preference format: "
                         "`input`, `preferred_output`, `non_preferred_output`).")]
    if _line_format(messages, file_format) == "reinforcement":
        return "reinforcement", _check_reinforcement(obj, messages)
    unknown = sorted(set(obj) - CHAT_KEYS)
    if unknown:
        errors.append(("example_unrecognized_key",
                       f"Unrecognized key(s) {', '.join(map(repr, unknown))}; a chat example has "
                       f"{', '.join(sorted(CHAT_KEYS))}."))
    for i, msg in enumerate(messages):
        _check_message(msg, f"messages[{i}]", errors)
    _check_tool_answers(messages, "messages", errors)
    assistants = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if not assistants:
        last = messages[-1].get("role") if isinstance(messages[-1], dict) else None
        errors.append(("example_missing_assistant_message",
                       "The example has no assistant message to learn from"
                       + (f", and its last message is a {last!r} one" if isinstance(last, str) else "")
                       + ": a supervised chat example ends with an assistant answer, a reinforcement prompt with a "
                         "user message."))
    elif all(m.get("weight", 1) == 0 for m in assistants):
        errors.append(("no_trained_assistant_message",
                       "Every assistant message has weight 0; give at least one weight 1."))
    return "chat", errors


def _check_reinforcement(obj, messages):
    """The problems of a reinforcement prompt: `messages` ending with a user turn; its other keys are free."""
    errors = []
    refused = [key for key in REINFORCEMENT_REFUSED_KEYS if key in obj]
    if refused:
        errors.append(("tools_not_supported",
                       f"`{refused[0]}` is not supported on a reinforcement prompt yet: Attune samples and grades "
                       "plain text answers. Remove it (describe the tools in the prompt if the model needs them)."))
    for i, msg in enumerate(messages):
        _check_message(msg, f"messages[{i}]", errors, reinforcement=True)
    _check_tool_answers(messages, "messages", errors)
    last = messages[-1].get("role") if isinstance(messages[-1], dict) else None
    if last != "user":
        ends = f"a {last!r} message" if isinstance(last, str) else "something that is not a message"
        errors.append(("last_message_not_user",
                       f"A reinforcement prompt must end with a user message (the model answers it and the grader "
                       f"scores the answer), but messages[{len(messages) - 1}] is {ends}. Move or drop it."))
    return errors


def _check_preference(obj):
    errors = []
    unknown = sorted(set(obj) - PREFERENCE_KEYS)
    if unknown:
        errors.append(("example_unrecognized_key",
                       f"Unrecognized key(s) {', '.join(map(repr, unknown))}; a preference example has "
                       "input, preferred_output, non_preferred_output."))
    inp = obj.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list) or not inp["messages"]:
        errors.append(("invalid_preference_input",
                       "`input` must be an object with a non-empty `messages` list."))
    else:
        for i, msg in enumerate(inp["messages"]):
            _check_message(msg, f"input.messages[{i}]", errors)
        _check_tool_answers(inp["messages"], "input.messages", errors)
    for name in ("preferred_output", "non_preferred_output"):
        value = obj.get(name, obj.get(name.replace("_output", "_completion")))
        if value is None:
            errors.append(("invalid_preference_output", f"`{name}` is missing."))
            continue
        if (not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict)
                or value[0].get("role") != "assistant" or not isinstance(value[0].get("content"), str)
                or not value[0]["content"].strip()):
            errors.append(("invalid_preference_output",
                           f"`{name}` must be a list of exactly one assistant message with text content."))
    return errors


def _read_lines(stream, max_line_bytes):
    """(raw line or None, its size in bytes) for each line of a binary stream.

    A line longer than `max_line_bytes` (its line end not counted) is never held
    whole: it is read past in chunks and given as None.
    """
    while True:
        raw = stream.readline(max_line_bytes + 2)
        if not raw:
            return
        if len(raw) <= max_line_bytes or len(raw.rstrip(b"\r\n")) <= max_line_bytes:
            yield raw, len(raw)
            continue
        size = len(raw)
        while not raw.endswith(b"\n"):
            raw = stream.readline(_SKIP_CHUNK)
            if not raw:
                break
            size += len(raw)
        yield None, size


def check_eval_item(obj):
    """("items", problems) for one line of an eval's data: a JSON object, the item itself or
    `{"item": {...}, "sample": {...}}` as OpenAI's eval files hold them."""
    if not isinstance(obj, dict):
        return "items", [("data_type", f"Expected a JSON object, got {type(obj).__name__}.")]
    if "item" in obj and not isinstance(obj["item"], dict):
        return "items", [("invalid_item", "'item' must be a JSON object (the fields graders read as item.*).")]
    if "sample" in obj and obj["sample"] is not None and not isinstance(obj["sample"], dict):
        return "items", [("invalid_sample", "'sample' must be a JSON object, such as {\"output_text\": \"…\"}.")]
    return "items", []


def validate_lines(stream, max_bytes=None, max_line_bytes=DEFAULT_MAX_LINE_BYTES, purpose="fine-tune") -> Report:
    """Validate a binary stream of JSONL, one line at a time, each at most `max_line_bytes` long: chat,
    reinforcement or preference examples for `fine-tune`, any JSON objects for `evals` (an eval's items)."""
    report = Report()
    first_line = None

    def check(obj):
        return check_eval_item(obj) if purpose == "evals" else check_example(obj, report.format)

    for number, (raw, size) in enumerate(_read_lines(stream, max_line_bytes), start=1):
        report.n_lines = number
        report.bytes += size
        if max_bytes is not None and report.bytes > max_bytes:
            report.add(None, "file_too_large",
                       f"The file is larger than the limit of {max_bytes // (1024 * 1024)} MB "
                       "(ATTUNE_MAX_UPLOAD_MB); split it or raise the limit.")
            return report
        if raw is None:
            report.add(number, "line_too_long",
                       f"Line {number} is {size:,} bytes long, over the limit of {max_line_bytes:,} bytes "
                       f"(ATTUNE_MAX_LINE_MB); shorten the example or raise the limit.")
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.add(number, "invalid_utf8",
                       f"Line {number} is not valid UTF-8 (byte {exc.start}); save the file as UTF-8.")
            continue
        if not text or text.isspace():  # no stripped copy of a long line
            report.n_blank_lines += 1
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            report.add(number, "invalid_json",
                       f"Line {number} is not valid JSON ({exc.msg} at column {exc.colno}); every line must be "
                       f"one JSON object. The line starts with: {_hint(text)!r}")
            continue
        except RecursionError:
            report.add(number, "invalid_json",
                       f"Line {number} nests arrays or objects too deeply to read; every line must be one "
                       f"JSON object. The line starts with: {_hint(text)!r}")
            continue
        fmt, problems = check(obj)
        if problems and problems[0][0] == "data_type":
            report.add(number, "data_type",
                       f"Line {number} is not a JSON object (dictionary): {problems[0][1]} "
                       f"The line starts with: {_hint(text)!r}")
            continue
        if not report.format:
            report.format, first_line = fmt, number
        elif fmt != report.format:
            problems.insert(0, ("mixed_formats",
                                f"This line is {FORMAT_NAMES[fmt]}, but the file's first example (line "
                                f"{first_line}) is {FORMAT_NAMES[report.format]}; one file holds one format."))
        for code, message in problems:
            report.add(number, code, f"Line {number}: {message}")
        if not problems:
            report.n_examples += 1
    if report.n_lines == 0 or (report.n_examples == 0 and report.n_errors == 0):
        report.add(None, "empty_file", "The file has no examples: it is empty or holds only blank lines.")
    elif report.n_errors == 0 and report.n_examples < MIN_EXAMPLES and purpose != "evals":
        report.add(None, "invalid_n_examples",
                   f"Training file has {report.n_examples} example(s), but must have at least "
                   f"{MIN_EXAMPLES} examples.")
    return report


def iter_examples(path):
    """Decoded examples of a validated file."""
    for _number, example in iter_numbered_examples(path):
        yield example


def iter_numbered_examples(path):
    """(line number, decoded example) of a validated file, one line at a time; blank lines are skipped
    and counted, as the validator numbers them."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8-sig").strip()
            if text:
                yield number, json.loads(text)


def _conversation(example):
    if "messages" in example:
        return [{k: v for k, v in m.items() if k != "weight"} for m in example["messages"]]
    preferred = example.get("preferred_output") or example.get("preferred_completion")
    return list(example["input"]["messages"]) + list(preferred)


def token_stats(path, tokenizer, max_length):
    """Token counts per example with a base model's tokenizer and chat template."""
    counts, n_truncated, n_without_system = [], 0, 0
    for example in iter_examples(path):
        conversation = _conversation(example)
        if not any(m.get("role") == "system" for m in conversation):
            n_without_system += 1
        try:
            ids = tokenizer.apply_chat_template(conversation, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            n = len(ids)
        except Exception:  # a tokenizer without a template: count the plain text
            n = sum(len(tokenizer(str(m.get("content") or ""))["input_ids"]) for m in conversation)
        counts.append(n)
        if n > max_length:
            n_truncated += 1
    if not counts:
        return {}
    return {
        "tokens_min": min(counts),
        "tokens_mean": round(sum(counts) / len(counts), 1),
        "tokens_max": max(counts),
        "tokens_total": sum(counts),
        "n_truncated": n_truncated,
        "max_length": max_length,
        "n_without_system": n_without_system,
    }


_TOKENIZERS = {}


def load_tokenizer(base_model):
    """A base model's tokenizer, cached per process (loaded lazily: no transformers at import)."""
    key = (base_model.name, base_model.load_path)
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(
            base_model.load_path, trust_remote_code=base_model.trust_remote_code)
    return _TOKENIZERS[key]


def stats_for(data_file, base_model):
    """Token statistics of a file for one base model, computed once and kept on the file."""
    if data_file.status != "processed" or data_file.n_errors:
        return {}
    cached = data_file.stats.get(base_model.name)
    if cached:
        return cached
    try:
        tokenizer = load_tokenizer(base_model)
    except Exception as exc:  # noqa: BLE001 - shown to the user, not raised
        return {"error": f"Could not load the tokenizer of {base_model.name}: {exc}"}
    stats = token_stats(data_file.full_path, tokenizer, base_model.max_length)
    data_file.stats = {**data_file.stats, base_model.name: stats}
    data_file.save(update_fields=["stats"])
    return stats


def store_upload(chunks, filename, owner=None, purpose="fine-tune", base_model=None):
    """Write uploaded chunks to the files folder, validate them, and record a DataFile.

    A file with errors is stored with status `error` (so the person can read its
    error table); it cannot start a job. Nothing already stored is touched.
    """
    from django.conf import settings

    from training.models import DataFile

    data_file = DataFile(filename=Path(filename).name[:255] or "upload.jsonl", owner=owner, purpose=purpose)
    rel = Path(data_file.public_id) / "data.jsonl"
    dest = settings.FILES_DIR / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit = settings.ATTUNE_MAX_UPLOAD_MB * 1024 * 1024
    size = 0
    try:
        with open(dest, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    break
                out.write(chunk)
        if size > limit:
            dest.unlink()
            report = Report(bytes=size)
            report.add(None, "file_too_large",
                       f"The file is larger than the limit of {settings.ATTUNE_MAX_UPLOAD_MB} MB "
                       "(ATTUNE_MAX_UPLOAD_MB); split it or raise the limit.")
        else:
            with open(dest, "rb") as fh:
                report = validate_lines(fh, max_line_bytes=settings.ATTUNE_MAX_LINE_MB * 1024 * 1024,
                                        purpose=purpose)
    except OSError:
        shutil.rmtree(dest.parent, ignore_errors=True)
        raise
    data_file.path = str(rel)
    data_file.bytes = size
    data_file.format = report.format
    data_file.n_examples = report.n_examples
    data_file.n_blank_lines = report.n_blank_lines
    data_file.n_errors = report.n_errors
    data_file.errors = report.errors
    data_file.status = "processed" if report.ok else "error"
    if not report.ok:
        data_file.status_details = report.errors[0]["message"]
    data_file.save()
    if report.ok and base_model is not None:
        stats_for(data_file, base_model)
    return data_file, report

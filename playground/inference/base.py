"""What every inference backend shares: sampling parameters, stream events, errors.

    backend.generate(snapshots, messages, params) -> async iterator of StreamEvent

`snapshots` is a list; each event carries the `index` of its snapshot in that
list. Every index ends with exactly one `done` or `error` event; before it
come zero or more `delta` events with the text as it is produced.
"""

import re
import time
from dataclasses import asdict, dataclass, field

MAX_TOKENS_LIMIT = 4096


class InferenceError(Exception):
    """A request a backend cannot serve, said in words a user can act on."""

    def __init__(self, message, param=None, code="inference_error"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class AdapterRankError(InferenceError):
    def __init__(self, snapshot_name, rank, max_rank):
        super().__init__(
            f"The adapter of '{snapshot_name}' has LoRA rank {rank}, larger than the inference server's "
            f"max_lora_rank {max_rank}. Restart the server with --max-lora-rank {rank} or more.",
            param="model", code="lora_rank_too_large")
        self.rank = rank
        self.max_rank = max_rank


def _shown(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _number(value, kind):
    """`value` (a JSON number or a form's text) as a number of `kind`, or None when it is not one.

    Out-of-range values (a 30-digit seed, infinity) come back as they are, for the range check to name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?[0-9]{1,400}", text):
            value = int(text)
        else:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if not isinstance(value, float):
        return None
    if kind is int:
        return int(value) if value.is_integer() else None
    return value


@dataclass
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    # The answer must be one of these (a label_model grader's labels): the built-in backend scores each
    # after the prompt and answers the likeliest, vLLM constrains its decoding to them. Never read from a
    # request: model graders set it.
    choices: tuple[str, ...] | None = None

    @property
    def greedy(self):
        # As vLLM does: a temperature this small is greedy decoding (dividing logits by it overflows).
        return self.temperature < 1e-5

    @classmethod
    def from_dict(cls, data):
        """Read and check sampling parameters; raise InferenceError naming the bad one."""
        data = data or {}
        out = {}
        for name, kind, low, high in (("temperature", float, 0.0, 2.0), ("top_p", float, 0.0, 1.0),
                                      ("max_tokens", int, 1, MAX_TOKENS_LIMIT), ("seed", int, 0, 2**63 - 1)):
            value = data.get(name)
            if value is None or value == "":
                continue
            number = _number(value, kind)
            if number is None:
                raise InferenceError(f"{name} must be {'an integer' if kind is int else 'a number'}; got {_shown(value)}.",
                                     param=name, code="invalid_value")
            if not low <= number <= high or (name == "top_p" and number == 0):
                bounds = f"more than 0 and at most {high}" if name == "top_p" else f"between {low} and {high}"
                raise InferenceError(f"{name} must be {bounds}; got {_shown(value)}.", param=name, code="invalid_value")
            out[name] = kind(number)
        return cls(**out)

    def as_dict(self):
        return asdict(self)


@dataclass
class StreamEvent:
    index: int
    type: str                  # delta | done | error
    text: str = ""             # delta: the new text; done: the whole output
    finish_reason: str = ""    # stop | length | cancelled
    n_tokens: int = 0
    n_prompt_tokens: int = 0
    ttft_s: float | None = None
    elapsed_s: float | None = None
    error: str = ""
    param: str | None = None   # error: the request field at fault, when it is the request's (max_tokens, …)

    @property
    def final(self):
        return self.type in ("done", "error")

    @property
    def tokens_per_second(self):
        """Decoding speed after the first token (the first one pays for the prompt)."""
        if not self.n_tokens or self.elapsed_s is None:
            return None
        if self.n_tokens > 1 and self.ttft_s is not None and self.elapsed_s > self.ttft_s:
            return (self.n_tokens - 1) / (self.elapsed_s - self.ttft_s)
        return self.n_tokens / self.elapsed_s if self.elapsed_s else None


@dataclass
class Timer:
    """Per-output time to first token and elapsed time, measured from the request."""

    started: float = field(default_factory=time.perf_counter)
    first: dict = field(default_factory=dict)

    def mark(self, index):
        self.first.setdefault(index, time.perf_counter() - self.started)

    def ttft(self, index):
        return self.first.get(index)

    def elapsed(self):
        return time.perf_counter() - self.started


def local_device():
    """Where this host's models run: "cuda" when torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def validate_messages(messages):
    """Check a chat: a list of {role, content} ending with a user turn."""
    if not isinstance(messages, list) or not messages:
        raise InferenceError("messages must be a non-empty list of {role, content} objects.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InferenceError(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        if message.get("role") not in ("system", "developer", "user", "assistant"):
            raise InferenceError(f"messages[{i}].role must be system, user or assistant; got "
                                 f"{message.get('role')!r}.", param=f"messages[{i}].role")
        if not isinstance(message.get("content"), str):
            raise InferenceError(f"messages[{i}].content must be a string.", param=f"messages[{i}].content")
    if messages[-1]["role"] != "user":
        raise InferenceError("The last message must be from the user.", param=f"messages[{len(messages) - 1}].role")
    return [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
            for m in messages]


async def collect(stream, n):
    """Drain a stream into one final event per index (deltas dropped)."""
    finals = [None] * n
    async for event in stream:
        if event.final:
            finals[event.index] = event
    return finals

"""The judge model that score_model and label_model graders ask, as the caller supplies it, and reading
its answers."""

import dataclasses
import json
import math
import re
from typing import Protocol

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclasses.dataclass
class JudgeAnswer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusal: str | None = None  # set when the model refused: model_grader_refusal_error


class JudgeError(Exception):
    """The judge's server failed (unreachable, overloaded, an error status): model_grader_server_error,
    with this message as its details."""


class Judge(Protocol):
    def __call__(self, model: str, messages: list[dict], params: dict, choices: list[str] | None) -> JudgeAnswer:
        """Answer `messages` (role and content strings, templates rendered) with `model`.

        `params` holds what the grader's sampling_params set, in chat-completions names:
        max_completion_tokens, seed, temperature, top_p (reasoning_effort is dropped). `choices` is the
        label_model's labels, which the answer must be one of (constrained decoding where the backend can);
        None for score_model. Raise JudgeError for a server failure."""


def read_score(text):
    """The number a judge answered: the `score` or `result` of a JSON object, else the first number in the
    text; None when there is none."""
    stripped = text.strip()
    try:
        parsed = json.loads(stripped)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("score", "result"):
            value = parsed.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
    elif isinstance(parsed, int | float) and not isinstance(parsed, bool) and math.isfinite(parsed):
        return float(parsed)
    match = _NUMBER.search(stripped)
    if match:
        value = float(match.group())
        return value if math.isfinite(value) else None
    return None


def read_label(text, labels):
    """The label a judge answered: exactly one of `labels` once stripped of whitespace and quotes, or the
    one label that matches ignoring case; None otherwise."""
    answer = text.strip().strip("\"'`").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("label"), str):
        answer = parsed["label"].strip()
    if answer in labels:
        return answer
    folded = [label for label in labels if label.casefold() == answer.casefold()]
    return folded[0] if len(folded) == 1 else None


def judge_params(sampling_params):
    params = {}
    for source, target in (("max_completions_tokens", "max_completion_tokens"), ("seed", "seed"),
                           ("temperature", "temperature"), ("top_p", "top_p")):
        if sampling_params.get(source) is not None:
            params[target] = sampling_params[source]
    return params

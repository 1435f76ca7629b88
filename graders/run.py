"""Grading samples: `run_grader` for one, `grade_items` for a batch, `grader_passed` for evals' rule."""

import dataclasses
import time

from graders import formula, similarity, templates
from graders.judge import JudgeError, judge_params, read_label, read_score
from graders.sandbox import run_python
from graders.shapes import validate_grader

# OpenAI's error flags (booleans), in the order its graders/run response lists them, with the three
# fields that carry details.
ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "python_grader_runtime_error",
               "python_grader_server_error", "sample_parse_error", "truncated_observation_error",
               "unresponsive_reward_error", "other_error")
_ERROR_FIELDS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
                 "model_grader_refusal_error", "model_grader_server_error", "model_grader_server_error_details",
                 "python_grader_runtime_error", "python_grader_runtime_error_details", "python_grader_server_error",
                 "python_grader_server_error_type", "sample_parse_error", "truncated_observation_error",
                 "unresponsive_reward_error", "other_error")


def no_errors():
    return {field: (None if field.endswith(("_details", "_type")) else False) for field in _ERROR_FIELDS}


@dataclasses.dataclass
class GradeResult:
    """One sample's grade. `passed` is None when an error flag is set (an eval counts the item as
    errored); `messages` says in words what went wrong, or what the judge answered."""

    reward: float
    sub_rewards: dict
    passed: bool | None
    metadata: dict
    token_usage_per_model: dict
    messages: list = dataclasses.field(default_factory=list)

    @property
    def errors(self):
        return self.metadata["errors"]

    @property
    def error(self):
        """The first error flag that is set, or None."""
        return next((flag for flag in ERROR_FLAGS if self.errors[flag]), None)

    def as_response(self, sampled_model_name=None):
        """The body of OpenAI's POST /v1/fine_tuning/alpha/graders/run."""
        metadata = dict(self.metadata, sampled_model_name=sampled_model_name or self.metadata["sampled_model_name"])
        return {"reward": self.reward, "sub_rewards": dict(self.sub_rewards),
                "model_grader_token_usage_per_model": {model: dict(usage) for model, usage in
                                                       self.token_usage_per_model.items()},
                "metadata": metadata}


def grader_passed(grader, score):
    """Evals' pass rule. string_check and label_model pass at a score of 1 (the label is a passing label).
    The others pass at score >= pass_threshold; without one (OpenAI's docs give no default), at the middle
    of score_model's range, and at 0.5 for text_similarity, python and multi."""
    kind = grader["type"]
    if kind in ("string_check", "label_model"):
        return score == 1
    threshold = grader.get("pass_threshold")
    if threshold is None:
        low, high = grader.get("range", [0, 1]) if kind == "score_model" else (0, 1)
        threshold = (low + high) / 2
    return score >= threshold


def run_grader(grader, model_sample, item=None, *, judge=None, limits=None):
    """Grade one sample (a string, or a dict with output_text, output_tools, choices) against one item.
    A grader that does not validate raises GraderError; a problem with the sample, the judge or the python
    code never raises: the reward is 0 and an error flag is set."""
    return grade_items(grader, [(model_sample, item)], judge=judge, limits=limits)[0]


def grade_items(grader, pairs, *, judge=None, limits=None):
    """run_grader for each (model_sample, item) of `pairs`, with one sandbox process per python grader
    for the whole batch."""
    grader = validate_grader(grader)
    samples = [templates.make_sample(model_sample) for model_sample, _ in pairs]
    items = [item if item is not None else {} for _, item in pairs]
    batch = _Batch(judge, limits)
    batch.run_python_graders(grader, samples, items)
    results = []
    for index, (sample, item) in enumerate(zip(samples, items, strict=True)):
        started = time.perf_counter()
        outcome = batch.grade(grader, sample, item, index)
        elapsed = time.perf_counter() - started + batch.python_seconds_per_item
        results.append(_result(grader, outcome, elapsed))
    return results


@dataclasses.dataclass
class _Outcome:
    score: float = 0.0
    errors: dict = dataclasses.field(default_factory=no_errors)
    usage: dict = dataclasses.field(default_factory=dict)
    sub_rewards: dict = dataclasses.field(default_factory=dict)
    messages: list = dataclasses.field(default_factory=list)

    def fail(self, flag, message, **details):
        self.score = 0.0
        self.errors[flag] = True
        self.errors.update(details)
        self.messages.append(message)
        return self

    @property
    def failed(self):
        return any(self.errors[flag] for flag in ERROR_FLAGS)


class _Batch:
    def __init__(self, judge, limits):
        self.judge, self.limits = judge, limits
        self.python = {}  # id(grader) -> [PythonOutcome per item]
        self.python_seconds_per_item = 0.0

    def run_python_graders(self, grader, samples, items):
        nodes = list(grader["graders"].values()) if grader["type"] == "multi" else [grader]
        calls = [(_public(sample), item) for sample, item in zip(samples, items, strict=True)]
        started = time.perf_counter()
        for node in nodes:
            if node["type"] == "python" and calls:
                self.python[id(node)] = run_python(node["source"], calls, self.limits)
        if calls:
            self.python_seconds_per_item = (time.perf_counter() - started) / len(calls)

    def grade(self, grader, sample, item, index):
        outcome = _Outcome()
        try:
            getattr(self, "grade_" + grader["type"])(grader, sample, item, index, outcome)
        except templates.TemplateError as error:
            outcome.fail(error.flag, f"grader {grader['name']!r}: {error}")
        except Exception as error:  # noqa: BLE001 - a metric library's failure is the item's, not the caller's
            outcome.fail("other_error", f"grader {grader['name']!r}: {type(error).__name__}: {error}")
        return outcome

    def grade_string_check(self, grader, sample, item, index, outcome):
        text = templates.render(grader["input"], sample, item)
        reference = templates.render(grader["reference"], sample, item)
        operation = grader["operation"]
        if operation == "eq":
            matched = text == reference
        elif operation == "ne":
            matched = text != reference
        elif operation == "like":
            matched = reference in text
        else:
            matched = reference.casefold() in text.casefold()
        outcome.score = 1.0 if matched else 0.0

    def grade_text_similarity(self, grader, sample, item, index, outcome):
        text = templates.render(grader["input"], sample, item)
        reference = templates.render(grader["reference"], sample, item)
        outcome.score = float(similarity.score(grader["evaluation_metric"], text, reference))

    def grade_score_model(self, grader, sample, item, index, outcome):
        answer = self.ask_judge(grader, sample, item, None, outcome)
        if answer is None:
            return
        value = read_score(answer.text)
        if value is None:
            outcome.fail("model_grader_parse_error", f"grader {grader['name']!r}: no score in the judge's answer "
                                                     f"{answer.text[:200]!r}")
            return
        low, high = grader["range"]
        if not low <= value <= high:
            outcome.messages.append(f"grader {grader['name']!r}: the judge answered {value:g}, outside "
                                    f"[{low:g}, {high:g}]; clamped")
        outcome.score = float(min(max(value, low), high))

    def grade_label_model(self, grader, sample, item, index, outcome):
        answer = self.ask_judge(grader, sample, item, list(grader["labels"]), outcome)
        if answer is None:
            return
        label = read_label(answer.text, grader["labels"])
        if label is None:
            outcome.fail("model_grader_parse_error", f"grader {grader['name']!r}: the judge's answer "
                                                     f"{answer.text[:200]!r} is not one of the labels")
            return
        outcome.messages.append(f"grader {grader['name']!r}: label {label!r}")
        outcome.score = 1.0 if label in grader["passing_labels"] else 0.0

    def grade_python(self, grader, sample, item, index, outcome):
        result = self.python[id(grader)][index]
        if result.flag == "python_grader_server_error":
            outcome.fail(result.flag, f"grader {grader['name']!r}: {result.details}",
                         python_grader_server_error_type=result.server_error_type)
        elif result.flag:
            outcome.fail(result.flag, f"grader {grader['name']!r}: {result.details}",
                         python_grader_runtime_error_details=result.details)
        else:
            outcome.score = result.score

    def grade_multi(self, grader, sample, item, index, outcome):
        for key, child in grader["graders"].items():
            result = self.grade(child, sample, item, index)
            outcome.sub_rewards[key] = result.score
            outcome.messages.extend(result.messages)
            for model, usage in result.usage.items():
                _add_usage(outcome.usage, model, usage)
            for field, value in result.errors.items():
                if value:
                    outcome.errors[field] = value
        if outcome.failed:
            outcome.score = 0.0
            return
        try:
            outcome.score = formula.evaluate(formula.parse(grader["calculate_output"], grader["graders"]),
                                             outcome.sub_rewards)
        except formula.FormulaError as error:
            outcome.fail("formula_parse_error", f"grader {grader['name']!r}: calculate_output: {error}")

    def ask_judge(self, grader, sample, item, choices, outcome):
        messages = [{"role": message["role"], "content": _render_content(message["content"], sample, item)}
                    for message in grader["input"]]
        name = grader["name"]
        if self.judge is None:
            outcome.fail("model_grader_server_error", f"grader {name!r}: no judge model is configured",
                         model_grader_server_error_details="no judge model is configured")
            return None
        try:
            answer = self.judge(grader["model"], messages, judge_params(grader.get("sampling_params", {})),
                                choices)
        except Exception as error:  # noqa: BLE001 - JudgeError or anything else the caller's backend raised
            details = str(error) if isinstance(error, JudgeError) else f"{type(error).__name__}: {error}"
            outcome.fail("model_grader_server_error", f"grader {name!r}: the judge failed: {details}",
                         model_grader_server_error_details=details)
            return None
        _add_usage(outcome.usage, grader["model"], {"prompt_tokens": answer.prompt_tokens,
                                                    "completion_tokens": answer.completion_tokens})
        if answer.refusal:
            outcome.fail("model_grader_refusal_error", f"grader {name!r}: the judge refused: {answer.refusal}")
            return None
        return answer


def _render_content(content, sample, item):
    if isinstance(content, str):
        return templates.render(content, sample, item)
    parts = content if isinstance(content, list) else [content]
    return "\n".join(templates.render(part["text"], sample, item) for part in parts)


def _add_usage(total, model, usage):
    entry = total.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    entry["prompt_tokens"] += usage["prompt_tokens"]
    entry["completion_tokens"] += usage["completion_tokens"]
    entry["total_tokens"] = entry["prompt_tokens"] + entry["completion_tokens"]


def _public(sample):
    return {key: value for key, value in sample.items() if key != "output_json_ok"}


def _result(grader, outcome, elapsed):
    usage = outcome.usage
    metadata = {"name": grader["name"], "type": grader["type"], "execution_time": elapsed,
                "scores": dict(outcome.sub_rewards),
                "token_usage": sum(entry["total_tokens"] for entry in usage.values()) if usage else None,
                "sampled_model_name": None, "errors": outcome.errors}
    passed = None if outcome.failed else grader_passed(grader, outcome.score)
    return GradeResult(reward=outcome.score, sub_rewards=dict(outcome.sub_rewards), passed=passed,
                       metadata=metadata, token_usage_per_model=usage, messages=outcome.messages)

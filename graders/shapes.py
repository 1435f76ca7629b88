"""Checking a grader before anything runs: `validate_grader` and the fields of each grader type."""

import ast
import copy
import math

from graders import formula, similarity, templates
from graders.sandbox import SandboxLimits

OPERATIONS = ("eq", "ne", "like", "ilike")
ROLES = ("system", "developer", "user", "assistant")
CONTEXTS = ("run", "rft", "eval")
# type -> (required fields, optional fields), besides `type` and `name`.
FIELDS = {
    "string_check": ({"input", "reference", "operation"}, set()),
    "text_similarity": ({"input", "reference", "evaluation_metric"}, {"pass_threshold"}),
    "score_model": ({"model", "input"}, {"range", "sampling_params", "pass_threshold"}),
    "label_model": ({"model", "input", "labels", "passing_labels"}, set()),
    "python": ({"source"}, {"image_tag", "pass_threshold"}),
    "multi": ({"graders", "calculate_output"}, {"pass_threshold"}),
}
SAMPLING_PARAMS = ("max_completions_tokens", "reasoning_effort", "seed", "temperature", "top_p")


class GraderError(ValueError):
    """A grader that cannot run. `param` is the dotted path to the field at fault, from the `param` the
    caller named (`grader.graders.tone.input[0].content`); `code` is one of missing_field, unknown_field,
    invalid_type, invalid_value, unknown_variable, syntax_error, model_not_found, invalid_formula,
    metric_unavailable, not_allowed."""

    def __init__(self, message, param, code="invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def validate_grader(grader, *, model_exists=None, top_level=True, param="grader", context="run", limits=None):
    """A normalized copy of `grader` (defaults filled in), or GraderError naming the first fault.

    `model_exists(name) -> bool` checks the model of score_model and label_model graders (None: not
    checked). `context`: "run" (the graders/run and validate routes) allows every type at the top;
    "rft" refuses label_model at the top, as OpenAI does for a reinforcement job's grader; "eval" (a
    testing criterion) requires text_similarity's pass_threshold, as OpenAI's Evals do."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, not {context!r}")
    limits = limits or SandboxLimits()
    checked = copy.deepcopy(grader)
    _check(checked, param, top_level, model_exists, context, limits)
    return checked


def _check(grader, param, top_level, model_exists, context, limits):
    if not isinstance(grader, dict):
        raise GraderError(f"{param} must be an object", param, "invalid_type")
    kind = grader.get("type")
    if kind is None:
        raise GraderError(f"{param}.type is missing", f"{param}.type", "missing_field")
    if kind not in FIELDS:
        raise GraderError(f"{param}.type {kind!r} is not a grader type ({', '.join(FIELDS)})",
                          f"{param}.type", "invalid_value")
    required, optional = FIELDS[kind]
    required = required | {"name"}
    for field in grader:
        if field not in required | optional | {"type"}:
            raise GraderError(f"{param}.{field} is not a field of a {kind} grader", f"{param}.{field}",
                              "unknown_field")
    for field in sorted(required):
        if field not in grader:
            raise GraderError(f"{param}.{field} is missing: a {kind} grader needs {', '.join(sorted(required))}",
                              f"{param}.{field}", "missing_field")
    name = _string(grader, "name", param)
    if kind == "multi" and not top_level:
        raise GraderError(f"grader {name!r}: a multi grader cannot hold another multi grader", f"{param}.type",
                          "not_allowed")
    if kind == "label_model" and top_level and context == "rft":
        raise GraderError(f"grader {name!r}: label_model cannot be a reinforcement job's grader; put it inside "
                          "a multi grader", f"{param}.type", "not_allowed")
    if "pass_threshold" in grader:
        _number(grader, "pass_threshold", param)
    elif kind == "text_similarity" and context == "eval":
        raise GraderError(f"{param}.pass_threshold is missing: an eval's text_similarity grader needs one",
                          f"{param}.pass_threshold", "missing_field")
    check = {"string_check": _check_string_check, "text_similarity": _check_text_similarity,
             "score_model": _check_model_grader, "label_model": _check_model_grader, "python": _check_python,
             "multi": _check_multi}[kind]
    check(grader, param, name, model_exists=model_exists, context=context, limits=limits)


def _check_string_check(grader, param, name, **_):
    for field in ("input", "reference"):
        _template(grader, field, param, name)
    if grader["operation"] not in OPERATIONS:
        raise GraderError(f"{param}.operation {grader['operation']!r} is not one of {', '.join(OPERATIONS)}",
                          f"{param}.operation")


def _check_text_similarity(grader, param, name, **_):
    for field in ("input", "reference"):
        _template(grader, field, param, name)
    metric = grader["evaluation_metric"]
    if metric not in similarity.METRICS:
        raise GraderError(f"{param}.evaluation_metric {metric!r} is not one of {', '.join(similarity.METRICS)}",
                          f"{param}.evaluation_metric")
    why = similarity.unavailable(metric)
    if why:
        raise GraderError(f"grader {name!r}: {why}", f"{param}.evaluation_metric", "metric_unavailable")


def _check_model_grader(grader, param, name, *, model_exists, **_):
    model = _string(grader, "model", param)
    if model_exists is not None and not model_exists(model):
        raise GraderError(f"grader {name!r}: the model {model!r} does not exist", f"{param}.model",
                          "model_not_found")
    messages = grader["input"]
    if not isinstance(messages, list) or not messages:
        raise GraderError(f"{param}.input must be a non-empty list of messages", f"{param}.input", "invalid_type")
    for i, message in enumerate(messages):
        _check_message(message, f"{param}.input[{i}]", name)
    if grader["type"] == "score_model":
        _check_score_model(grader, param)
    else:
        _check_labels(grader, param, name)


def _check_message(message, param, name):
    if not isinstance(message, dict):
        raise GraderError(f"{param} must be a message object", param, "invalid_type")
    for field in message:
        if field not in ("role", "content", "type"):
            raise GraderError(f"{param}.{field} is not a field of a message", f"{param}.{field}", "unknown_field")
    for field in ("role", "content"):
        if field not in message:
            raise GraderError(f"{param}.{field} is missing", f"{param}.{field}", "missing_field")
    if message.get("type", "message") != "message":
        raise GraderError(f"{param}.type must be 'message'", f"{param}.type")
    if message["role"] not in ROLES:
        raise GraderError(f"{param}.role {message['role']!r} is not one of {', '.join(ROLES)}", f"{param}.role")
    content = message["content"]
    if isinstance(content, str):
        _template(message, "content", param, name)
        return
    parts = content if isinstance(content, list) else [content]
    for i, part in enumerate(parts):
        where = f"{param}.content[{i}]" if isinstance(content, list) else f"{param}.content"
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise GraderError(f"{where} must be a string or an input_text/output_text part (images and audio "
                              "are not supported)", where, "invalid_type")
        if set(part) - {"type", "text"} or "text" not in part:
            raise GraderError(f"{where} must have exactly the fields type and text", where, "invalid_value")
        _template(part, "text", where, name)


def _check_score_model(grader, param):
    grader.setdefault("range", [0, 1])
    bounds = grader["range"]
    if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(x) for x in bounds)
            or not bounds[0] < bounds[1]):
        raise GraderError(f"{param}.range must be [low, high] with low < high, not {bounds!r}", f"{param}.range")
    params = grader.setdefault("sampling_params", {})
    if not isinstance(params, dict):
        raise GraderError(f"{param}.sampling_params must be an object", f"{param}.sampling_params",
                          "invalid_type")
    where = f"{param}.sampling_params"
    for key, value in params.items():
        if key not in SAMPLING_PARAMS:
            raise GraderError(f"{where}.{key} is not a sampling parameter ({', '.join(SAMPLING_PARAMS)})",
                              f"{where}.{key}", "unknown_field")
        if value is None:
            continue
        if key in ("max_completions_tokens", "seed") and (not isinstance(value, int) or isinstance(value, bool)
                                                          or (key == "max_completions_tokens" and value < 1)):
            raise GraderError(f"{where}.{key} must be {'a positive' if key[0] == 'm' else 'an'} integer",
                              f"{where}.{key}")
        if key == "temperature" and not (_is_number(value) and 0 <= value <= 2):
            raise GraderError(f"{where}.temperature must be a number from 0 to 2", f"{where}.temperature")
        if key == "top_p" and not (_is_number(value) and 0 < value <= 1):
            raise GraderError(f"{where}.top_p must be a number above 0, at most 1", f"{where}.top_p")
        if key == "reasoning_effort" and not isinstance(value, str):  # accepted, not used
            raise GraderError(f"{where}.reasoning_effort must be a string", f"{where}.reasoning_effort")


def _check_labels(grader, param, name):
    labels = grader["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise GraderError(f"{param}.labels must be a non-empty list of strings", f"{param}.labels", "invalid_type")
    if len(set(labels)) != len(labels):
        raise GraderError(f"{param}.labels has a label twice", f"{param}.labels")
    passing = grader["passing_labels"]
    if not isinstance(passing, list) or not passing or not all(isinstance(x, str) for x in passing):
        raise GraderError(f"{param}.passing_labels must be a non-empty list of strings", f"{param}.passing_labels",
                          "invalid_type")
    for i, label in enumerate(passing):
        if label not in labels:
            raise GraderError(f"grader {name!r}: passing label {label!r} is not one of the labels "
                              f"({', '.join(labels)})", f"{param}.passing_labels[{i}]")


def _check_python(grader, param, name, *, limits, **_):
    source = _string(grader, "source", param)
    if "image_tag" in grader:
        _string(grader, "image_tag", param)
    where = f"{param}.source"
    if len(source.encode()) > limits.source_kb * 1024:
        raise GraderError(f"grader {name!r}: the source is {len(source.encode()) // 1024} KB, over the "
                          f"{limits.source_kb} KB limit", where)
    try:
        tree = compile(source, "grader.py", "exec", ast.PyCF_ONLY_AST)
        compile(tree, "grader.py", "exec")
    except SyntaxError as error:
        raise GraderError(f"grader {name!r}: syntax error on line {error.lineno}: {error.msg}", where,
                          "syntax_error") from None
    except ValueError as error:  # a null byte
        raise GraderError(f"grader {name!r}: the source cannot compile: {error}", where, "syntax_error") from None
    grade = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "grade"), None)
    if grade is None:
        raise GraderError(f"grader {name!r}: the source defines no top-level function grade(sample, item)", where)
    arguments = grade.args
    if len(arguments.posonlyargs) + len(arguments.args) < 2 and arguments.vararg is None:
        raise GraderError(f"grader {name!r}: grade() must take two arguments, (sample, item)", where)


def _check_multi(grader, param, name, *, model_exists, context, limits):
    children = grader["graders"]
    if not isinstance(children, dict) or not children:
        raise GraderError(f"{param}.graders must be a non-empty object of graders by key", f"{param}.graders",
                          "invalid_type")
    for key, child in children.items():
        _check(child, f"{param}.graders.{key}", False, model_exists, context, limits)
    text = _string(grader, "calculate_output", param)
    try:
        formula.parse(text, children)
    except formula.FormulaError as error:
        raise GraderError(f"grader {name!r}: calculate_output: {error}", f"{param}.calculate_output",
                          "invalid_formula") from None


def item_references(grader):
    """(grader name, variable as written, path) for each `{{item.<path>}}` the templates of a validated
    `grader` read: string_check's and text_similarity's input and reference, a model grader's messages, a
    multi grader's sub-graders. A python grader reads `item` as it likes: it names none."""
    found = []
    kind = grader.get("type")
    if kind == "multi":
        for child in grader["graders"].values():
            found += item_references(child)
        return found
    texts = []
    if kind in ("string_check", "text_similarity"):
        texts = [grader["input"], grader["reference"]]
    elif kind in ("score_model", "label_model"):
        for message in grader["input"]:
            content = message["content"]
            parts = content if isinstance(content, list) else [content]
            texts += [part if isinstance(part, str) else part["text"] for part in parts]
    for text in texts:
        for match in templates.VARIABLE.finditer(text):
            path = templates.parse_variable(match.group(1))
            if path is not None and path[0] == "item" and len(path) > 1:
                found.append((grader["name"], match.group(0), path))
    return found


def _template(holder, field, param, name):
    text = _string(holder, field, param)
    unknown = templates.unknown_variables(text)
    if unknown:
        raise GraderError(f"grader {name!r}: unknown template variable {unknown[0]} in {field}; the variables are "
                          f"{templates.ALLOWED}", f"{param}.{field}", "unknown_variable")


def _string(holder, field, param):
    value = holder[field]
    if not isinstance(value, str):
        raise GraderError(f"{param}.{field} must be a string", f"{param}.{field}", "invalid_type")
    return value


def _number(holder, field, param):
    value = holder[field]
    if not _is_number(value):
        raise GraderError(f"{param}.{field} must be a number", f"{param}.{field}", "invalid_type")
    return value


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

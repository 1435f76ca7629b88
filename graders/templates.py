"""`{{item.*}}` and `{{sample.*}}` templates: which variables a text names, and the text they render to.

A variable is a root and a path of `.field` and `[i]` steps. The roots:

- `item` and anything under it: the data row's fields (`item.answer`, `item.meta.tags[0]`);
- `sample.output_text`: the model's answer as it was written;
- `sample.output_json` and anything under it: the answer parsed as JSON (a sample that does not parse
  fails with `sample_parse_error`);
- `sample.output_tools` and `sample.choices`, with any path: the answer's tool calls and choices.

A value that is not a string renders as JSON. A path that names nothing at run time fails with
`invalid_variable_error`.
"""

import json
import re

VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.S)
_STEP = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ALLOWED = "item.*, sample.output_text, sample.output_json.*, sample.output_tools, sample.choices"


class TemplateError(Exception):
    """A variable that cannot render for this sample; `flag` is the error flag it sets."""

    def __init__(self, message, flag):
        super().__init__(message)
        self.flag = flag


def parse_variable(text):
    """`item.a[0].b` → ["item", "a", 0, "b"]; None when it is not a variable of the allowed roots."""
    text = text.strip()
    root = _ROOT.match(text)
    if not root:
        return None
    path = [root.group()]
    position = root.end()
    while position < len(text):
        step = _STEP.match(text, position)
        if not step:
            return None
        path.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
        position = step.end()
    if path[0] == "item":
        return path
    if path[0] != "sample" or len(path) < 2:
        return None
    if path[1] == "output_text":
        return path if len(path) == 2 else None
    if path[1] in ("output_json", "output_tools", "choices"):
        return path
    return None


def unknown_variables(template):
    """The `{{…}}` of `template` that name no allowed variable, as written."""
    return [match.group(0) for match in VARIABLE.finditer(template) if parse_variable(match.group(1)) is None]


def make_sample(model_sample):
    """The sample that templates and python graders read, from a string (the answer) or a dict with
    `output_text` and optionally `output_tools` and `choices`. `output_json` is None when the text is
    not JSON; `output_json_ok` says which."""
    if isinstance(model_sample, dict):
        text = model_sample.get("output_text") or ""
        tools = model_sample.get("output_tools") or []
        choices = model_sample.get("choices") or []
    else:
        text, tools, choices = model_sample or "", [], []
    try:
        parsed, parsed_ok = json.loads(text), True
    except ValueError:
        parsed, parsed_ok = None, False
    return {"output_text": text, "output_json": parsed, "output_tools": tools, "choices": choices,
            "output_json_ok": parsed_ok}


def lookup(path, sample, item):
    """The value a parsed variable names, or TemplateError."""
    if path[0] == "item":
        value, rest = item if item is not None else {}, path[1:]
    else:
        if path[1] == "output_json" and not sample["output_json_ok"]:
            raise TemplateError("the sample is not valid JSON, so {{sample.output_json}} cannot render",
                                "sample_parse_error")
        value, rest = sample[path[1]], path[2:]
    walked = path[:len(path) - len(rest)]
    for step in rest:
        try:
            if isinstance(step, int) and isinstance(value, list):
                value = value[step]
            elif isinstance(step, str) and isinstance(value, dict):
                value = value[step]
            else:
                raise LookupError
        except LookupError:
            raise TemplateError(f"{{{{{_dotted(walked + [step])}}}}} names nothing in this "
                                f"{'item' if path[0] == 'item' else 'sample'}", "invalid_variable_error") from None
        walked.append(step)
    return value


def render(template, sample, item):
    """`template` with every variable replaced; raises TemplateError."""
    def replace(match):
        path = parse_variable(match.group(1))
        if path is None:  # validation refuses these; a grader that skipped it fails here the same way
            raise TemplateError(f"unknown template variable {match.group(0)}", "invalid_variable_error")
        value = lookup(path, sample, item)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return VARIABLE.sub(replace, template)


def _dotted(path):
    return "".join(f"[{step}]" if isinstance(step, int) else (f".{step}" if i else step)
                   for i, step in enumerate(path))

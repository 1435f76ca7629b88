"""Checking what creates an eval or a run, for the /v1 API and the Evals page alike.

Every problem raises `EvalError(message, param, code)`, `param` being the request field at fault
(`testing_criteria[1].reference`, `data_source.source.content[3].item`). Nothing is stored until a
whole request passes.

- `eval_fields(body)`: name, metadata, data_source_config (`custom` only: Attune keeps no logs of
  completions), testing_criteria (each checked by `graders.validate_grader` before anything runs:
  template variables, python syntax, judge models, formulas), and Attune's `attune.data_source`, the
  prompts a job's epoch checkpoints are run on.
- `run_fields(eval, body)`: name, metadata, data_source: `jsonl` (samples made beforehand) or
  `completions` (a snapshot, a source, input messages, sampling params).
- `load_rows(data_source)`: the data source's rows as (item, sample or None), at most EVAL_MAX_ITEMS.
- `input_messages(data_source, item)`: the chat sent to the model for one item.
"""

import json

from django.conf import settings

from training.datasets import check_eval_item
from training.jobs import check_metadata
from training.models import DataFile, JobError

DEFAULT_SAMPLING = {"max_completion_tokens": 256, "temperature": 1.0, "top_p": 1.0, "seed": 42}
SAMPLING_FIELDS = {"max_completion_tokens", "temperature", "top_p", "seed", "reasoning_effort", "response_format",
                   "tools"}
ROLES = ("system", "developer", "user", "assistant")


class EvalError(Exception):
    def __init__(self, message, param=None, code="invalid_value", status=400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def _object(value, param, required=False):
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise EvalError(f"'{param}' must be an object.", param=param,
                        code="missing_required_parameter" if value is None else "invalid_type")
    return value


def _unknown(obj, allowed, prefix):
    extra = sorted(set(obj) - set(allowed))
    if extra:
        where = f"{prefix}.{extra[0]}" if prefix else extra[0]
        raise EvalError(f"Unrecognized request argument supplied: {where}", param=where, code="unknown_parameter")


def _metadata(value):
    try:
        return check_metadata(value)
    except JobError as exc:
        raise EvalError(exc.message, param=exc.param or "metadata") from None


def _name(value, param="name"):
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise EvalError(f"'{param}' must be a string of at most 256 characters.", param=param)
    return value


def judge_exists(name):
    """A judge is a snapshot or a model of an external endpoint (`<endpoint>/<model>`)."""
    from evals.judges import endpoint_for

    return endpoint_for(name) is not None or snapshot_exists(name)


def snapshot_exists(name):
    from playground.snapshots import UnknownModel, resolve_snapshot

    try:
        resolve_snapshot(name)
    except UnknownModel:
        return False
    return True


def check_criteria(criteria, param="testing_criteria"):
    """The testing criteria, each validated and normalized; names are unique (a run's results use them)."""
    from graders import GraderError, validate_grader

    if not isinstance(criteria, list) or not criteria:
        raise EvalError(f"'{param}' must be a non-empty list of graders.", param=param,
                        code="missing_required_parameter" if criteria is None else "invalid_type")
    if len(criteria) > 20:
        raise EvalError(f"'{param}' holds {len(criteria)} graders; at most 20 are allowed.", param=param)
    out, names = [], set()
    for i, criterion in enumerate(criteria):
        where = f"{param}[{i}]"
        if not isinstance(criterion, dict):
            raise EvalError(f"'{where}' must be a grader object.", param=where, code="invalid_type")
        threshold = criterion.get("pass_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise EvalError(f"'{where}.pass_threshold' must be a number.", param=f"{where}.pass_threshold")
        try:
            grader = validate_grader(criterion, model_exists=judge_exists, param=where, context="eval")
        except GraderError as exc:
            raise EvalError(exc.message, param=exc.param, code=exc.code or "invalid_grader") from None
        name = grader.get("name") or grader["type"]
        if name in names:
            raise EvalError(f"Two testing criteria are named {name!r}; give each its own name.",
                            param=f"{where}.name")
        names.add(name)
        grader["name"] = name
        out.append(grader)
    return out


def _data_source_config(value):
    config = _object(value, "data_source_config", required=True)
    kind = config.get("type")
    if kind in ("logs", "stored_completions"):
        raise EvalError(f"data_source_config type {kind!r} reads completions stored by OpenAI; Attune stores "
                        "none. Use type 'custom' with an item_schema.", param="data_source_config.type",
                        code="unsupported_value")
    if kind != "custom":
        raise EvalError(f"Invalid data_source_config.type {kind!r}: use 'custom'.", param="data_source_config.type")
    _unknown(config, {"type", "item_schema", "include_sample_schema"}, "data_source_config")
    schema = config.get("item_schema")
    if not isinstance(schema, dict):
        raise EvalError("'data_source_config.item_schema' must be a JSON schema object.",
                        param="data_source_config.item_schema", code="missing_required_parameter"
                        if schema is None else "invalid_type")
    include = config.get("include_sample_schema", False)
    if not isinstance(include, bool):
        raise EvalError("'data_source_config.include_sample_schema' must be true or false.",
                        param="data_source_config.include_sample_schema")
    return {"type": "custom", "item_schema": schema, "include_sample_schema": include}


def eval_fields(body):
    """The fields of a new Eval from a create request, or EvalError."""
    _unknown(body, {"name", "metadata", "data_source_config", "testing_criteria", "attune"}, "")
    config = _data_source_config(body.get("data_source_config"))
    fields = {"name": _name(body.get("name")), "metadata": _metadata(body.get("metadata")),
              "data_source_config": config, "testing_criteria": check_criteria(body.get("testing_criteria"))}
    extension = _object(body.get("attune"), "attune")
    _unknown(extension, {"data_source"}, "attune")
    fields["epoch_data_source"] = {}
    if extension.get("data_source") is not None:
        source = dict(_object(extension["data_source"], "attune.data_source"))
        if "model" in source:
            raise EvalError("attune.data_source takes no model: each epoch checkpoint is the model.",
                            param="attune.data_source.model")
        source.setdefault("type", "completions")
        fields["epoch_data_source"] = check_data_source(source, "attune.data_source", need_model=False)
    return fields


def eval_update(body):
    """The fields an update may change: name and metadata, as OpenAI's API allows."""
    _unknown(body, {"name", "metadata"}, "")
    fields = {}
    if "name" in body:
        fields["name"] = _name(body["name"])
    if "metadata" in body:
        fields["metadata"] = _metadata(body["metadata"])
    return fields


def run_fields(eval_obj, body):
    """The fields of a new EvalRun of `eval_obj` from a create request, or EvalError."""
    _unknown(body, {"name", "metadata", "data_source"}, "")
    data_source = check_data_source(_object(body.get("data_source"), "data_source", required=True), "data_source")
    return {"name": _name(body.get("name")), "metadata": _metadata(body.get("metadata")),
            "data_source": data_source}


def check_data_source(source, param, need_model=True):
    kind = source.get("type")
    if kind == "jsonl":
        _unknown(source, {"type", "source"}, param)
        return {"type": "jsonl", "source": _source(source.get("source"), f"{param}.source")}
    if kind == "responses":
        raise EvalError("The responses data source is not supported; use completions or jsonl.",
                        param=f"{param}.type", code="unsupported_value")
    if kind != "completions":
        raise EvalError(f"Invalid {param}.type {kind!r}: use completions or jsonl.", param=f"{param}.type")
    _unknown(source, {"type", "model", "source", "input_messages", "sampling_params"}, param)
    out = {"type": "completions"}
    if need_model:
        model = source.get("model")
        if not isinstance(model, str) or not model:
            raise EvalError(f"Missing required parameter: '{param}.model' (a snapshot: base, fine-tuned or "
                            "checkpoint).", param=f"{param}.model", code="missing_required_parameter")
        if not snapshot_exists(model):
            raise EvalError(f"The model '{model}' does not exist: it is not a base model, a fine-tuned model or "
                            "a checkpoint of this studio.", param=f"{param}.model", code="model_not_found")
        out["model"] = model
    out["source"] = _source(source.get("source"), f"{param}.source")
    out["input_messages"] = _input_messages(source.get("input_messages"), f"{param}.input_messages")
    out["sampling_params"] = _sampling(source.get("sampling_params"), f"{param}.sampling_params")
    return out


def _source(value, param):
    source = _object(value, param, required=True)
    kind = source.get("type")
    if kind == "file_content":
        _unknown(source, {"type", "content"}, param)
        content = source.get("content")
        if not isinstance(content, list) or not content:
            raise EvalError(f"'{param}.content' must be a non-empty list of {{item, sample?}} objects.",
                            param=f"{param}.content")
        if len(content) > settings.EVAL_MAX_ITEMS:
            raise EvalError(f"'{param}.content' holds {len(content)} rows; at most {settings.EVAL_MAX_ITEMS} "
                            "(EVAL_MAX_ITEMS) are allowed.", param=f"{param}.content")
        for i, row in enumerate(content):
            where = f"{param}.content[{i}]"
            if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
                raise EvalError(f"'{where}' must be an object with an 'item' object.", param=f"{where}.item")
            _unknown(row, {"item", "sample"}, where)
            if row.get("sample") is not None and not isinstance(row["sample"], dict):
                raise EvalError(f"'{where}.sample' must be an object.", param=f"{where}.sample")
        return {"type": "file_content", "content": content}
    if kind == "file_id":
        _unknown(source, {"type", "id"}, param)
        file_id = source.get("id")
        data_file = DataFile.objects.filter(public_id=file_id).first() if isinstance(file_id, str) else None
        if data_file is None:
            raise EvalError(f"No file with id {file_id!r} ({param}.id). Upload it first, with purpose 'evals'.",
                            param=f"{param}.id", code="file_not_found")
        if data_file.purpose not in ("evals", "fine-tune") or data_file.status != "processed" or data_file.n_errors:
            raise EvalError(f"File {file_id} ({param}.id) cannot feed an eval: it must be a JSONL file uploaded "
                            f"with purpose 'evals' (or 'fine-tune') that passed validation; it has purpose "
                            f"{data_file.purpose!r} and status {data_file.status!r}.", param=f"{param}.id",
                            code="invalid_file")
        if data_file.n_examples > settings.EVAL_MAX_ITEMS:
            raise EvalError(f"File {file_id} holds {data_file.n_examples} rows; at most {settings.EVAL_MAX_ITEMS} "
                            "(EVAL_MAX_ITEMS) are allowed.", param=f"{param}.id")
        return {"type": "file_id", "id": file_id}
    if kind == "stored_completions":
        raise EvalError("The stored_completions source reads completions stored by OpenAI; Attune stores none.",
                        param=f"{param}.type", code="unsupported_value")
    raise EvalError(f"Invalid {param}.type {kind!r}: use file_content or file_id.", param=f"{param}.type")


def _content_text(content, param):
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and content.get("type") in ("input_text", "output_text") \
            and isinstance(content.get("text"), str):
        return content["text"]
    raise EvalError(f"'{param}' must be a string or an input_text object; images are not supported.",
                    param=param, code="unsupported_value")


def _check_prompt_template(text, param):
    """A prompt is written before any sample exists: it may name the item's fields only."""
    from graders.templates import VARIABLE, parse_variable

    for match in VARIABLE.finditer(text):
        path = parse_variable(match.group(1))
        if path is None or path[0] != "item":
            raise EvalError(f"Unknown template variable {match.group(0)} in {param}: a prompt may use "
                            "{{item.<field>}} only (the sample does not exist yet).", param=param,
                            code="invalid_variable")


def _input_messages(value, param):
    messages = _object(value, param, required=True)
    kind = messages.get("type")
    if kind == "item_reference":
        _unknown(messages, {"type", "item_reference"}, param)
        ref = messages.get("item_reference")
        if not isinstance(ref, str) or not ref.startswith("item.") or len(ref) < 6:
            raise EvalError(f"'{param}.item_reference' must name an item field, such as 'item.messages'.",
                            param=f"{param}.item_reference")
        return {"type": "item_reference", "item_reference": ref}
    if kind != "template":
        raise EvalError(f"Invalid {param}.type {kind!r}: use template or item_reference.", param=f"{param}.type")
    _unknown(messages, {"type", "template"}, param)
    template = messages.get("template")
    if not isinstance(template, list) or not template:
        raise EvalError(f"'{param}.template' must be a non-empty list of messages.", param=f"{param}.template")
    out = []
    for i, message in enumerate(template):
        where = f"{param}.template[{i}]"
        if not isinstance(message, dict):
            raise EvalError(f"'{where}' must be a message object.", param=where)
        _unknown(message, {"role", "content", "type"}, where)
        if message.get("role") not in ROLES:
            raise EvalError(f"'{where}.role' must be one of {', '.join(ROLES)}.", param=f"{where}.role")
        text = _content_text(message.get("content"), f"{where}.content")
        _check_prompt_template(text, f"{where}.content")
        out.append({"role": message["role"], "content": text})
    if out[-1]["role"] != "user":
        raise EvalError(f"The last message of '{param}.template' must be from the user.",
                        param=f"{param}.template[{len(out) - 1}].role")
    return {"type": "template", "template": out}


def _sampling(value, param):
    params = _object(value, param)
    _unknown(params, SAMPLING_FIELDS, param)
    for name in ("response_format", "tools"):
        if params.get(name) not in (None, [], {}):
            raise EvalError(f"'{param}.{name}' is not supported by Attune's inference backends.",
                            param=f"{param}.{name}", code="unsupported_value")
    out = dict(DEFAULT_SAMPLING)
    for name, kind, low, high in (("max_completion_tokens", int, 1, 4096), ("temperature", float, 0.0, 2.0),
                                  ("top_p", float, 0.0, 1.0), ("seed", int, 0, 2**63 - 1)):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise EvalError(f"'{param}.{name}' must be {'an integer' if kind is int else 'a number'}.",
                            param=f"{param}.{name}", code="invalid_type")
        if not low <= value <= high or (name == "top_p" and value == 0):
            raise EvalError(f"'{param}.{name}' must be between {low} and {high}; got {value}.",
                            param=f"{param}.{name}")
        out[name] = kind(value)
    return out


# --- reading a data source ---------------------------------------------------------

def _row(obj):
    """(item, sample) of one stored line: `{"item": …, "sample": …}`, or the object itself as the item."""
    if isinstance(obj, dict) and isinstance(obj.get("item"), dict):
        return obj["item"], obj.get("sample")
    return obj, None


def load_rows(data_source):
    """[(item, sample or None)] of a checked data source, at most EVAL_MAX_ITEMS; EvalError when its file
    has gone or changed."""
    source = data_source["source"]
    if source["type"] == "file_content":
        return [(row["item"], row.get("sample")) for row in source["content"]]
    data_file = DataFile.objects.filter(public_id=source["id"]).first()
    if data_file is None or not data_file.full_path.is_file():
        raise EvalError(f"The file {source['id']} of this run has been deleted.", param="data_source.source.id",
                        code="file_not_found")
    rows = []
    with open(data_file.full_path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8-sig", errors="replace").strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                raise EvalError(f"Line {number} of {source['id']} is not valid JSON.",
                                param="data_source.source.id") from None
            _fmt, problems = check_eval_item(obj)
            if problems:
                raise EvalError(f"Line {number} of {source['id']}: {problems[0][1]}", param="data_source.source.id")
            rows.append(_row(obj))
            if len(rows) > settings.EVAL_MAX_ITEMS:
                raise EvalError(f"{source['id']} holds more than {settings.EVAL_MAX_ITEMS} rows (EVAL_MAX_ITEMS).",
                                param="data_source.source.id")
    return rows


def first_item(data_file, max_bytes=1024 * 1024):
    """The item of a stored file's first line, or None when it is gone or that line is not an object
    (or longer than `max_bytes`): what the Evals page derives an item schema from and shows as an example."""
    try:
        with open(data_file.full_path, "rb") as fh:
            while raw := fh.readline(max_bytes + 1):
                if len(raw) > max_bytes:
                    return None
                text = raw.decode("utf-8-sig", errors="replace").strip()
                if not text:
                    continue
                try:
                    item, _sample = _row(json.loads(text))
                except ValueError:
                    return None
                return item if isinstance(item, dict) else None
    except OSError:
        return None
    return None


JSON_TYPES = ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "array"),
              (dict, "object"), (type(None), "null"))


def item_schema(item):
    """A JSON schema of an item's top-level fields and their types, from one example item."""
    properties = {}
    for key, value in (item or {}).items():
        kind = next(name for cls, name in JSON_TYPES if isinstance(value, cls))
        properties[key] = {"type": kind}
    return {"type": "object", "properties": properties}


def input_messages(data_source, item):
    """The chat for one item, or EvalError naming what the item lacks."""
    from graders.templates import TemplateError, make_sample, render

    spec = data_source["input_messages"]
    if spec["type"] == "item_reference":
        value = item
        for part in spec["item_reference"].split(".")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value):
            raise EvalError(f"{spec['item_reference']} is not a list of {{role, content}} messages in this item.",
                            param="data_source.input_messages.item_reference")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    out = []
    for message in spec["template"]:
        try:
            out.append({"role": message["role"], "content": render(message["content"], make_sample(""), item)})
        except TemplateError as exc:
            raise EvalError(f"The prompt cannot be written for this item: {exc}.",
                            param="data_source.input_messages") from None
    return out

"""Turn a `POST /v1/fine_tuning/jobs` body (OpenAI's job request: `method` with its
hyperparameters, or the deprecated top-level `hyperparameters`; `integrations` as a list)
into the JobSpec dict that `training.jobs.create_job` receives, naming the request field of
every problem as `param`. What the request's shape allows is checked here; what the job
allows (the spec's ranges, metadata, files) is `create_job`'s to refuse.

The stored spec is a JobSpec dict whose `model` is a BaseModel name and whose
files are public file ids; the worker maps those to paths. Attune's own
fields (adapter, LoRA, advanced settings) come under the `attune` key.
"""

from api.errors import ApiError
from training.engine.spec import (
    AUTO,
    INTEGRATIONS,
    METHODS,
    extension_fields,
    hyperparameters_for,
    spec_errors,
)

REQUEST_FIELDS = {"model", "training_file", "validation_file", "suffix", "seed", "metadata", "integrations",
                  "method", "hyperparameters", "attune"}
# What a method's section holds besides its hyperparameters: the reinforcement method's grader and format.
SECTION_FIELDS = {"supervised": (), "dpo": (), "reinforcement": ("grader", "response_format")}


def _object(value, param):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(f"'{param}' must be an object.", param=param)
    return value


def _method(body):
    """(method type, its hyperparameters, the param prefix they came from, the section's other fields)."""
    method = _object(body.get("method"), "method")
    unknown = sorted(set(method) - {"type", *METHODS})
    if unknown:
        raise ApiError(f"Unrecognized request argument supplied: method.{unknown[0]}", param=f"method.{unknown[0]}")
    kind = method.get("type", "supervised")
    if kind not in METHODS:
        raise ApiError(f"Invalid method type {kind!r}: use one of {', '.join(METHODS)}.", param="method.type")
    for other in METHODS:
        if other != kind and method.get(other) is not None:
            raise ApiError(f"method.{other} was given but method.type is {kind!r}.", param=f"method.{other}")
    section = _object(method.get(kind), f"method.{kind}")
    unknown = sorted(set(section) - {"hyperparameters", *SECTION_FIELDS[kind]})
    if unknown:
        raise ApiError(f"Unrecognized request argument supplied: method.{kind}.{unknown[0]}",
                       param=f"method.{kind}.{unknown[0]}")
    fields = {name: section[name] for name in SECTION_FIELDS[kind] if section.get(name) is not None}
    if kind == "reinforcement" and "grader" not in fields:
        raise ApiError("Missing required parameter: 'method.reinforcement.grader' (the grader whose score is the "
                       "reward).", param="method.reinforcement.grader", code="missing_required_parameter")
    for name, value in fields.items():
        if not isinstance(value, dict):
            raise ApiError(f"'method.{kind}.{name}' must be an object.", param=f"method.{kind}.{name}")
    nested = section.get("hyperparameters")
    legacy = body.get("hyperparameters")
    if nested is not None and legacy is not None:
        raise ApiError("Give hyperparameters once: either under method.{kind}.hyperparameters or in the "
                       "deprecated top-level hyperparameters.".replace("{kind}", kind), param="hyperparameters")
    if nested is not None:
        return kind, _object(nested, f"method.{kind}.hyperparameters"), f"method.{kind}.hyperparameters", fields
    return kind, _object(legacy, "hyperparameters"), "hyperparameters", fields


def _integrations(value):
    """OpenAI's list of integrations → JobSpec's `integrations` object, with a param per spec field."""
    if value is None:
        return {}, {}
    if not isinstance(value, list):
        raise ApiError("'integrations' must be a list.", param="integrations")
    if len(value) > 5:
        raise ApiError("At most 5 integrations may be given.", param="integrations")
    result, params = {}, {}
    for i, item in enumerate(value):
        where = f"integrations[{i}]"
        if not isinstance(item, dict):
            raise ApiError(f"'{where}' must be an object.", param=where)
        kind = item.get("type")
        if kind not in INTEGRATIONS:
            raise ApiError(f"Unsupported integration type {kind!r}: use one of {', '.join(INTEGRATIONS)}.",
                           param=f"{where}.type")
        unknown = sorted(set(item) - {"type", kind})
        if unknown:
            raise ApiError(f"Unrecognized request argument supplied: {where}.{unknown[0]}",
                           param=f"{where}.{unknown[0]}")
        if kind in result:
            raise ApiError(f"Only one {kind} integration may be given.", param=where)
        result[kind] = _object(item.get(kind), f"{where}.{kind}")
        params[f"integrations.{kind}"] = f"{where}.{kind}"
    return result, params


def spec_from_request(body):
    """Return (JobSpec dict, metadata as sent, {spec field: request field}) or raise ApiError naming the
    field."""
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise ApiError(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    for name in ("model", "training_file"):
        if body.get(name) in (None, ""):
            raise ApiError(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        if not isinstance(body[name], str):
            raise ApiError(f"'{name}' must be a string.", param=name)
    for name in ("validation_file", "suffix"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(f"'{name}' must be a string.", param=name)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError("'seed' must be an integer from 0 to 2147483647.", param="seed")

    kind, hyperparameters, hp_param, section_fields = _method(body)
    allowed = hyperparameters_for(kind)
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ApiError(f"Unrecognized hyperparameter {unknown[0]!r} for the {kind} method; "
                       f"allowed: {', '.join(allowed)}.", param=f"{hp_param}.{unknown[0]}")
    integrations, integration_params = _integrations(body.get("integrations"))
    extension = _object(body.get("attune"), "attune")
    known_extension = extension_fields(kind)
    unknown = sorted(set(extension) - set(known_extension))
    if unknown:
        where = (f"; it is a hyperparameter of the {kind} method: give it under method.{kind}.hyperparameters"
                 if unknown[0] in allowed else "")
        raise ApiError(f"Unrecognized Attune setting {unknown[0]!r} for the {kind} method{where}; the attune "
                       f"object takes {', '.join(known_extension)}.", param=f"attune.{unknown[0]}")

    spec = {"model": body["model"], "training_file": body["training_file"], "method": kind}
    if body.get("validation_file"):
        spec["validation_file"] = body["validation_file"]
    if body.get("suffix") is not None:
        spec["suffix"] = body["suffix"]
    if seed is not None:
        spec["seed"] = seed  # else create_job draws one, as OpenAI does
    for name in allowed:
        spec[name] = hyperparameters.get(name, AUTO)
    if integrations:
        spec["integrations"] = integrations
    spec.update(section_fields)
    spec.update(extension)

    params = {name: f"method.{kind}.{name}" for name in SECTION_FIELDS[kind]}
    params.update({name: f"{hp_param}.{name}" for name in allowed})
    params.update({name: f"attune.{name}" for name in extension})
    params.update(integration_params)
    errors = spec_errors(spec)
    if errors:
        field, message = errors[0]
        param = request_param(field, params)
        raise ApiError(f"Invalid value for '{param}': {message}.", param=param, code="invalid_value")
    return spec, body.get("metadata"), params


def request_param(field, params):
    """The request field a JobSpec field came from (`n_epochs` → `hyperparameters.n_epochs`)."""
    for spec_prefix, request_prefix in sorted(params.items(), key=lambda p: -len(p[0])):
        if field == spec_prefix or field.startswith(spec_prefix + "."):
            return request_prefix + field[len(spec_prefix):]
    return field

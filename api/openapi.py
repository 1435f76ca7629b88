"""The OpenAPI 3.1 description of /v1, served at /v1/openapi.json.

Written by hand after the routes in api/urls.py (tests check that every
route is described and that schemathesis finds no server error); the
`attune` extension object is generated from JobSpec, the one definition of a
job, so a new engine setting appears here by itself.
"""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from api.errors import error_response
from api.objects import CHECKPOINT_METRICS
from training.engine.spec import (
    INTEGRATIONS,
    METHODS,
    JobSpec,
    extension_fields,
    form_fields,
    hyperparameters_for,
)
from training.sweeps import MAX_FIELDS, SWEEPABLE

ERROR_CODES = {"400": "Bad request: the `param` names the field.", "401": "Missing, unknown or revoked API key.",
               "403": "The key's owner may not use this endpoint.", "404": "No such object.",
               "405": "Method not allowed.", "429": "Too many requests at once: wait for some to end."}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes):
    return {code: {"description": ERROR_CODES[code], "content": {"application/json": {"schema": _ref("Error")}}}
            for code in ("401",) + codes}


def _path_param(name, description):
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query(name, schema, description):
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


AFTER = _query("after", {"type": "string"}, "Id of the last object of the previous page.")
FILE_ID = _path_param("file_id", "A file id, `file-…`.")
JOB_ID = _path_param("fine_tuning_job_id", "A job id, `ftjob-…`.")


def _limit(default, maximum):
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
                  f"Page size (1–{maximum}).")


def _list(item, with_ids=False):
    properties = {"object": {"const": "list"}, "data": {"type": "array", "items": _ref(item)},
                  "has_more": {"type": "boolean"}}
    if with_ids:
        properties["first_id"] = {"type": ["string", "null"]}
        properties["last_id"] = {"type": ["string", "null"]}
    return {"type": "object", "required": list(properties), "properties": properties}


AUTO_INT = {"oneOf": [{"const": "auto"}, {"type": "integer"}]}
AUTO_NUMBER = {"oneOf": [{"const": "auto"}, {"type": "number"}]}


def _hyperparameters(method):
    """The hyperparameters object of `method`, from JobSpec's fields (their help and type)."""
    fields = {meta["name"]: meta for meta in form_fields()}
    def kind(meta):
        if meta["choices"]:
            return {"enum": list(meta["choices"])}
        return AUTO_INT if meta["type"] == "int" else AUTO_NUMBER

    properties = {name: {**kind(fields[name]), "description": fields[name]["help"]}
                  for name in hyperparameters_for(method)}
    return {"type": "object", "additionalProperties": False, "properties": properties}


PYDANTIC_EXTRAS = ("group", "methods", "openai", "min", "max", "auto", "title")


def _clean(schema):
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if k not in PYDANTIC_EXTRAS}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def attune_extension_schema():
    """Attune's own job settings, from JobSpec: adapter, LoRA and advanced fields."""
    properties = JobSpec.model_json_schema()["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Attune's extension: settings of a job that the OpenAI request has no place for. "
                       "Every key is optional and defaults as shown; the job object echoes them under the same "
                       "key.",
        "properties": {name: _clean(properties[name]) for name in extension_fields()},
    }


def _schemas():
    nullable_string = {"type": ["string", "null"]}
    nullable_int = {"type": ["integer", "null"]}
    wandb = {"type": "object", "required": ["project"], "properties": {
        "project": {"type": "string"}, "name": nullable_string, "entity": nullable_string,
        "tags": {"type": "array", "items": {"type": "string"}}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"], "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "param": nullable_string,
                "code": nullable_string}}}},
        "FileObject": {"type": "object", "required": ["id", "object", "bytes", "created_at", "filename", "purpose",
                                                      "status"], "properties": {
            "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer"},
            "created_at": {"type": "integer"}, "expires_at": nullable_int, "filename": {"type": "string"},
            "purpose": {"enum": ["fine-tune", "fine-tune-results"]},
            "status": {"enum": ["uploaded", "processed", "error"]}, "status_details": nullable_string}},
        "FileList": _list("FileObject", with_ids=True),
        "FileDeleted": {"type": "object", "required": ["id", "object", "deleted"], "properties": {
            "id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"type": "boolean"}}},
        "Hyperparameters": _hyperparameters("supervised"),
        "DpoHyperparameters": _hyperparameters("dpo"),
        "ReinforcementHyperparameters": _hyperparameters("reinforcement"),
        "Method": {"type": "object", "properties": {
            "type": {"enum": list(METHODS), "default": "supervised"},
            "supervised": {"type": "object", "properties": {"hyperparameters": _ref("Hyperparameters")}},
            "dpo": {"type": "object", "properties": {"hyperparameters": _ref("DpoHyperparameters")}},
            "reinforcement": {"type": "object", "required": ["grader"], "properties": {
                "grader": {"type": "object", "description": "The reward: a string_check, text_similarity, "
                                                            "python, score_model or multi grader."},
                "response_format": {"type": ["object", "null"], "description": "A json_schema response format: "
                                    "an answer that does not match it scores 0 (a parse error)."},
                "hyperparameters": _ref("ReinforcementHyperparameters")}}}},
        "Integration": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": list(INTEGRATIONS),
                     "description": "wandb as in OpenAI's API; mlflow and tensorboard are Attune's."},
            "wandb": wandb,
            "mlflow": {"type": "object", "properties": {"tracking_uri": {"type": "string"},
                                                        "experiment": {"type": "string"}}},
            "tensorboard": {"type": "object", "properties": {"log_dir": nullable_string}}}},
        "AttuneJobSettings": attune_extension_schema(),
        "CreateFineTuningJobRequest": {
            "type": "object", "required": ["model", "training_file"], "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "description": "A base model name (GET /v1/models)."},
                "training_file": {"type": "string", "description": "A processed fine-tune file id."},
                "validation_file": nullable_string,
                "suffix": {"type": ["string", "null"], "maxLength": 64},
                "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647},
                "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                "integrations": {"type": ["array", "null"], "maxItems": 5, "items": _ref("Integration")},
                "method": _ref("Method"),
                "hyperparameters": {**_ref("Hyperparameters"), "deprecated": True},
                "attune": _ref("AttuneJobSettings"),
            }},
        "FineTuningJob": {"type": "object", "required": [
            "id", "object", "created_at", "model", "organization_id", "status", "training_file", "validation_file",
            "hyperparameters", "method", "fine_tuned_model", "finished_at", "trained_tokens", "result_files",
            "error", "seed", "estimated_finish", "integrations", "metadata"], "properties": {
            "id": {"type": "string"}, "object": {"const": "fine_tuning.job"}, "created_at": {"type": "integer"},
            "model": {"type": "string"}, "organization_id": {"type": "string"},
            "status": {"enum": ["validating_files", "queued", "running", "paused", "succeeded", "failed",
                                "cancelled"]},
            "training_file": {"type": "string"}, "validation_file": nullable_string,
            "hyperparameters": _ref("DpoHyperparameters"), "method": {"type": "object"},
            "fine_tuned_model": nullable_string, "finished_at": nullable_int, "trained_tokens": nullable_int,
            "result_files": {"type": "array", "items": {"type": "string"}},
            "error": {"type": "object", "description": "{} on healthy jobs, else {code, message, param}."},
            "seed": {"type": "integer"}, "estimated_finish": nullable_int,
            "integrations": {"type": ["array", "null"]},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "user_provided_suffix": nullable_string, "usage_metrics": {"type": "null"},
            "shared_with_openai": {"type": "boolean"},
            "attune": {"type": "object", "description": "The Attune settings of the job (AttuneJobSettings)."}}},
        "FineTuningJobList": _list("FineTuningJob"),
        "FineTuningJobEvent": {"type": "object", "required": ["id", "object", "created_at", "level", "message"],
                               "properties": {
            "id": {"type": "string"}, "object": {"const": "fine_tuning.job.event"},
            "created_at": {"type": "integer"}, "level": {"enum": ["info", "warn", "error"]},
            "message": {"type": "string"}, "type": {"enum": ["message", "metrics"]},
            "data": {"type": ["object", "null"]}}},
        "FineTuningJobEventList": _list("FineTuningJobEvent"),
        "FineTuningJobCheckpoint": {"type": "object", "required": [
            "id", "object", "created_at", "fine_tuned_model_checkpoint", "fine_tuning_job_id", "step_number",
            "metrics"], "properties": {
            "id": {"type": "string"}, "object": {"const": "fine_tuning.job.checkpoint"},
            "created_at": {"type": "integer"}, "fine_tuned_model_checkpoint": {"type": "string"},
            "fine_tuning_job_id": {"type": "string"}, "step_number": {"type": "integer"},
            "metrics": {"type": "object", "properties": {k: {"type": ["number", "null"]}
                                                         for k in CHECKPOINT_METRICS}}}},
        "FineTuningJobCheckpointList": _list("FineTuningJobCheckpoint", with_ids=True),
        "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
            "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
            "owned_by": {"type": "string"}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}}},
        "ModelDeleted": {"type": "object", "required": ["id", "object", "deleted"], "properties": {
            "id": {"type": "string"}, "object": {"const": "model"}, "deleted": {"type": "boolean"}}},
        "ChatMessage": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {
                "type": "object", "required": ["type", "text"],
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}}},
        "CreateChatCompletionRequest": {
            "type": "object", "required": ["model", "messages"], "properties": {
                "model": {"type": "string", "description": "A base model, an ft: model or a checkpoint name."},
                "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
                "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 4096},
                "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 4096},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
                "seed": {"type": ["integer", "null"]},
                "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                   {"type": "null"}]},
                "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 1},
                "stream": {"type": ["boolean", "null"]},
                "stream_options": {"type": ["object", "null"]},
            }},
        "ChatCompletion": {"type": "object", "required": ["id", "object", "created", "model", "choices"],
                           "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "choices": {"type": "array"}, "usage": {"type": "object"}}},
    }


EVAL_ID = _path_param("eval_id", "An eval id, `eval_…`.")
RUN_ID = _path_param("run_id", "A run id, `evalrun_…`.")
OBJECT = {"type": "object"}
TEXT = {"type": "string", "maxLength": 200}
MESSAGES = {"type": "array", "minItems": 1, "maxItems": 4, "items": {
    "type": "object", "required": ["role", "content"], "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]}, "content": TEXT}}}


def _grader(kind, required, properties):
    return {"type": "object", "required": ["type", "name", *required], "properties": {
        "type": {"const": kind}, "name": {"type": "string", "maxLength": 64}, **properties}}


def eval_schemas():
    """The grader, eval and run request bodies, as OpenAI's Evals API and graders routes take them."""
    graders = [
        _grader("string_check", ["input", "reference", "operation"], {
            "input": TEXT, "reference": TEXT, "operation": {"enum": ["eq", "ne", "like", "ilike"]}}),
        _grader("text_similarity", ["input", "reference", "evaluation_metric"], {
            "input": TEXT, "reference": TEXT, "pass_threshold": {"type": "number"},
            "evaluation_metric": {"enum": ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                                           "rouge_4", "rouge_5", "rouge_l", "cosine"]}}),
        _grader("python", ["source"], {"source": {"type": "string", "maxLength": 400},
                                       "pass_threshold": {"type": "number"}}),
        _grader("score_model", ["model", "input"], {"model": TEXT, "input": MESSAGES,
                                                    "range": {"type": "array", "items": {"type": "number"}},
                                                    "pass_threshold": {"type": "number"}}),
        _grader("label_model", ["model", "input", "labels", "passing_labels"], {
            "model": TEXT, "input": MESSAGES, "labels": {"type": "array", "items": TEXT},
            "passing_labels": {"type": "array", "items": TEXT}}),
    ]
    grader = {"oneOf": graders}
    source = {"oneOf": [
        {"type": "object", "required": ["type", "content"], "properties": {
            "type": {"const": "file_content"}, "content": {"type": "array", "maxItems": 4, "items": {
                "type": "object", "required": ["item"], "properties": {"item": OBJECT, "sample": OBJECT}}}}},
        {"type": "object", "required": ["type", "id"], "properties": {"type": {"const": "file_id"}, "id": TEXT}}]}
    return {
        "Grader": grader,
        "CreateEvalRequest": {"type": "object", "required": ["data_source_config", "testing_criteria"], "properties": {
            "name": TEXT, "metadata": {"type": "object", "additionalProperties": TEXT},
            "data_source_config": {"type": "object", "required": ["type", "item_schema"], "properties": {
                "type": {"const": "custom"}, "item_schema": OBJECT, "include_sample_schema": {"type": "boolean"}}},
            "testing_criteria": {"type": "array", "minItems": 1, "maxItems": 3, "items": grader},
            "attune": {"type": "object", "description": "Attune's: `data_source`, the prompts run on each epoch "
                                                         "checkpoint of a job that names this eval."}}},
        "CreateEvalRunRequest": {"type": "object", "required": ["data_source"], "properties": {
            "name": TEXT, "metadata": {"type": "object", "additionalProperties": TEXT},
            "data_source": {"oneOf": [
                {"type": "object", "required": ["type", "source"], "properties": {
                    "type": {"const": "jsonl"}, "source": source}},
                {"type": "object", "required": ["type", "model", "source", "input_messages"], "properties": {
                    "type": {"const": "completions"}, "model": TEXT, "source": source,
                    "input_messages": {"oneOf": [
                        {"type": "object", "required": ["type", "template"], "properties": {
                            "type": {"const": "template"}, "template": MESSAGES}},
                        {"type": "object", "required": ["type", "item_reference"], "properties": {
                            "type": {"const": "item_reference"}, "item_reference": TEXT}}]},
                    "sampling_params": {"type": "object", "properties": {
                        "max_completion_tokens": {"type": "integer"}, "temperature": {"type": "number"},
                        "top_p": {"type": "number"}, "seed": {"type": "integer"}}}}}]}}},
        "RunGraderRequest": {"type": "object", "required": ["grader", "model_sample"], "properties": {
            "grader": grader, "model_sample": {"type": "string", "maxLength": 400}, "item": OBJECT}},
        "ValidateGraderRequest": {"type": "object", "required": ["grader"], "properties": {"grader": grader}},
    }


def _eval_paths(paths):
    """The Evals and graders routes: OpenAI's shapes (the SDK's `client.evals`), objects left open here."""
    def body(name):
        return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}

    update = {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
        "name": TEXT, "metadata": {"type": "object", "additionalProperties": TEXT}}}}}}
    ok = _json(OBJECT)
    order = _query("order", {"enum": ["asc", "desc"]}, "By creation time.")
    paths["/fine_tuning/alpha/graders/validate"] = {"post": {
        "operationId": "validateGrader", "summary": "Check a grader before anything runs: `{grader}`.",
        "requestBody": body("ValidateGraderRequest"), "responses": {"200": ok, **_errors("400", "403")}}}
    paths["/fine_tuning/alpha/graders/run"] = {"post": {
        "operationId": "runGrader", "summary": "Grade one sample: `{grader, model_sample, item}` → reward.",
        "requestBody": body("RunGraderRequest"), "responses": {"200": ok, **_errors("400", "403")}}}
    paths["/evals"] = {
        "get": {"operationId": "listEvals", "parameters": [AFTER, _limit(20, 100), order,
                                                           _query("order_by", {"enum": ["created_at", "updated_at"]},
                                                                  "The time to order by.")],
                "responses": {"200": ok, **_errors("400", "403")}},
        "post": {"operationId": "createEval", "summary": "An eval: data_source_config and testing_criteria.",
                 "requestBody": body("CreateEvalRequest"), "responses": {"200": ok, **_errors("400", "403")}}}
    paths["/evals/{eval_id}"] = {
        "parameters": [EVAL_ID],
        "get": {"operationId": "getEval", "responses": {"200": ok, **_errors("403", "404")}},
        "post": {"operationId": "updateEval", "summary": "Change its name or metadata.", "requestBody": update,
                 "responses": {"200": ok, **_errors("400", "403", "404")}},
        "delete": {"operationId": "deleteEval", "responses": {"200": ok, **_errors("403", "404")}}}
    paths["/evals/{eval_id}/runs"] = {
        "parameters": [EVAL_ID],
        "get": {"operationId": "listEvalRuns",
                "parameters": [AFTER, _limit(20, 100), order, _query("status", {"enum": [
                    "queued", "in_progress", "completed", "canceled", "failed"]}, "Only runs in this status.")],
                "responses": {"200": ok, **_errors("400", "403", "404")}},
        "post": {"operationId": "createEvalRun", "summary": "Queue a run: a completions or jsonl data source.",
                 "requestBody": body("CreateEvalRunRequest"), "responses": {"200": ok, **_errors("400", "403", "404", "429")}}}
    paths["/evals/{eval_id}/runs/{run_id}"] = {
        "parameters": [EVAL_ID, RUN_ID],
        "get": {"operationId": "getEvalRun", "responses": {"200": ok, **_errors("403", "404")}},
        "post": {"operationId": "cancelEvalRunByPost", "summary": "Cancel the run.",
                 "responses": {"200": ok, **_errors("400", "403", "404")}},
        "delete": {"operationId": "deleteEvalRun", "responses": {"200": ok, **_errors("403", "404")}}}
    paths["/evals/{eval_id}/runs/{run_id}/cancel"] = {
        "parameters": [EVAL_ID, RUN_ID],
        "post": {"operationId": "cancelEvalRun", "responses": {"200": ok, **_errors("400", "403", "404")}}}
    paths["/evals/{eval_id}/runs/{run_id}/output_items"] = {
        "parameters": [EVAL_ID, RUN_ID],
        "get": {"operationId": "listEvalRunOutputItems",
                "parameters": [AFTER, _limit(20, 100), order,
                               _query("status", {"enum": ["pass", "fail"]}, "Only passed or failed items.")],
                "responses": {"200": ok, **_errors("400", "403", "404")}}}
    paths["/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}"] = {
        "parameters": [EVAL_ID, RUN_ID, _path_param("output_item_id", "An output item id, `outputitem_…`.")],
        "get": {"operationId": "getEvalRunOutputItem", "responses": {"200": ok, **_errors("403", "404")}}}


SWEEP_ID = _path_param("sweep_id", "A sweep id, `sweep-…`.")


def sweep_schemas(job_request):
    """Attune's sweeps: the request is a job request (`job_request`) plus `sweep`; the sweepable fields come from
    training/sweeps.py (JobSpec's numbers)."""
    values = {"oneOf": [{"type": "number"}, {"const": "auto"}]}
    definition = {
        "type": "object", "required": ["fields"], "additionalProperties": False,
        "description": "grid: every combination of the lists; random: `n` draws within the ranges from `seed` "
                       "(learning_rate_multiplier log-uniformly, integers as integers). At most "
                       "ATTUNE_SWEEP_MAX_JOBS jobs (12 by default).",
        "properties": {
            "mode": {"enum": ["grid", "random"], "default": "grid"},
            "fields": {"type": "object", "minProperties": 1, "maxProperties": MAX_FIELDS,
                       "propertyNames": {"enum": list(SWEEPABLE)},
                       "additionalProperties": {"oneOf": [
                           {"type": "array", "minItems": 1, "items": values},
                           {"type": "object", "required": ["min", "max"], "additionalProperties": False,
                            "properties": {"min": {"type": "number"}, "max": {"type": "number"}}}]}},
            "n": {"type": ["integer", "null"], "minimum": 1, "description": "random: the number of draws."},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647,
                     "description": "random: the draws' seed; drawn and stored when left out."}}}
    request = {**job_request, "required": [*job_request["required"], "sweep"],
               "properties": {**job_request["properties"], "sweep": _ref("SweepDefinition")}}
    ranked = {"type": "object", "required": ["job", "values", "metric_value", "checkpoint"], "properties": {
        "job": {"type": "string"}, "values": {"type": "object"}, "metric_value": {"type": ["number", "null"]},
        "checkpoint": {"type": ["string", "null"]}}}
    sweep = {"type": "object", "required": ["id", "object", "created_at", "status", "job_counts", "mode", "fields",
                                            "n", "seed", "metric", "ranking", "jobs"], "properties": {
        "id": {"type": "string"}, "object": {"const": "attune.sweep"}, "created_at": {"type": "integer"},
        "status": {"enum": ["active", "ended"]},
        "job_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "mode": {"enum": ["grid", "random"]}, "fields": {"type": "object"}, "n": {"type": "integer"},
        "seed": {"type": ["integer", "null"]},
        "metric": {"type": "object", "required": ["name", "higher_is_better"], "properties": {
            "name": {"type": "string"}, "higher_is_better": {"type": "boolean"}}},
        "ranking": {"type": "array", "items": ranked, "description": "The jobs, best first."},
        "jobs": {"type": "array", "items": _ref("FineTuningJob")}}}
    return {"SweepDefinition": definition, "CreateAttuneSweepRequest": request, "AttuneSweep": sweep,
            "AttuneSweepList": _list("AttuneSweep")}


def _sweep_paths(paths):
    paths["/attune/sweeps"] = {
        "get": {"operationId": "listAttuneSweeps", "summary": "Sweeps, newest first.",
                "parameters": [AFTER, _limit(20, 100)],
                "responses": {"200": _json(_ref("AttuneSweepList")), **_errors("400", "403")}},
        "post": {"operationId": "createAttuneSweep",
                 "summary": "Several jobs from one job request, with up to three fields swept; all or none are made.",
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": _ref("CreateAttuneSweepRequest")}}},
                 "responses": {"200": _json(_ref("AttuneSweep")), **_errors("400", "403")}}}
    paths["/attune/sweeps/{sweep_id}"] = {
        "parameters": [SWEEP_ID],
        "get": {"operationId": "retrieveAttuneSweep",
                "responses": {"200": _json(_ref("AttuneSweep")), **_errors("403", "404")}}}
    paths["/attune/sweeps/{sweep_id}/cancel"] = {
        "parameters": [SWEEP_ID],
        "post": {"operationId": "cancelAttuneSweep", "summary": "Cancel every job of the sweep that has not ended.",
                 "responses": {"200": _json(_ref("AttuneSweep")), **_errors("403", "404")}}}


def build():
    paths = {
        "/files": {
            "get": {"operationId": "listFiles", "summary": "List files, newest first by default.",
                    "parameters": [AFTER, _limit(10000, 10000),
                                   _query("order", {"enum": ["asc", "desc"]}, "By created_at."),
                                   _query("purpose", {"type": "string"}, "Only files of this purpose.")],
                    "responses": {"200": _json(_ref("FileList")), **_errors("400")}},
            "post": {"operationId": "createFile", "summary": "Upload a JSONL file: training data (purpose fine-tune) or eval items (purpose evals).",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["file", "purpose"], "properties": {
                             "file": {"type": "string", "format": "binary"},
                             "purpose": {"enum": ["fine-tune", "evals"]}}}}}},
                     "responses": {"200": _json(_ref("FileObject")), **_errors("400")}}},
        "/files/{file_id}": {
            "parameters": [FILE_ID],
            "get": {"operationId": "retrieveFile", "responses": {"200": _json(_ref("FileObject")), **_errors("404")}},
            "delete": {"operationId": "deleteFile", "summary": "Delete a file no job uses.",
                       "responses": {"200": _json(_ref("FileDeleted")), **_errors("400", "404")}}},
        "/files/{file_id}/content": {
            "parameters": [FILE_ID],
            "get": {"operationId": "downloadFile",
                    "summary": "The file's bytes; fine-tune-results CSVs come base64-encoded, as OpenAI's do.",
                    "responses": {"200": {"description": "The content.", "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors("404")}}},
        "/fine_tuning/jobs": {
            "get": {"operationId": "listFineTuningJobs", "summary": "Jobs, newest first.",
                    "parameters": [AFTER, _limit(20, 1000),
                                   {"name": "metadata", "in": "query", "required": False, "style": "deepObject",
                                    "explode": True, "description": "Only jobs whose metadata holds these pairs.",
                                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}],
                    "responses": {"200": _json(_ref("FineTuningJobList")), **_errors("400", "403")}},
            "post": {"operationId": "createFineTuningJob",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("CreateFineTuningJobRequest")}}},
                     "responses": {"200": _json(_ref("FineTuningJob")), **_errors("400", "403")}}},
        "/fine_tuning/jobs/{fine_tuning_job_id}": {
            "parameters": [JOB_ID],
            "get": {"operationId": "retrieveFineTuningJob",
                    "responses": {"200": _json(_ref("FineTuningJob")), **_errors("403", "404")}}},
    }
    for action, summary in (("cancel", "Cancel a job that has not finished."),
                            ("pause", "Pause a running job (it saves its state)."),
                            ("resume", "Resume a paused job from where it stopped.")):
        paths[f"/fine_tuning/jobs/{{fine_tuning_job_id}}/{action}"] = {
            "parameters": [JOB_ID],
            "post": {"operationId": f"{action}FineTuningJob", "summary": summary,
                     "responses": {"200": _json(_ref("FineTuningJob")), **_errors("400", "403", "404")}}}
    paths["/fine_tuning/jobs/{fine_tuning_job_id}/events"] = {
        "parameters": [JOB_ID],
        "get": {"operationId": "listFineTuningEvents", "summary": "Events, newest first.",
                "parameters": [AFTER, _limit(20, 1000)],
                "responses": {"200": _json(_ref("FineTuningJobEventList")), **_errors("400", "403", "404")}}}
    paths["/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"] = {
        "parameters": [JOB_ID],
        "get": {"operationId": "listFineTuningJobCheckpoints", "summary": "Epoch checkpoints, highest step first.",
                "parameters": [AFTER, _limit(10, 1000)],
                "responses": {"200": _json(_ref("FineTuningJobCheckpointList")), **_errors("400", "403", "404")}}}
    paths["/models"] = {"get": {"operationId": "listModels",
                                "summary": "Base models, fine-tuned models and checkpoints.",
                                "responses": {"200": _json(_ref("ModelList")), **_errors("403")}}}
    paths["/models/{model}"] = {
        "parameters": [{**_path_param("model", "A model name; `ft:` names contain ':'."), "example": "attune-tiny"}],
        "get": {"operationId": "retrieveModel", "responses": {"200": _json(_ref("Model")), **_errors("404")}},
        "delete": {"operationId": "deleteModel", "summary": "Delete a fine-tuned model or checkpoint.",
                   "responses": {"200": _json(_ref("ModelDeleted")), **_errors("400", "403", "404")}}}
    paths["/chat/completions"] = {"post": {
        "operationId": "createChatCompletion",
        "summary": "Chat with a base model, a fine-tuned model or a checkpoint; `stream: true` answers with "
                   "server-sent events ending in `data: [DONE]`. A running reinforcement job's engine asks its "
                   "grader's judges here with the job's judge token instead of an API key.",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("CreateChatCompletionRequest"),
            "example": {"model": "attune-tiny", "messages": [{"role": "user", "content": "where is my parcel?"}],
                        "max_tokens": 8, "temperature": 0}}}},
        "responses": {"200": {"description": "A completion, or an event stream when stream is true.", "content": {
            "application/json": {"schema": _ref("ChatCompletion")},
            "text/event-stream": {"schema": {"type": "string"}}}}, **_errors("400", "403", "404")}}}
    _eval_paths(paths)
    _sweep_paths(paths)
    schemas = _schemas()
    schemas.update(sweep_schemas(schemas["CreateFineTuningJobRequest"]))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Attune API", "version": "1",
                 "description": "The OpenAI-compatible API of Attune: files, fine-tuning jobs, models and chat "
                                "completions, and Attune's sweeps (/attune/sweeps). Point the `openai` SDK's "
                                "base_url at /v1 and use an API key from /settings/api-keys/. Attune's own job "
                                "settings go under the `attune` key of a job request."},
        "servers": [{"url": "/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {"schemas": {**schemas, **eval_schemas()}, "securitySchemes": {"bearerAuth": {"type": "http",
                                                                                 "scheme": "bearer"}}},
    }


@csrf_exempt
def schema_view(request):
    """Public, like any OpenAPI description: it holds no data."""
    if request.method not in ("GET", "HEAD"):
        return error_response(f"Method {request.method} is not allowed on {request.path}; use GET.", status=405,
                              code="method_not_allowed")
    return JsonResponse(build())

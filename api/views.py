"""The OpenAI-compatible API under /v1: files,
fine-tuning jobs with their events and checkpoints, models, chat completions.

Every view goes through `api_view` (bearer key, method, role, error
envelope). Lists use exact cursors: `after` is the id of the last item seen,
and the page after the last one is empty, as old SDKs expect.
"""

import base64
import json
import shutil
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import transaction
from django.db.models import Q, TextField
from django.db.models.deletion import ProtectedError
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from api import objects
from api.auth import RATERS, api_view
from api.catalog import find_model, list_models, rater_models
from api.errors import ApiError, error_response, not_found
from api.job_requests import request_param, spec_from_request
from config.streaming import FileStream
from training.datasets import store_upload
from training.jobs import create_job
from training.models import DataFile, FineTuningJob, JobError

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


# --- helpers -------------------------------------------------------------------

def json_body(request):
    """The request's JSON object, or a 400 the SDK shows as BadRequestError."""
    if b"\\u0000" in request.body:
        raise ApiError("NUL characters (\\u0000) are not allowed in the request body.", code="invalid_value")
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError("We could not parse the JSON body of your request. The API expects a JSON payload "
                       "(Content-Type: application/json), but what was sent was not valid JSON.",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    return body


def _limit(request, default, maximum):
    raw = request.GET.get("limit")
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= maximum:
        raise ApiError(f"Invalid 'limit': expected an integer from 1 to {maximum}, got {raw!r}.", param="limit")
    return value


def _after(obj, ordering):
    """Rows strictly after `obj` in `ordering`, a list of (field, descending) ending with a unique field."""
    clauses, equal = [], {}
    for field, descending in ordering:
        value = getattr(obj, field)
        clauses.append(Q(**equal, **{f"{field}__{'lt' if descending else 'gt'}": value}))
        equal[field] = value
    return reduce(or_, clauses)


def cursor_page(request, queryset, ordering, serialize, *, default_limit, max_limit, with_ids=False):
    """One page of `queryset` after the `after` cursor (a public id), as OpenAI's list object:
    `object` "list", `data`, `has_more`, and `first_id`/`last_id` where `with_ids`."""
    limit = _limit(request, default_limit, max_limit)
    queryset = queryset.order_by(*[("-" if desc else "") + field for field, desc in ordering])
    after = request.GET.get("after")
    if after:
        cursor = queryset.filter(public_id=after).first()
        if cursor is None:
            raise ApiError(f"Invalid 'after': no object with id {after!r} in this list.", param="after")
        queryset = queryset.filter(_after(cursor, ordering))
    rows = list(queryset[:limit + 1])
    data = [serialize(row) for row in rows[:limit]]
    page = {"object": "list", "data": data, "has_more": len(rows) > limit}
    if with_ids:
        page["first_id"] = data[0]["id"] if data else None
        page["last_id"] = data[-1]["id"] if data else None
    return JsonResponse(page)


def _get_file(request, file_id):
    data_file = DataFile.objects.filter(public_id=file_id).first()
    if data_file is None:
        raise not_found("File", file_id)
    return data_file


def _get_job(request, job_id):
    job = (FineTuningJob.objects.select_related("base_model", "training_file", "validation_file")
           .filter(public_id=job_id).first())
    if job is None:
        raise not_found("FineTuningJob", job_id, param="fine_tuning_job_id")
    return job


def _remove_stored_file(data_file):
    """Delete a file's content from disk; only ever inside the files folder."""
    path = data_file.full_path.resolve()
    files_dir = settings.FILES_DIR.resolve()
    if not path.is_relative_to(files_dir):
        return
    folder = path.parent
    if folder != files_dir and folder.name == data_file.public_id:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- errors for routes that do not exist ------------------------------------------

@csrf_exempt
def unknown_route(request, rest=""):
    return error_response(f"Invalid URL ({request.method} {request.path}): Attune has no such endpoint.",
                          status=404, code="unknown_url")


# --- files -------------------------------------------------------------------------

def _json_error_message(data_file, error):
    """OpenAI's upload-time message for a line that is not a JSON object."""
    line = error["line"]
    start = ""
    with open(data_file.full_path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == line:
                start = raw[:40].decode("utf-8", errors="replace").strip()
                break
    return (f"Expected file to have JSONL format, where every line is a valid JSON dictionary. "
            f"Line {line} is not a dictionary. (HINT: line starts with: \"{start}...\")")


@api_view("GET", "POST")
def files(request):
    if request.method == "POST":
        return upload_file(request)
    queryset = DataFile.objects.all()
    purpose = request.GET.get("purpose")
    if purpose:
        queryset = queryset.filter(purpose=purpose)
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(f"Invalid 'order': use asc or desc, not {order!r}.", param="order")
    descending = order == "desc"
    return cursor_page(request, queryset, [("created_at", descending), ("id", descending)], objects.file_object,
                       default_limit=10000, max_limit=10000, with_ids=True)


def upload_file(request):
    purpose = request.POST.get("purpose")
    if not purpose:
        raise ApiError("Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter")
    if purpose not in ("fine-tune", "evals"):
        detail = "a valid OpenAI purpose, but " if purpose in UPLOAD_PURPOSES else ""
        raise ApiError(f"Invalid purpose {purpose!r}: {detail}Attune stores only 'fine-tune' and 'evals' files.",
                       param="purpose", code="invalid_purpose")
    extra = sorted(k for k in request.POST if k not in ("purpose",))
    if extra:
        raise ApiError(f"Unsupported upload parameter {extra[0]!r}: Attune files never expire and take only "
                       "'file' and 'purpose'.", param=extra[0])
    upload = request.FILES.get("file")
    if upload is None:
        raise ApiError("Missing required parameter: 'file' (send it as multipart/form-data).", param="file",
                       code="missing_required_parameter")
    filename = (upload.name or "").replace("\x00", "") or "upload.jsonl"
    data_file, report = store_upload(upload.chunks(), filename, owner=request.user, purpose=purpose)
    json_error = report.first_json_error()
    too_large = next((e for e in report.errors if e["code"] == "file_too_large"), None)
    if json_error or too_large:
        # Refused at once: the file does not stay behind as an object the client never learned of.
        message = _json_error_message(data_file, json_error) if json_error else too_large["message"]
        _remove_stored_file(data_file)
        data_file.delete()
        if too_large:
            raise ApiError(message, param="file", code="file_too_large")
        raise ApiError(message)
    return JsonResponse(objects.file_object(data_file))


@api_view("GET", "DELETE")
def file_detail(request, file_id):
    data_file = _get_file(request, file_id)
    if request.method == "GET":
        return JsonResponse(objects.file_object(data_file))
    jobs = list(data_file.jobs_using().values_list("public_id", flat=True)[:5])
    if jobs:
        raise ApiError(f"File {file_id} is used by fine-tuning job(s) {', '.join(jobs)} and cannot be deleted.",
                       param="file_id", code="file_in_use")
    try:
        with transaction.atomic():
            data_file.delete()
    except ProtectedError:
        raise ApiError(f"File {file_id} is used by a fine-tuning job and cannot be deleted.", param="file_id",
                       code="file_in_use") from None
    _remove_stored_file(data_file)
    return JsonResponse({"id": file_id, "object": "file", "deleted": True})


@api_view("GET")
def file_content(request, file_id):
    data_file = _get_file(request, file_id)
    if not data_file.full_path.is_file():
        raise ApiError(f"The content of {file_id} is no longer on disk.", status=404, param="file_id")
    if data_file.purpose == "fine-tune-results":
        # The OpenAI API returns result CSVs base64-encoded; clients decode them.
        response = HttpResponse(base64.b64encode(data_file.full_path.read_bytes()),
                                content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{data_file.filename}"'
        return response
    # Training files can be large: streamed from disk, never read whole.
    return FileStream(open(data_file.full_path, "rb"), as_attachment=True, filename=data_file.filename,
                      content_type="application/octet-stream")


# --- fine-tuning jobs ------------------------------------------------------------

def _metadata_filters(request):
    filters = {}
    for key, value in request.GET.items():
        if key.startswith("metadata[") and key.endswith("]"):
            filters[key[len("metadata["):-1]] = value
    return filters


@api_view("GET", "POST")
def jobs(request):
    if request.method == "POST":
        return job_create(request)
    queryset = FineTuningJob.objects.select_related("base_model", "training_file", "validation_file")
    if request.GET.get("metadata") in ("null", ""):
        queryset = queryset.filter(Q(metadata__isnull=True) | Q(metadata={}))
    for i, (key, value) in enumerate(_metadata_filters(request).items()):
        # Cast: a bare key transform compares as JSON, and the value is text.
        text = Cast(KeyTextTransform(key, "metadata"), output_field=TextField())
        queryset = queryset.alias(**{f"_meta{i}": text}).filter(**{f"_meta{i}": value})
    return cursor_page(request, queryset, [("created_at", True), ("id", True)], objects.job_object,
                       default_limit=20, max_limit=1000)


def job_create(request):
    spec, metadata, params = spec_from_request(json_body(request))
    try:
        job = create_job(spec, request.user, metadata=metadata)
    except JobError as exc:
        raise request_error(exc, params) from None
    return JsonResponse(objects.job_object(job))


def request_error(exc, params):
    """The ApiError of a JobError, its param the request field the spec's field came from (`spec_from_request`'s
    `params`)."""
    param = request_param(exc.param or "", params) or None
    message = exc.message
    if exc.param and param != exc.param and message.startswith(exc.param):
        # A message that starts with the spec's field (a grader's `grader.operation …`) names the request's.
        message = param + message[len(exc.param):]
    return ApiError(message, param=param, code=exc.code)


@api_view("GET")
def job_detail(request, job_id):
    return JsonResponse(objects.job_object(_get_job(request, job_id)))


def _control(request, job_id, action):
    job = _get_job(request, job_id)
    try:
        getattr(job, action)(by=request.user)
    except JobError as exc:
        raise ApiError(exc.message, param=exc.param or "fine_tuning_job_id", code=exc.code) from None
    job.refresh_from_db()
    return JsonResponse(objects.job_object(job))


@api_view("POST")
def job_cancel(request, job_id):
    return _control(request, job_id, "cancel")


@api_view("POST")
def job_pause(request, job_id):
    return _control(request, job_id, "pause")


@api_view("POST")
def job_resume(request, job_id):
    return _control(request, job_id, "resume")


@api_view("GET")
def job_events(request, job_id):
    job = _get_job(request, job_id)
    return cursor_page(request, job.events.all(), [("id", True)], objects.event_object,
                       default_limit=20, max_limit=1000)


@api_view("GET")
def job_checkpoints(request, job_id):
    job = _get_job(request, job_id)
    checkpoints = job.checkpoints.select_related("job__base_model")
    best = job.best_checkpoint()
    return cursor_page(request, checkpoints, [("step", True), ("id", True)],
                       lambda checkpoint: objects.checkpoint_object(checkpoint, best),
                       default_limit=10, max_limit=1000, with_ids=True)


# --- models --------------------------------------------------------------------------

@api_view("GET", allow=RATERS)
def models(request):
    from config.access import is_admin

    data = list_models() if is_admin(request.user) else rater_models(request.user)
    return JsonResponse({"object": "list", "data": data})


@api_view("GET", "DELETE", allow=RATERS)
def model_detail(request, model_id):
    from config.access import is_admin

    if not is_admin(request.user):
        if request.method == "DELETE":
            raise ApiError("Only admins may delete models.", status=403, code="permission_denied")
        found = next((m for m in rater_models(request.user) if m["id"] == model_id), None)
        if found is None:
            raise ApiError(f"The model '{model_id}' does not exist.", status=404, param="model",
                           code="model_not_found")
        return JsonResponse(found)
    found = find_model(model_id)
    if found is None:
        raise ApiError(f"The model '{model_id}' does not exist.", status=404, param="model", code="model_not_found")
    if request.method == "GET":
        return JsonResponse(found.as_object())
    found.delete()
    return JsonResponse({"id": model_id, "object": "model", "deleted": True})




# --- chat completions ----------------------------------------------------------------

CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n",
               "stream", "stream_options", "stop", "user", "store", "metadata", "frequency_penalty",
               "presence_penalty"}


def _chat_request(body):
    """(model name, messages, SamplingParams, stream, include_usage) or ApiError naming the field."""
    from playground.inference import InferenceError, SamplingParams, validate_messages

    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        raise ApiError(f"Unsupported parameter {unknown[0]!r}: Attune's chat completions take "
                       f"{', '.join(sorted(CHAT_FIELDS))}.", param=unknown[0], code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise ApiError("Only n=1 is supported.", param="n", code="unsupported_value")
    if body.get("stop") not in (None, [], ""):
        raise ApiError("Stop strings are not supported by Attune's inference backends.", param="stop",
                       code="unsupported_value")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(f"{name} is not supported; leave it out or 0.", param=name, code="unsupported_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not isinstance(options.get("include_usage", False), bool)):
        raise ApiError("'stream_options' takes only include_usage, true or false.", param="stream_options")
    sampling = {"temperature": body.get("temperature"), "top_p": body.get("top_p"), "seed": body.get("seed"),
                "max_tokens": body.get("max_completion_tokens", body.get("max_tokens"))}
    # The field the request used for the length limit: the one an error names.
    asked = {"max_tokens": "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"}
    for name, value in sampling.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            name = asked.get(name, name)
            kind = {str: "a string", list: "an array", dict: "an object", bool: "a boolean"}.get(type(value), "")
            raise ApiError(f"Invalid type for '{name}': expected a number, but got {kind or 'something else'}.",
                           param=name, code="invalid_type")
    try:
        messages = validate_messages(body.get("messages"))
        params = SamplingParams.from_dict(sampling)
    except InferenceError as exc:
        raise ApiError(exc.message, param=asked.get(exc.param, exc.param), code=exc.code) from None
    return model, messages, params, bool(stream)


def _resolve(model):
    from playground.snapshots import UnknownModel, resolve_snapshot

    try:
        if model != model.strip():  # the id is exact, as OpenAI's are: " tiny" is not "tiny"
            raise UnknownModel(model)
        return resolve_snapshot(model)
    except UnknownModel as exc:
        raise ApiError(str(exc), status=404, param="model", code="model_not_found") from None


def _completion_id():
    import secrets

    return "chatcmpl-" + secrets.token_urlsafe(18).replace("-", "").replace("_", "")[:24]


def _judge_request(job, model, stream):
    """What a judge token may ask: the models its job's grader names, each answer whole. An external
    endpoint's model (`<endpoint>/<model>`) is returned as its JudgeEndpoint: the studio asks it with the key
    it keeps, which the engine never sees."""
    from evals.judges import endpoint_for
    from training.launch import judge_models

    if model not in judge_models(job.spec.get("grader")):
        raise ApiError(f"This judge token is {job.public_id}'s: it may ask only the models its grader names "
                       f"({', '.join(judge_models(job.spec.get('grader')))}), not {model!r}.", status=403,
                       param="model", code="permission_denied")
    endpoint = endpoint_for(model)
    if endpoint is not None and stream:
        raise ApiError("A judge on an external endpoint answers whole: leave out 'stream'.", param="stream",
                       code="unsupported_value")
    return endpoint


def _ask_endpoint(model, body, messages):
    """An external judge's answer (evals.judges.StudioJudge asks it, greedy unless told), or ApiError as the
    judge failed."""
    from evals.judges import StudioJudge
    from graders import JudgeError

    sampling = {"temperature": body.get("temperature") if body.get("temperature") is not None else 0.0,
                "top_p": body.get("top_p"), "seed": body.get("seed"),
                "max_completions_tokens": body.get("max_completion_tokens") or body.get("max_tokens")}
    try:
        return StudioJudge()(model, messages, sampling)
    except JudgeError as exc:
        raise ApiError(f"Inference failed for {model!r}: {exc}", status=500, code="inference_error") from None


# Admins only: an evaluator who could run the snapshots of a task could match their answers to its blind
# columns. Evaluators rate the outputs their tasks stored. A running reinforcement job's engine asks its
# grader's judges here with its judge token (api/auth.py), as the job's creator.
@api_view("POST", judge=True)
async def chat_completions(request):
    import time

    from asgiref.sync import sync_to_async
    from django.http import StreamingHttpResponse

    from playground.inference import get_backend
    from playground.inference.limits import HeldStream, TooManyGenerations, take_slot

    body = json_body(request)
    model, messages, params, stream = _chat_request(body)
    if request.judge_job is not None:
        endpoint = await sync_to_async(_judge_request)(request.judge_job, model, stream)
        if endpoint is not None:
            answer = await sync_to_async(_ask_endpoint)(model, body, messages)
            return JsonResponse({
                "id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text, "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                          "total_tokens": answer.prompt_tokens + answer.completion_tokens}})
    snapshot = await sync_to_async(_resolve)(model)
    backend = get_backend()
    try:
        slot = take_slot(request.user)  # given back when the answer is complete or the client leaves
    except TooManyGenerations as exc:
        raise ApiError(str(exc), status=429, code="rate_limit_exceeded") from None
    completion_id, created = _completion_id(), int(time.time())

    def chunk(delta, finish_reason=None):
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    if stream:
        async def events():
            yield _sse(chunk({"role": "assistant", "content": ""}))
            async for event in backend.generate([snapshot], messages, params):
                if event.type == "delta" and event.text:
                    yield _sse(chunk({"content": event.text}))
                elif event.type == "done":
                    yield _sse(chunk({}, _finish_reason(event)))
                elif event.type == "error":
                    # The SDK raises an APIError for a chunk that carries `error`.
                    yield _sse({"error": {"message": event.error, "type": "server_error", "param": event.param,
                                          "code": "inference_error"}})
            yield "data: [DONE]\n\n"

        response = StreamingHttpResponse(HeldStream(events(), slot), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    from playground.inference import InferenceError, collect

    try:
        (final,) = await collect(backend.generate([snapshot], messages, params), 1)
    except InferenceError as exc:
        raise ApiError(exc.message, param=exc.param, code=exc.code) from None
    finally:
        slot.release()
    if final is not None and final.type == "error" and final.param:
        raise ApiError(final.error, param=final.param, code="invalid_value")  # the request's fault: a 400
    if final is None or final.type == "error":
        detail = final.error if final is not None else "no output"
        raise ApiError(f"Inference failed for '{model}': {detail}", status=500, code="inference_error")
    return JsonResponse({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text, "refusal": None},
                     "logprobs": None, "finish_reason": _finish_reason(final)}],
        "usage": {"prompt_tokens": final.n_prompt_tokens, "completion_tokens": final.n_tokens,
                  "total_tokens": final.n_prompt_tokens + final.n_tokens},
    })


def _finish_reason(event):
    return "length" if event.finish_reason == "length" else "stop"


def _sse(payload):
    return f"data: {json.dumps(payload)}\n\n"

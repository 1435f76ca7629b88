"""The Evals and graders routes of the /v1 API, in OpenAI's shapes, so the `openai` SDK's
`client.evals…` and `client.fine_tuning.alpha.graders…` drive them unchanged.

- `/evals`: create, list (`order`, `order_by`), retrieve, update (name, metadata), delete.
- `/evals/{id}/runs`: create (a `completions` or `jsonl` data source), list (`order`, `status`),
  retrieve, cancel (`POST …/cancel`, or `POST` on the run), delete.
- `/evals/{id}/runs/{run}/output_items`: list (`status=pass|fail`, `order`), retrieve.
- `/fine_tuning/alpha/graders/validate` and `/run`.

Every problem answers in the API's error envelope with the request field at fault as `param`.
"""

from django.db import transaction
from django.http import JsonResponse
from django.utils import timezone

from api.auth import api_view
from api.errors import ApiError, not_found
from api.views import cursor_page, json_body
from evals.models import Eval, EvalRun, OutputItem
from evals.requests import EvalError, eval_fields, eval_update, run_fields
from training.ids import unix

MAX_SAMPLE_CHARS = 100_000


def _api_error(exc):
    return ApiError(exc.message, status=exc.status, param=exc.param, code=exc.code)


# --- objects -------------------------------------------------------------------------

def eval_object(eval_obj):
    config = eval_obj.data_source_config or {}
    return {
        "object": "eval",
        "id": eval_obj.public_id,
        "name": eval_obj.name,
        "created_at": unix(eval_obj.created_at),
        "metadata": eval_obj.metadata,
        "data_source_config": {"type": config.get("type", "custom"), "schema": eval_obj.schema()},
        "testing_criteria": eval_obj.testing_criteria,
        "attune": {"data_source": eval_obj.epoch_data_source or None},
    }


def run_object(run):
    return {
        "object": "eval.run",
        "id": run.public_id,
        "eval_id": run.eval.public_id,
        "name": run.name,
        "model": run.model,
        "status": run.status,
        "error": run.error or {"code": "", "message": ""},
        "created_at": unix(run.created_at),
        "report_url": f"/evals/{run.eval.public_id}/items/?runs={run.public_id}",  # the Evals page of its items
        "result_counts": {"total": 0, "passed": 0, "failed": 0, "errored": 0, **(run.result_counts or {})},
        "per_testing_criteria_results": run.per_testing_criteria_results or [],
        "per_model_usage": run.per_model_usage or [],
        "data_source": run.data_source,
        "metadata": run.metadata,
        "attune": {"n_items": run.n_items, "n_done": run.n_done,
                   "fine_tuning_job_id": run.job.public_id if run.job_id else None,
                   "checkpoint_id": run.checkpoint.public_id if run.checkpoint_id else None},
    }


def output_item_object(item):
    sample = dict(item.sample or {})
    sample.setdefault("error", None)
    sample["error"] = sample["error"] or {"code": "", "message": ""}
    return {
        "object": "eval.run.output_item",
        "id": item.public_id,
        "run_id": item.run.public_id,
        "eval_id": item.run.eval.public_id,
        "created_at": unix(item.created_at),
        "status": item.status,
        "datasource_item_id": item.index,
        "datasource_item": item.datasource_item,
        "results": item.results,
        "sample": sample,
    }


# --- lookups -------------------------------------------------------------------------

def _get_eval(eval_id):
    found = Eval.objects.filter(public_id=eval_id).first()
    if found is None:
        raise not_found("Eval", eval_id, param="eval_id")
    return found


def _get_run(eval_obj, run_id):
    found = EvalRun.objects.select_related("eval", "job", "checkpoint").filter(eval=eval_obj, public_id=run_id).first()
    if found is None:
        raise not_found("EvalRun", run_id, param="run_id")
    return found


def _order(request, default="desc"):
    order = request.GET.get("order", default)
    if order not in ("asc", "desc"):
        raise ApiError(f"Invalid 'order': use asc or desc, not {order!r}.", param="order")
    return order == "desc"


# --- evals ---------------------------------------------------------------------------

@api_view("GET", "POST")
def evals(request):
    if request.method == "POST":
        try:
            fields = eval_fields(json_body(request))
        except EvalError as exc:
            raise _api_error(exc) from None
        created = Eval.objects.create(owner=request.user, **fields)
        return JsonResponse(eval_object(created))
    descending = _order(request)
    order_by = request.GET.get("order_by", "created_at")
    if order_by not in ("created_at", "updated_at"):
        raise ApiError(f"Invalid 'order_by': use created_at or updated_at, not {order_by!r}.", param="order_by")
    return cursor_page(request, Eval.objects.all(), [(order_by, descending), ("id", descending)], eval_object,
                       default_limit=20, max_limit=100, with_ids=True)


@api_view("GET", "POST", "DELETE")
def eval_detail(request, eval_id):
    eval_obj = _get_eval(eval_id)
    if request.method == "DELETE":
        active = eval_obj.runs.filter(status__in=[EvalRun.QUEUED, EvalRun.IN_PROGRESS])
        for run in active:
            run.cancel()
        eval_obj.delete()
        return JsonResponse({"object": "eval.deleted", "deleted": True, "eval_id": eval_id})
    if request.method == "POST":
        try:
            fields = eval_update(json_body(request))
        except EvalError as exc:
            raise _api_error(exc) from None
        for name, value in fields.items():
            setattr(eval_obj, name, value)
        eval_obj.updated_at = timezone.now()
        eval_obj.save(update_fields=[*fields, "updated_at"])
    return JsonResponse(eval_object(eval_obj))


# --- runs ------------------------------------------------------------------------------

@api_view("GET", "POST")
def runs(request, eval_id):
    eval_obj = _get_eval(eval_id)
    if request.method == "POST":
        try:
            with transaction.atomic():
                run = EvalRun.queue(eval_obj, request.user, run_fields(eval_obj, json_body(request)))
        except EvalError as exc:
            raise _api_error(exc) from None
        run.refresh_from_db()
        return JsonResponse(run_object(run))
    queryset = eval_obj.runs.select_related("eval", "job", "checkpoint")
    status = request.GET.get("status")
    if status:
        if status not in dict(EvalRun.STATUSES):
            raise ApiError(f"Invalid 'status' {status!r}: use one of {', '.join(dict(EvalRun.STATUSES))}.",
                           param="status")
        queryset = queryset.filter(status=status)
    descending = _order(request, default="asc")
    return cursor_page(request, queryset, [("created_at", descending), ("id", descending)], run_object,
                       default_limit=20, max_limit=100, with_ids=True)


@api_view("GET", "POST", "DELETE")
def run_detail(request, eval_id, run_id):
    run = _get_run(_get_eval(eval_id), run_id)
    if request.method == "POST":
        return _cancel(run)
    if request.method == "DELETE":
        run.cancel()
        run.delete()
        return JsonResponse({"object": "eval.run.deleted", "deleted": True, "run_id": run_id})
    return JsonResponse(run_object(run))


def _cancel(run):
    if run.ended and run.status != EvalRun.CANCELED:
        raise ApiError(f"Run {run.public_id} has already ended ({run.status}) and cannot be canceled.",
                       param="run_id", code="run_ended")
    run.cancel()
    return JsonResponse(run_object(run))


@api_view("POST")
def run_cancel(request, eval_id, run_id):
    return _cancel(_get_run(_get_eval(eval_id), run_id))


@api_view("GET")
def output_items(request, eval_id, run_id):
    run = _get_run(_get_eval(eval_id), run_id)
    queryset = run.items.select_related("run__eval")
    status = request.GET.get("status")
    if status:
        wanted = {"pass": OutputItem.PASS, "fail": OutputItem.FAIL, "failed": OutputItem.FAIL,
                  "error": OutputItem.ERROR}.get(status)
        if wanted is None:
            raise ApiError(f"Invalid 'status' {status!r}: use pass or fail.", param="status")
        queryset = queryset.filter(status=wanted)
    descending = _order(request, default="asc")
    return cursor_page(request, queryset, [("index", descending), ("id", descending)], output_item_object,
                       default_limit=20, max_limit=100, with_ids=True)


@api_view("GET")
def output_item_detail(request, eval_id, run_id, item_id):
    run = _get_run(_get_eval(eval_id), run_id)
    item = run.items.select_related("run__eval").filter(public_id=item_id).first()
    if item is None:
        raise not_found("OutputItem", item_id, param="output_item_id")
    return JsonResponse(output_item_object(item))


# --- graders ---------------------------------------------------------------------------

def _grader(body):
    from evals.requests import judge_exists
    from graders import GraderError, validate_grader

    grader = body.get("grader")
    if not isinstance(grader, dict):
        raise ApiError("Missing required parameter: 'grader' (a grader object).", param="grader",
                       code="missing_required_parameter" if grader is None else "invalid_type")
    try:
        return validate_grader(grader, model_exists=judge_exists, param="grader", context="run")
    except GraderError as exc:
        raise ApiError(exc.message, param=exc.param, code=exc.code or "invalid_grader") from None


@api_view("POST")
def graders_validate(request):
    body = json_body(request)
    extra = sorted(set(body) - {"grader"})
    if extra:
        raise ApiError(f"Unrecognized request argument supplied: {extra[0]}", param=extra[0])
    return JsonResponse({"grader": _grader(body)})


@api_view("POST")
def graders_run(request):
    from evals.judges import StudioJudge
    from evals.runner import python_limits
    from graders import run_grader

    body = json_body(request)
    extra = sorted(set(body) - {"grader", "model_sample", "item", "reference_answer"})
    if extra:
        raise ApiError(f"Unrecognized request argument supplied: {extra[0]}", param=extra[0])
    grader = _grader(body)
    sample = body.get("model_sample")
    if not isinstance(sample, str):
        raise ApiError("Missing required parameter: 'model_sample' (the model's output, a string).",
                       param="model_sample", code="missing_required_parameter" if sample is None else "invalid_type")
    if len(sample) > MAX_SAMPLE_CHARS:
        # Text metrics grow with the product of the two lengths: a bounded sample keeps one request bounded.
        raise ApiError(f"'model_sample' is {len(sample):,} characters long; at most {MAX_SAMPLE_CHARS:,} are graded "
                       "in one request.", param="model_sample", code="string_above_max_length")
    item = body.get("item")
    if item is not None and not isinstance(item, dict):
        raise ApiError("'item' must be an object (the fields graders read as item.*).", param="item")
    result = run_grader(grader, sample, item or {}, judge=StudioJudge(), limits=python_limits())
    return JsonResponse(result.as_response())

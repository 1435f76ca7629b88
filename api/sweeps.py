"""/v1/attune/sweeps: Attune's sweeps, several fine-tuning jobs from one request with some values swept
(training/sweeps.py).

- `POST /v1/attune/sweeps`: the body of `POST /v1/fine_tuning/jobs` (read by `spec_from_request`, so a bad
  field has the same `param`: `hyperparameters.n_epochs`, `attune.lora_r`…) plus `sweep`: {mode: grid |
  random, fields: {name: [values]} or {name: {min, max}}, n, seed}; the sweep's own refusals name
  `sweep.fields.<name>[<index>]`, `sweep.n`…, and no job is made when anything is refused.
- `GET /v1/attune/sweeps` (newest first, OpenAI's list with `has_more`), `GET /v1/attune/sweeps/{id}`,
  `POST /v1/attune/sweeps/{id}/cancel` (every job that has not ended).

A sweep object: id, object "attune.sweep", created_at, status ("active" while a job has not ended, else
"ended") with `job_counts` by status, the definition, `metric` {name, higher_is_better}, `ranking` (the jobs
best first, each with its swept values, its best value of the metric and that checkpoint's id), and `jobs`:
the full job objects, as `GET /v1/fine_tuning/jobs/{id}` returns them, in the order they were made.
"""

from django.http import JsonResponse

from api import objects
from api.auth import api_view
from api.errors import ApiError, not_found
from api.job_requests import spec_from_request
from api.views import cursor_page, json_body, request_error
from training.ids import unix
from training.models import JobError, Sweep, is_higher_better
from training.sweeps import create_sweep, ranking, status_summary


def sweep_object(sweep):
    ranked = ranking(sweep)
    jobs = sorted((row.job for row in ranked), key=lambda job: (job.created_at, job.pk))
    status, counts = status_summary(jobs)
    return {
        "id": sweep.public_id,
        "object": "attune.sweep",
        "created_at": unix(sweep.created_at),
        "status": status,
        "job_counts": counts,
        "mode": sweep.definition.get("mode"),
        "fields": sweep.definition.get("fields"),
        "n": sweep.definition.get("n"),
        "seed": sweep.definition.get("seed"),
        "metric": {"name": sweep.metric, "higher_is_better": is_higher_better(sweep.metric)},
        "ranking": [{"job": row.job.public_id, "values": row.values, "metric_value": row.value,
                     "checkpoint": row.checkpoint.public_id if row.checkpoint else None} for row in ranked],
        "jobs": [objects.job_object(job) for job in jobs],
    }


def _get_sweep(sweep_id):
    sweep = Sweep.objects.filter(public_id=sweep_id).first()
    if sweep is None:
        raise not_found("attune.sweep", sweep_id, param="sweep_id")
    return sweep


@api_view("GET", "POST")
def sweeps(request):
    if request.method == "POST":
        return sweep_create(request)
    return cursor_page(request, Sweep.objects.all(), [("created_at", True), ("id", True)], sweep_object,
                       default_limit=20, max_limit=100)


def sweep_create(request):
    body = json_body(request)
    definition = body.pop("sweep", None)
    if definition is None:
        raise ApiError("Missing required parameter: 'sweep' ({mode, fields, n, seed}).", param="sweep",
                       code="missing_required_parameter")
    spec, metadata, params = spec_from_request(body)
    try:
        sweep = create_sweep(spec, definition, request.user, metadata=metadata)
    except JobError as exc:
        if (exc.param or "").startswith("sweep"):
            raise ApiError(exc.message, param=exc.param, code=exc.code) from None
        raise request_error(exc, params) from None
    return JsonResponse(sweep_object(sweep))


@api_view("GET")
def sweep_detail(request, sweep_id):
    return JsonResponse(sweep_object(_get_sweep(sweep_id)))


@api_view("POST")
def sweep_cancel(request, sweep_id):
    sweep = _get_sweep(sweep_id)
    sweep.cancel(by=request.user)
    return JsonResponse(sweep_object(sweep))

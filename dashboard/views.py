"""Admin pages: datasets and users. Jobs, charts, re-run, compare and checkpoint downloads live here too."""

import itertools
import json
import logging
from datetime import timedelta
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import prefetch_related_objects
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.access import admin_required, is_admin, make_user
from config.streaming import FileStream, in_thread
from dashboard.consumers import TRACES, build_traces, eval_curves, point_rows
from dashboard.forms import (
    BaseModelForm,
    CompareRunsForm,
    EvaluatorForm,
    JobFilterForm,
    JobForm,
    StatsModelForm,
    SweepForm,
    UploadForm,
)
from training.base_models import BaseModelError, convert_gguf, gguf_to_convert, register_base_model
from training.datasets import iter_examples, stats_for, store_upload
from training.engine.spec import hyperparameters_for
from training.estimates import estimate_request
from training.jobs import create_job, rerun
from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob, JobError, Sweep, is_higher_better
from training.sweeps import best_finished, create_sweep, plan, ranking, status_summary, values_text

log = logging.getLogger(__name__)


def _get_file(file_id):
    return get_object_or_404(DataFile, public_id=file_id)


@login_required
def home(request):
    return redirect("jobs" if is_admin(request.user) else "rating_tasks")


@admin_required
@require_http_methods(["GET", "POST"])
def datasets(request):
    form = UploadForm()
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            data_file, report = store_upload(upload.chunks(), upload.name, owner=request.user,
                                             base_model=BaseModel.default())
            if report.ok:
                messages.success(request, f"{data_file.filename}: {report.n_examples} examples, no errors.")
            else:
                messages.error(request, f"{data_file.filename} has {report.n_errors} error(s); "
                                        "it is kept so you can read them, but it cannot start a job.")
            return redirect("dataset_detail", file_id=data_file.public_id)
    files = DataFile.objects.filter(purpose="fine-tune").select_related("owner")
    page = Paginator(files, 50).get_page(request.GET.get("page"))
    default_model = BaseModel.default()
    rows = [(f, f.stats.get(default_model.name, {}) if default_model else {}) for f in page]
    return render(request, "dashboard/datasets.html",
                  {"form": form, "page": page, "rows": rows, "default_model": default_model})


@admin_required
def dataset_detail(request, file_id):
    data_file = _get_file(file_id)
    chosen = StatsModelForm(request.GET or None)
    base_model = chosen.cleaned_data["base_model"] if chosen.is_valid() else None
    base_model = base_model or BaseModel.default()
    form = StatsModelForm(initial={"base_model": base_model})
    stats = stats_for(data_file, base_model) if base_model else {}
    examples = []
    if data_file.status == "processed":
        examples = list(itertools.islice(iter_examples(data_file.full_path), 20))
    return render(request, "dashboard/dataset_detail.html", {
        "file": data_file, "stats": stats, "base_model": base_model, "form": form,
        "examples": [_render_example(e) for e in examples],
    })


@admin_required
def dataset_download(request, file_id):
    data_file = _get_file(file_id)
    if not data_file.full_path.exists():
        raise Http404("The file's content is no longer on disk.")
    return FileStream(open(data_file.full_path, "rb"), as_attachment=True, filename=data_file.filename)


def _render_example(example):
    """Turns of one example, as (role, text, trained) triples, for display."""
    if "messages" in example:
        turns = [(m.get("role"), m.get("content") or _tool_text(m), m.get("weight", 1) != 0)
                 for m in example["messages"]]
        return {"kind": "chat", "turns": turns}
    preferred = example.get("preferred_output") or example.get("preferred_completion")
    rejected = example.get("non_preferred_output") or example.get("non_preferred_completion")
    turns = [(m.get("role"), m.get("content"), False) for m in example["input"]["messages"]]
    turns.append(("preferred", preferred[0]["content"], True))
    turns.append(("rejected", rejected[0]["content"], False))
    return {"kind": "preference", "turns": turns}


def _tool_text(message):
    calls = message.get("tool_calls") or []
    return "; ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})" for c in calls)


@admin_required
@require_http_methods(["GET", "POST"])
def users(request):
    form = EvaluatorForm()
    created = None
    if request.method == "POST":
        form = EvaluatorForm(request.POST)
        if form.is_valid():
            try:
                user, password = make_user(form.cleaned_data["username"], form.cleaned_data["role"])
            except ValueError as exc:
                form.add_error("username", str(exc))
            else:
                created = {"username": user.username, "password": password, "role": form.cleaned_data["role"]}
                form = EvaluatorForm()
    people = User.objects.order_by("username").prefetch_related("groups")
    return render(request, "dashboard/users.html", {"form": form, "people": people, "created": created})


@admin_required
@require_http_methods(["GET", "POST"])
async def base_models(request):
    form = BaseModelForm(request.POST) if request.method == "POST" else BaseModelForm()
    if request.method == "POST" and form.is_valid():
        fields = dict(form.cleaned_data)
        try:
            gguf_file = await sync_to_async(gguf_to_convert)(fields["name"], fields["source"])
            if gguf_file is not None:
                # From a minute to many: in a thread of its own (it touches no database), so other requests,
                # which share one thread under the ASGI server, go on meanwhile.
                folder = await sync_to_async(convert_gguf, thread_sensitive=False)(fields["name"], gguf_file)
                fields["source"] = folder.name
            model = await sync_to_async(register_base_model)(**fields)
        except BaseModelError as exc:
            form.add_error(exc.field, exc.message)
        else:
            await sync_to_async(messages.success)(request, f"Registered {model.name}.")
            return redirect("base_models")
    from playground.inference import backend_servers

    models = await sync_to_async(list)(BaseModel.objects.all())
    servers = await sync_to_async(backend_servers, thread_sensitive=False)()
    return await sync_to_async(render)(request, "dashboard/base_models.html",
                                       {"form": form, "models": models, "servers": servers,
                                        "managed_vllm": settings.INFERENCE_BACKEND == "vllm" and not settings.VLLM_URL})


def forbidden(request, exception=None):
    detail = str(exception) if exception and str(exception) else "You do not have access to this page."
    return render(request, "error.html", {"code": 403, "title": "Forbidden", "detail": detail}, status=403)


def not_found(request, exception=None):
    return render(request, "error.html", {"code": 404, "title": "Not found",
                                          "detail": "Nothing lives at this address."}, status=404)


# --- Jobs: list, new job, re-run, detail with live charts, controls, compare ---

JOBS_PER_PAGE = 25
EVENTS_ON_PAGE = 100
# One colour per compared job (colour-blind safe, Okabe–Ito).
COMPARE_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"]


def _get_job_for_user(request, job_id):
    """The job, if this user may see it: admins see every job, nobody else sees any. The role is checked
    before the lookup, so nobody else learns which job ids exist."""
    if not is_admin(request.user):
        raise PermissionDenied("Jobs are for admins.")
    return get_object_or_404(FineTuningJob.objects.select_related(
        "base_model", "training_file", "validation_file", "created_by", "parent"), public_id=job_id)


def _get_checkpoint_for_user(request, checkpoint_id):
    """The checkpoint, if this user may download it: admins only, checked before the lookup."""
    if not is_admin(request.user):
        raise PermissionDenied("Only admins download checkpoints.")
    return get_object_or_404(Checkpoint.objects.select_related("job__base_model"), public_id=checkpoint_id)


@admin_required
@require_GET
def jobs(request):
    form = JobFilterForm(request.GET or None)
    queryset = FineTuningJob.objects.select_related("base_model", "created_by")
    if form.is_valid():
        if form.cleaned_data["status"]:
            queryset = queryset.filter(status=form.cleaned_data["status"])
        if form.cleaned_data["model"]:
            queryset = queryset.filter(base_model__name=form.cleaned_data["model"])
    page = Paginator(queryset, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    for job in page:
        job.eta = _eta(job)
    # The filters, kept in the page links (and in the table's own refresh).
    query = urlencode([(k, v) for k, v in request.GET.items() if k != "page" and v])
    context = {"form": form, "page": page, "query": query,
               # The table refreshes itself while something on it can still change.
               "live": any(not job.is_finished for job in page)}
    if request.htmx and not request.htmx.boosted:
        return render(request, "dashboard/jobs_table.html", context)
    return render(request, "dashboard/jobs.html", context)


@admin_required
@require_http_methods(["GET", "POST"])
def job_new(request):
    return _job_form_page(request, parent=None)


@admin_required
@require_http_methods(["GET", "POST"])
def job_rerun(request, job_id):
    parent = _get_job_for_user(request, job_id)
    return _job_form_page(request, parent=parent)


def _job_form_page(request, parent):
    """The new-job form; a re-run is the same form filled with the parent's spec as it was requested. A new job's
    form has a Sweep section: with a field picked in it, the form makes a sweep of jobs (its preview lists them)."""
    preview = "preview" in request.POST
    sweep_form, sweep_plan = None, None
    if request.method == "POST":
        form = JobForm(request.POST)
        sweep_form = None if parent else SweepForm(request.POST, prefix="sweep")
        spec_valid = form.is_valid()
        if sweep_form is not None and sweep_form.is_valid() and sweep_form.definition and spec_valid:
            sweep_plan = _plan_sweep(form, sweep_form)
            if sweep_plan is not None and not preview:
                sweep = _create_sweep(request, form, sweep_form)
                if sweep is not None:
                    messages.success(request, f"Created {sweep.public_id}: {sweep.jobs.count()} jobs.")
                    return redirect("sweep_detail", sweep_id=sweep.public_id)
                sweep_plan = None
        elif spec_valid and not preview and not (sweep_form is not None and sweep_form.errors):
            try:
                if parent:
                    job = rerun(parent, by=request.user, spec=form.spec)
                else:
                    job = create_job(form.spec, request.user)
            except JobError as exc:
                for param, message in exc.errors:
                    form.add_spec_error(param, message)
            else:
                messages.success(request, f"Created {job.public_id}" + (
                    f", a re-run of {parent.public_id}." if parent else "."))
                return redirect("job_detail", job_id=job.public_id)
    else:
        linked = None if parent else _spec_from_query(request.GET)
        form = JobForm(initial=JobForm.initial_from_spec(parent.spec if parent else linked) if parent or linked else None)
        sweep_form = None if parent else SweepForm(prefix="sweep")
    # What the job will cost, shown beside the spec while the form is filled in (and on the form's page).
    estimate = estimate_request(form.spec) if form.spec else None
    if estimate and estimate["seconds"] is not None:
        estimate["time_text"] = duration_text(estimate["seconds"])
    context = {"form": form, "parent": parent, "preview": preview, "estimate": estimate,
               "sweep_form": sweep_form, "sweep_plan": sweep_plan,
               "form_action": reverse("job_rerun", args=[parent.public_id]) if parent else reverse("job_new")}
    if request.htmx and preview:
        return render(request, "dashboard/job_form_spec.html", context)
    return render(request, "dashboard/job_form.html", context)


def _sweep_error(form, sweep_form, exc):
    """A refusal of the sweep lands on its section's input; one of the spec (a file, the model) on the spec's
    field."""
    for param, message in exc.errors:
        if (param or "").startswith("sweep"):
            sweep_form.add_sweep_error(param, message, form.spec.get("method", "supervised"))
        else:
            form.add_spec_error(param, message)


def _plan_sweep(form, sweep_form):
    """The jobs the sweep section asks for (`training.sweeps.plan`), or None with its errors put on the forms."""
    try:
        return plan(form.spec, sweep_form.definition)
    except JobError as exc:
        _sweep_error(form, sweep_form, exc)
        return None


def _create_sweep(request, form, sweep_form):
    try:
        return create_sweep(form.spec, sweep_form.definition, request.user)
    except JobError as exc:
        _sweep_error(form, sweep_form, exc)
        return None


def _spec_from_query(query):
    """The fields a link may fill in a new job's form ("Fine-tune on it": `method` and `training_file`;
    "Fine-tune further": `model`)."""
    spec = {}
    if query.get("method") in ("supervised", "dpo", "reinforcement"):
        spec["method"] = query["method"]
    if query.get("training_file"):
        spec["training_file"] = query["training_file"][:100]
    if query.get("model"):  # "Fine-tune further": a snapshot's name
        spec["model"] = query["model"][:300]
    return spec


def _eta(job):
    """Time left, as text: the worker's estimate when it gave one, else elapsed time scaled by progress."""
    if job.status != FineTuningJob.RUNNING:
        return None
    now = timezone.now()
    if job.estimated_finish:
        seconds = (job.estimated_finish - now).total_seconds()
    elif job.started_at and 0 < job.progress < 1:
        elapsed = (now - job.started_at).total_seconds()
        seconds = elapsed * (1 - job.progress) / job.progress
    else:
        return None
    return duration_text(seconds)


def duration_text(seconds):
    minutes, seconds = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _hyperparameters(job):
    """(name, as requested, as resolved) for the hyperparameters of the job's method, and the learning rate."""
    values = job.spec_values
    resolved = values.resolved
    rows = [(name, getattr(values.requested, name), getattr(resolved, name) if resolved else None)
            for name in hyperparameters_for(values.method)]
    multiplier = resolved.learning_rate_multiplier if resolved else None
    base_rate = values.base_learning_rate
    rows.append(("learning_rate", f"{base_rate:g} × multiplier",
                 f"{base_rate * multiplier:g}" if isinstance(multiplier, int | float) else None))
    return rows


# The checkpoints table's figures: (heading, metric name), per method.
CHECKPOINT_COLUMNS = {
    "supervised": [("Train loss", "train_loss"), ("Train acc.", "train_mean_token_accuracy"),
                   ("Valid loss", "valid_loss"), ("Valid acc.", "valid_mean_token_accuracy"),
                   ("Full valid loss", "full_valid_loss"), ("Full valid acc.", "full_valid_mean_token_accuracy")],
    "dpo": [("Train loss", "train_loss"), ("Train reward margin", "train_reward_margin"),
            ("Train reward acc.", "train_reward_accuracy"), ("Full valid loss", "full_valid_loss"),
            ("Full valid reward margin", "full_valid_reward_margin"),
            ("Full valid reward acc.", "full_valid_reward_accuracy")],
    "reinforcement": [("Train mean reward", "train_mean_reward"), ("Valid mean reward", "valid_reward_mean"),
                      ("Full valid mean reward", "full_valid_mean_reward"),
                      ("Full valid parse errors", "full_valid_mean_parse_error")],
}


def _checkpoint_columns(job):
    return CHECKPOINT_COLUMNS[job.spec_values.method]


# The job page's training charts, per method: the chart's element id, title, the metric point fields it draws (one
# trace per field and scope, named by TRACES), their labels when it draws several, and a short explanation under
# it. static/js/job.js reads them from json_script "job-charts". `grader_scores` draws one trace per grader name;
# `share`: a figure between 0 and 1, shown as a percentage.
LOSS_CHART = {"id": "chart-loss", "title": "Loss", "figures": ["loss"]}
LR_CHART = {"id": "chart-lr", "title": "Learning rate", "figures": ["learning_rate"], "exponent": True}
JOB_CHARTS = {
    "supervised": [LOSS_CHART, {"id": "chart-accuracy", "title": "Token accuracy", "figures": ["accuracy"]}, LR_CHART],
    "dpo": [LOSS_CHART,
            {"id": "chart-reward-margin", "title": "Reward margin (chosen − rejected)", "figures": ["reward_margin"]},
            {"id": "chart-reward-accuracy", "title": "Reward accuracy (chosen wins)", "figures": ["reward_accuracy"],
             "share": True},
            LR_CHART],
    "reinforcement": [
        {"id": "chart-reward", "title": "Mean reward", "figures": ["reward"],
         "help": "The grader's mean score of the sampled answers (train) and of the greedy answers to the "
                 "validation prompts (valid: a fixed sample; full valid: the whole file at each epoch end)."},
        {"id": "chart-graders", "title": "Reward per grader", "figures": ["grader_scores"],
         "help": "Each grader's mean score by its name: a multi grader's sub-graders, and the multi itself."},
        {"id": "chart-errors", "title": "Parse and grader errors", "figures": ["parse_error_rate", "grader_error_rate"],
         "labels": {"parse_error_rate": "parse errors", "grader_error_rate": "grader errors"}, "share": True,
         "help": "Shares of the answers the grader could not score, each with reward 0: parse errors are answers "
                 "that are not the JSON the grader or response_format needs; grader errors are the rest (a python "
                 "grader that raised, a judge that failed)."},
        {"id": "chart-zero-std", "title": "Groups with equal rewards", "figures": ["frac_reward_zero_std"],
         "share": True,
         "help": "The share of prompts whose completions all got the same reward. Rewards are compared within a "
                 "prompt's group, so a group whose rewards are all equal teaches nothing. Near 100%, the task is "
                 "too easy or too hard for the model: a finer grader (partial credit), more generations per prompt "
                 "or a higher temperature give it something to learn from."},
        {"id": "chart-completion-tokens", "title": "Completion length (tokens)", "figures": ["completion_tokens_mean"],
         "help": "The mean length of the answers in tokens; one that runs into max_completion_length is cut there."},
        {**LOSS_CHART, "title": "Loss (GRPO)"},
        LR_CHART,
    ],
}


def _job_charts(job):
    return JOB_CHARTS[job.spec_values.method]


# A checkpoint stored this recently with no eval run yet is about to get one (it is queued once the row is
# committed): the table keeps refreshing until it shows up.
EVAL_QUEUE_GRACE = timedelta(seconds=60)


def _eval_columns(job, checkpoints):
    """(heading, metric, tooltip) of the eval's columns: mean score and pass rate, and each testing criterion's
    mean when there are several; [] when the job names no eval. Criteria come from the eval, or from the scores
    stored when the eval is gone."""
    eval_id = job.spec_values.eval
    if not eval_id:
        return []
    from evals.models import Eval

    found = Eval.objects.filter(public_id=eval_id).first()
    criteria = found.criteria_names if found else list(dict.fromkeys(
        name for c in checkpoints for name in (c.metrics.get("eval_scores") or {})))
    columns = [("Eval mean", "eval_mean_score", f"Mean score over the testing criteria of {eval_id}"),
               ("Pass rate", "eval_pass_rate", f"Share of graded items that passed {eval_id}")]
    if len(criteria) > 1:
        columns += [(name, f"eval:{name}", f"Mean score of the testing criterion {name}") for name in criteria]
    return columns


def _eval_cell(metric, value):
    if value is None:
        return "—"
    return f"{value:.0%}" if metric == "eval_pass_rate" else f"{value:.3f}"


def _eval_state(checkpoint, run, now):
    """What the eval cells say while a checkpoint has no scores: {kind, text, title, pending} (pending: it will
    change, so the table refreshes itself); None once scored."""
    if checkpoint.metrics.get("eval_run_id"):
        return None
    if run is None:
        return {"kind": "none", "text": "—", "title": "No eval run for this checkpoint.",
                "pending": now - checkpoint.created_at < EVAL_QUEUE_GRACE}
    if run.status == run.QUEUED:
        return {"kind": "queued", "text": "queued", "title": f"Eval run {run.public_id} waits for the eval worker.",
                "pending": True}
    if not run.ended:
        progress = f" {run.n_done}/{run.n_items}" if run.n_items else ""
        return {"kind": "running", "text": f"running{progress}", "pending": True,
                "title": f"Eval run {run.public_id} is generating and grading."}
    # Completed without scores yet: they are being written into the checkpoint.
    writing = run.status == run.COMPLETED and run.finished_at is not None and now - run.finished_at < EVAL_QUEUE_GRACE
    return {"kind": run.status, "text": run.status, "pending": writing,
            "title": (run.error or {}).get("message") or f"Eval run {run.public_id} ended {run.status}."}


def _checkpoint_table(job):
    """The checkpoints table: one row per checkpoint with its figures, the eval's scores or the state of its run,
    and the best checkpoint by the job's best_metric marked."""
    playground = reverse("playground")
    columns = _checkpoint_columns(job)
    checkpoints = list(job.checkpoints.all())
    eval_columns = _eval_columns(job, checkpoints)
    runs = {}
    if eval_columns:
        from evals.models import EvalRun

        for run in EvalRun.objects.filter(checkpoint__in=checkpoints).order_by("created_at", "id"):
            runs[run.checkpoint_id] = run  # the newest run of each checkpoint
    best = job.best_checkpoint(checkpoints)
    now = timezone.now()
    rows = []
    for checkpoint in checkpoints:
        checkpoint.job = job  # model_name reads the job's base model: no query per row
        model_name = checkpoint.model_name
        state = _eval_state(checkpoint, runs.get(checkpoint.pk), now) if eval_columns else None
        rows.append({
            "checkpoint": checkpoint, "model_name": model_name,
            "metrics": [checkpoint.metrics.get(key) for _heading, key in columns],
            "eval": [_eval_cell(metric, checkpoint.metric_value(metric)) for _h, metric, _t in eval_columns],
            "eval_state": state,
            "is_best": best is not None and checkpoint.pk == best.pk,
            "playground_url": f"{playground}?{urlencode({'snapshot': model_name})}",
            "download_url": reverse("checkpoint_download", args=[checkpoint.public_id]),
        })
    metric, higher = job.best_metric
    return {"checkpoints": rows, "eval_columns": eval_columns, "best_metric": metric,
            "best_direction": "highest" if higher else "lowest", "has_best": best is not None,
            "n_columns": 5 + len(columns) + len(eval_columns),
            "eval_pending": any(row["eval_state"] and row["eval_state"]["pending"] for row in rows),
            "eval_curves": eval_curves(checkpoints) if eval_columns else None}


def _job_context(job):
    return {"job": job, "eta": _eta(job), "checkpoint_headings": [heading for heading, _key in _checkpoint_columns(job)]}


JOB_PARTS = {"header": "dashboard/job_header.html", "checkpoints": "dashboard/job_checkpoints.html"}


@admin_required
@require_GET
def job_detail(request, job_id):
    job = _get_job_for_user(request, job_id)
    context = _job_context(job)
    part = request.GET.get("part")
    if request.htmx and part in JOB_PARTS:
        if part == "checkpoints":
            context.update(_checkpoint_table(job))
        return render(request, JOB_PARTS[part], context)
    reruns = list(job.reruns.select_related("created_by").order_by("created_at"))
    context.update(_checkpoint_table(job))
    context.update({
        "events": job.events.all()[:EVENTS_ON_PAGE],
        "hyperparameters": _hyperparameters(job),
        "spec_json": json.dumps(job.spec, indent=2),
        "resolved_json": json.dumps(job.resolved_spec, indent=2) if job.resolved_spec else "",
        "reruns": reruns,
        "chain": job.starting_chain(),
        "trained_further": list(FineTuningJob.objects.filter(init_checkpoint__job=job).order_by("created_at")[:20]),
        "compare_url": _lineage_compare_url(job, reruns),
        "ws_path": f"/ws/jobs/{job.public_id}/",
        "trace_names": TRACES,
        "charts": _job_charts(job),
    })
    return render(request, "dashboard/job_detail.html", context)


def _lineage_compare_url(job, reruns):
    """The compare page for this job with its parent and first re-runs (at most 4 jobs), if it has any."""
    family = ([job.parent] if job.parent else []) + [job] + reruns
    if len(family) < 2:
        return None
    return reverse("compare_jobs") + "?" + urlencode([("jobs", j.public_id) for j in family[:4]])


def _job_control(request, job_id, action):
    """Cancel, pause or resume through the job's own method; it refuses, naming why, when the job is past that."""
    job = _get_job_for_user(request, job_id)
    try:
        getattr(job, action)(by=request.user)
    except JobError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, {"cancel": "Cancelled", "pause": "Pause requested for",
                                   "resume": "Resumed"}[action] + f" {job.public_id}.")
    if request.htmx:
        job.refresh_from_db()
        return render(request, "dashboard/job_header.html", _job_context(job))
    return redirect("job_detail", job_id=job.public_id)


@require_POST
@admin_required
def job_cancel(request, job_id):
    return _job_control(request, job_id, "cancel")


@require_POST
@admin_required
def job_pause(request, job_id):
    return _job_control(request, job_id, "pause")


@require_POST
@admin_required
def job_resume(request, job_id):
    return _job_control(request, job_id, "resume")


def _curves(job):
    """The job's curves as the job page's websocket history draws them: {trace name: {"x", "y"}},
    each thinned to at most 1,000 points by the same downsampling (LTTB)."""
    traces, _counts, _last = build_traces(point_rows(job))
    return {name: trace for name, trace in traces.items() if trace["x"] and name != TRACES["train"]["learning_rate"]}


def _flatten(spec, prefix=""):
    flat = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _spec_differences(jobs):
    """[(field, [value per job])] for every spec field that is not the same in all jobs."""
    flats = [_flatten(job.spec) for job in jobs]
    fields = sorted(set().union(*flats))
    rows = []
    for field in fields:
        values = [flat.get(field, "—") for flat in flats]
        if any(v != values[0] for v in values):
            rows.append((field, values))
    return rows


# The full-validation figures compare runs tables per epoch, by method: (heading, first metric, second metric).
FULL_VALIDATION_COLUMNS = {
    "supervised": ("loss / acc.", "full_valid_loss", "full_valid_mean_token_accuracy"),
    "dpo": ("loss / acc.", "full_valid_loss", "full_valid_mean_token_accuracy"),
    "reinforcement": ("mean reward / parse errors", "full_valid_mean_reward", "full_valid_mean_parse_error"),
}


def _full_validation_by_epoch(jobs):
    """[(epoch, [(figure, figure) per job])]: the whole validation file, measured at each epoch end; the figures of
    each job's method (FULL_VALIDATION_COLUMNS)."""
    table = {}
    for i, job in enumerate(jobs):
        _heading, first, second = FULL_VALIDATION_COLUMNS[job.spec_values.method]
        for checkpoint in job.checkpoints.all():
            row = table.setdefault(checkpoint.epoch, [(None, None)] * len(jobs))
            row[i] = (checkpoint.metrics.get(first), checkpoint.metrics.get(second))
    return sorted(table.items())


def _compare_charts(jobs):
    """The compare page's charts: [{"figure", "title", ["share": a 0–1 figure]}], loss for all, token accuracy when a run is not a
    reinforcement job, the mean reward and the parse errors when one is."""
    methods = {job.spec_values.method for job in jobs}
    charts = [{"figure": "loss", "title": "Loss"}]
    if methods - {"reinforcement"}:
        charts.append({"figure": "accuracy", "title": "Token accuracy"})
    if "reinforcement" in methods:
        charts += [{"figure": "reward", "title": "Mean reward"},
                   {"figure": "parse_error_rate", "title": "Parse errors (share of answers)", "share": True}]
    return charts


def _eval_by_epoch(jobs):
    """[(epoch, [cell per job])]: each job's eval scores at each epoch end, {mean, pass_rate, best}, its best
    checkpoint (by the job's own best_metric) marked; None where the job has no checkpoint at that epoch."""
    table = {}
    for i, job in enumerate(jobs):
        checkpoints = list(job.checkpoints.all())
        best = job.best_checkpoint(checkpoints)
        for checkpoint in checkpoints:
            row = table.setdefault(checkpoint.epoch, [None] * len(jobs))
            row[i] = {"mean": _eval_cell("eval_mean_score", checkpoint.metric_value("eval_mean_score")),
                      "pass_rate": _eval_cell("eval_pass_rate", checkpoint.metric_value("eval_pass_rate")),
                      "best": best is not None and checkpoint.pk == best.pk}
    return sorted(table.items())


def _eval_headings(jobs):
    """Per job: its eval id (or None) and what marks its best checkpoint."""
    out = []
    for job in jobs:
        metric, higher = job.best_metric
        out.append({"eval": job.spec_values.eval, "best_metric": metric, "direction": "highest" if higher else "lowest"})
    return out


@admin_required
@require_GET
def compare_jobs(request):
    form = CompareRunsForm(request.GET if "jobs" in request.GET else None)
    context = {"form": form, "recent": FineTuningJob.objects.select_related("base_model")[:50], "trace_names": TRACES}
    if form.is_valid():
        picked = form.cleaned_data["jobs"]
        prefetch_related_objects(picked, "checkpoints")
        evals = _eval_headings(picked)
        named = {heading["eval"] for heading in evals if heading["eval"]}
        context.update({
            "evals": list(zip(picked, evals, strict=True)) if named else [],
            "evals_differ": len(named) > 1,
            "eval_by_epoch": _eval_by_epoch(picked) if named else [],
            "picked": list(zip(picked, COMPARE_COLOURS, strict=False)),
            "full_validation_headings": [(job, FULL_VALIDATION_COLUMNS[job.spec_values.method][0]) for job in picked],
            "charts": _compare_charts(picked),
            "picked_ids": [job.public_id for job in picked],
            "differences": _spec_differences(picked),
            "full_validation": _full_validation_by_epoch(picked),
            "series": [{"id": job.public_id, "label": f"{job.public_id[:12]}… {job.suffix or job.base_model.name}",
                        "colour": colour, "curves": _curves(job), "eval": eval_curves(job.checkpoints.all())}
                       for job, colour in zip(picked, COMPARE_COLOURS, strict=False)],
        })
    return render(request, "dashboard/compare_runs.html", context)


# --- Sweeps: the list, a sweep's ranked jobs and their plot, cancel ---

SWEEPS_PER_PAGE = 25


def _get_sweep_for_user(request, sweep_id):
    """The sweep, if this user may see it: admins only, checked before the lookup (as for jobs)."""
    if not is_admin(request.user):
        raise PermissionDenied("Sweeps are for admins.")
    return get_object_or_404(Sweep.objects.select_related("created_by"), public_id=sweep_id)


@admin_required
@require_GET
def sweeps(request):
    page = Paginator(Sweep.objects.select_related("created_by").prefetch_related("jobs"), SWEEPS_PER_PAGE).get_page(
        request.GET.get("page"))
    rows = []
    for sweep in page:
        status, counts = status_summary(sweep.jobs.all())
        rows.append({"sweep": sweep, "status": status, "counts": sorted(counts.items()),
                     "n_jobs": sum(counts.values())})
    return render(request, "dashboard/sweeps.html", {"page": page, "rows": rows})


def _metric_choices(sweep, ranked):
    """The metrics a sweep's jobs can be ranked by: the sweep's own, the validation loss or mean reward of their
    method, and the eval scores their checkpoints carry (each testing criterion as `eval:<name>`)."""
    choices = [sweep.metric]
    choices.append("full_valid_mean_reward" if sweep.spec.get("method") == "reinforcement" else "full_valid_loss")
    criteria = set()
    for row in ranked:
        for checkpoint in row.job.checkpoints.all():
            if checkpoint.metric_value("eval_mean_score") is not None:
                choices += ["eval_mean_score", "eval_pass_rate"]
            criteria.update(checkpoint.metrics.get("eval_scores") or {})
    choices += [f"eval:{name}" for name in sorted(criteria)]
    return list(dict.fromkeys(choices))


def _plot_dimension(label, values):
    """A parallel-coordinates axis: numbers as they are; other values (`auto`) as ticks on an ordinal axis."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {"label": label, "values": values}
    levels = list(dict.fromkeys(map(str, values)))
    return {"label": label, "values": [levels.index(str(v)) for v in values],
            "tickvals": list(range(len(levels))), "ticktext": levels}


def _sweep_plot(sweep, ranked, metric, higher):
    """What sweep.js draws: one line per job that has a value of `metric`, an axis per swept field and one for the
    metric (coloured by it, the best end bright)."""
    scored = [row for row in ranked if row.value is not None]
    return {"jobs": [row.job.public_id for row in scored], "higher": higher,
            "dimensions": [_plot_dimension(name, [row.values[name] for row in scored]) for name in sweep.fields],
            "metric": {"label": metric, "values": [row.value for row in scored]}}


def _compare_url(jobs):
    """The compare page for the first jobs (at most 4), as the job page's lineage link builds it; None under 2."""
    if len(jobs) < 2:
        return None
    return reverse("compare_jobs") + "?" + urlencode([("jobs", job.public_id) for job in jobs[:4]])


@admin_required
@require_GET
def sweep_detail(request, sweep_id):
    sweep = _get_sweep_for_user(request, sweep_id)
    ranked = ranking(sweep)
    choices = _metric_choices(sweep, ranked)
    metric = request.GET.get("metric") if request.GET.get("metric") in choices else sweep.metric
    if metric != sweep.metric:
        ranked = ranking(sweep, metric)
    higher = is_higher_better(metric)
    status, counts = status_summary([row.job for row in ranked])
    best = best_finished(ranked)
    return render(request, "dashboard/sweep_detail.html", {
        "sweep": sweep, "ranked": ranked, "metric": metric, "metric_choices": choices,
        "direction": "highest" if higher else "lowest", "status": status, "counts": sorted(counts.items()),
        "fields": sweep.fields, "plot": _sweep_plot(sweep, ranked, metric, higher),
        "compare_url": _compare_url([row.job for row in ranked]),
        "best": best, "rerun_url": reverse("job_rerun", args=[best.job.public_id]) if best else None,
        "can_cancel": status == "active",
        "rows": [{"row": row, "values_text": values_text(row.values)} for row in ranked],
    })


@require_POST
@admin_required
def sweep_cancel(request, sweep_id):
    sweep = _get_sweep_for_user(request, sweep_id)
    cancelled = sweep.cancel(by=request.user)
    if cancelled:
        messages.success(request, f"Cancelled {len(cancelled)} job{'s' if len(cancelled) != 1 else ''} of "
                                  f"{sweep.public_id}.")
    else:
        messages.info(request, f"Every job of {sweep.public_id} had already ended.")
    return redirect("sweep_detail", sweep_id=sweep.public_id)


# --- Checkpoint download: the adapter as it is, or merged into its base, as a zip ---

def _checkpoint_to_export(request, checkpoint_id, fmt):
    """(checkpoint, whether it must be merged first, the response that refuses it or None)."""
    checkpoint = _get_checkpoint_for_user(request, checkpoint_id)
    if fmt not in ("adapter", "merged"):
        return checkpoint, False, HttpResponseBadRequest("format must be adapter or merged.",
                                                         content_type="text/plain; charset=utf-8")
    if not checkpoint.full_path.is_dir():
        return checkpoint, False, HttpResponse(
            f"The files of {checkpoint.public_id} are missing from disk ({checkpoint.path}).", status=410,
            content_type="text/plain")
    return checkpoint, fmt == "merged" and (checkpoint.full_path / "adapter_config.json").exists(), None


@admin_required
@require_GET
async def checkpoint_download(request, checkpoint_id):
    from dashboard import checkpoint_export

    fmt = request.GET.get("format", "adapter")
    checkpoint, merge, refusal = await sync_to_async(_checkpoint_to_export)(request, checkpoint_id, fmt)
    if refusal is not None:
        return refusal
    folder = checkpoint.full_path
    if merge:
        # Minutes for a large model: in a thread of its own, so other requests go on meanwhile.
        try:
            folder = await sync_to_async(checkpoint_export.merged_folder, thread_sensitive=False)(checkpoint)
        except OSError as exc:
            return HttpResponse(f"Could not build the merged model: {exc}", status=503, content_type="text/plain")
        except Exception as exc:  # a damaged adapter or base: say which, never a 500
            log.exception("Merging %s failed", checkpoint.public_id)
            return HttpResponse(f"Could not merge {checkpoint.public_id} into its base model "
                                f"({type(exc).__name__}: {exc}).", status=422, content_type="text/plain")
    files = checkpoint_export.export_files(folder)  # leaves out resume state and the merge's COMPLETE marker
    safe_name = f"{checkpoint.job.public_id}-epoch{checkpoint.epoch}-step{checkpoint.step}-{fmt}.zip"
    response = StreamingHttpResponse(in_thread(checkpoint_export.stream_zip(files)), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{safe_name}"'
    return response

"""The Evals pages (admins only): the list, a new eval with its "Try it" box, an eval with its runs on
snapshots and their results, the items of runs side by side, and a grader's agreement with people's
ratings of a rating task."""

import json
from collections import defaultdict

from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from config.access import admin_required
from evals.forms import (
    ROW_FIELDS,
    CriteriaJsonError,
    EvalForm,
    RunForm,
    TryForm,
    apply_eval_error,
    criteria_from,
    grader_rows,
    snapshot_choices,
)
from evals.models import Eval, EvalRun, OutputItem
from evals.requests import EvalError, check_criteria, eval_fields, first_item, item_schema, run_fields

ITEMS_PER_PAGE = 20
RESULT_RUNS = 50
MAX_COMPARED_RUNS = 8


def _get_eval(eval_id):
    return get_object_or_404(Eval, public_id=eval_id)


@admin_required
@require_GET
def evals(request):
    # One page of evals, and for each its count of runs and its newest run: never every run of every eval.
    page = Paginator(Eval.objects.annotate(n_runs=Count("runs")), 50).get_page(request.GET.get("page"))
    page.object_list = [{"eval": eval_obj, "n_runs": eval_obj.n_runs,
                         "last": eval_obj.runs.order_by("-created_at", "-id").first()} for eval_obj in page]
    return render(request, "evals/evals.html", {"page": page})


# --- a new eval ------------------------------------------------------------------------

def _new_context(form, rows, try_form=None, tried=None):
    examples = {}
    for file_id, data_file in list(form.files_by_id.items())[:50]:
        item = first_item(data_file, max_bytes=16 * 1024)
        if item is not None:
            examples[file_id] = json.dumps(item, indent=1, ensure_ascii=False)
    if try_form is None:
        chosen = form["prompt_file"].value() or next(iter(examples), None)
        try_form = TryForm(initial={"try_item": examples.get(chosen, "")})
    return {"form": form, "rows": rows, "try_form": try_form, "tried": tried, "examples": examples,
            "row_fields": ROW_FIELDS}


def _store_upload(request, data):
    """Store an uploaded prompt file first, so a bad submit loses nothing; its error, or None."""
    from training.datasets import store_upload

    upload = request.FILES.get("prompt_upload")
    if upload is None:
        return None
    data_file, report = store_upload(upload.chunks(), upload.name, owner=request.user, purpose="evals")
    if not report.ok:
        first = report.errors[0] if report.errors else {"line": None, "message": ""}
        where = f"line {first['line']}: " if first.get("line") else ""
        return (f"{data_file.filename} has {report.n_errors} error(s) ({where}{first['message']}); it is kept as "
                f"{data_file.public_id} but cannot feed an eval.")
    data["prompt_file"] = data_file.public_id
    return None


@admin_required
@require_http_methods(["GET", "POST"])
def eval_new(request):
    if request.method == "GET":
        form = EvalForm()
        return render(request, "evals/eval_new.html", _new_context(form, grader_rows()))
    data = request.POST.copy()
    upload_error = _store_upload(request, data)
    form, rows = EvalForm(data), grader_rows(data)
    valid = form.is_valid() & (rows.is_valid() or _uses_json(form))
    if upload_error:
        form.add_error("prompt_upload", upload_error)
    elif valid:
        created = _create_eval(request, form, rows)
        if created is not None:
            return redirect("eval_detail", eval_id=created.public_id)
    return render(request, "evals/eval_new.html", _new_context(form, rows), status=400)


def _uses_json(form):
    return bool((form.cleaned_data.get("criteria_json") or "").strip())


def _create_eval(request, form, rows):
    """The stored Eval, or None with the problems on the forms."""
    data_file = form.files_by_id.get(form.cleaned_data.get("prompt_file"))
    if data_file is None:
        form.add_error("prompt_file", "Pick a prompt file, or upload one.")
        return None
    item = first_item(data_file)
    if item is None:
        form.add_error("prompt_file", f"The first line of {data_file.public_id} is not a JSON object that can "
                                      "show the items' fields.")
        return None
    try:
        criteria, from_json = criteria_from(form, rows)
    except CriteriaJsonError as exc:
        form.add_error("criteria_json", str(exc))
        return None
    body = {"name": form.cleaned_data["name"], "metadata": None,
            "data_source_config": {"type": "custom", "item_schema": item_schema(item)},
            "testing_criteria": criteria, "attune": {"data_source": form.data_source()}}
    try:
        fields = eval_fields(body)
    except EvalError as exc:
        apply_eval_error(exc, form, rows, from_json)
        return None
    return Eval.objects.create(owner=request.user, **fields)


# --- try it ---------------------------------------------------------------------------------

def _grade_sample(criteria, sample, item):
    from evals.judges import StudioJudge
    from graders import run_grader

    judge = StudioJudge()
    out = []
    for grader in criteria:
        result = run_grader(grader, sample, item, judge=judge)
        errors = sorted(k for k, v in result.metadata["errors"].items() if v is True)
        out.append({"name": grader["name"], "type": grader["type"], "score": result.reward,
                    "passed": result.passed, "errors": errors, "messages": result.messages,
                    "sub_rewards": result.sub_rewards})
    return out


def _try(criteria_source, try_form):
    """{"results": [...]} or {"error": "..."}: each grader's verdict on the sample."""
    if not try_form.is_valid():
        return {"error": "; ".join(f"{try_form[name].label}: {' '.join(errs)}"
                                   for name, errs in try_form.errors.items())}
    try:
        criteria = check_criteria(criteria_source())
    except CriteriaJsonError as exc:
        return {"error": f"Advanced: testing_criteria as JSON: {exc}"}
    except EvalError as exc:
        return {"error": f"{exc.param}: {exc.message}" if exc.param else exc.message}
    return {"results": _grade_sample(criteria, try_form.cleaned_data["try_sample"], try_form.cleaned_data["try_item"])}


@admin_required
@require_POST
def eval_try(request):
    """Grade one sample with the graders of the form (or of a stored eval, `eval`), saving nothing."""
    try_form = TryForm(request.POST)
    eval_id = request.POST.get("eval")
    if eval_id:
        eval_obj = _get_eval(eval_id)
        tried = _try(lambda: eval_obj.testing_criteria, try_form)
        if request.htmx:
            return render(request, "evals/try_result.html", {"tried": tried})
        return _render_detail(request, eval_obj, try_form=try_form, tried=tried)
    form, rows = EvalForm(request.POST), grader_rows(request.POST)
    form.is_valid()  # only the criteria matter here: the prompts and the name may come later
    if "criteria_json" not in form.errors and (rows.is_valid() or _uses_json(form)):
        tried = _try(lambda: criteria_from(form, rows)[0], try_form)
    else:
        problems = [f"{name}: {' '.join(errs)}" for name, errs in form.errors.items() if name == "criteria_json"]
        problems += [f"grader {i + 1} {name}: {' '.join(errs)}" for i, errs in enumerate(rows.errors)
                     for name, errs in errs.items()]
        problems += list(rows.non_form_errors())
        tried = {"error": "Fix the form first: " + "; ".join(problems)}
    if request.htmx:
        return render(request, "evals/try_result.html", {"tried": tried})
    return render(request, "evals/eval_new.html", _new_context(form, rows, try_form, tried))


# --- an eval, its runs and their results --------------------------------------------------------

def _result_rows(eval_obj):
    names = eval_obj.criteria_names
    runs = list(eval_obj.runs.order_by("-created_at", "-id")[:RESULT_RUNS])
    rows = []
    for run in runs:
        summary = {row["name"]: row for row in run.summary()}
        rows.append({"run": run, "cells": [summary.get(name) for name in names],
                     "progress": run.n_done / run.n_items if run.n_items else 0})
    return rows


def _render_detail(request, eval_obj, run_form=None, try_form=None, tried=None, status=200):
    rows = _result_rows(eval_obj)
    example = ""
    source = (eval_obj.epoch_data_source or {}).get("source") or {}
    if source.get("type") == "file_id":
        from training.models import DataFile

        data_file = DataFile.objects.filter(public_id=source.get("id")).first()
        item = first_item(data_file, max_bytes=16 * 1024) if data_file else None
        example = json.dumps(item, indent=1, ensure_ascii=False) if item is not None else ""
    context = {
        "eval": eval_obj, "rows": rows, "names": eval_obj.criteria_names,
        "active": any(not row["run"].ended for row in rows),
        "criteria": [{"grader": c, "json": json.dumps(c, indent=2, ensure_ascii=False)}
                     for c in eval_obj.testing_criteria],
        "data_source_json": json.dumps(eval_obj.epoch_data_source, indent=2, ensure_ascii=False),
        "run_form": run_form or RunForm(), "try_form": try_form or TryForm(initial={"try_item": example}),
        "tried": tried,
    }
    return render(request, "evals/eval_detail.html", context, status=status)


@admin_required
@require_GET
def eval_detail(request, eval_id):
    eval_obj = _get_eval(eval_id)
    if request.htmx and request.GET.get("fragment") == "results":
        rows = _result_rows(eval_obj)
        active = any(not row["run"].ended for row in rows)
        response = render(request, "evals/results.html", {"eval": eval_obj, "rows": rows, "active": active,
                                                          "names": eval_obj.criteria_names})
        return response if active else HttpResponseStopPolling(response.content)
    return _render_detail(request, eval_obj)


@admin_required
@require_POST
def eval_run_new(request, eval_id):
    """One run per chosen snapshot, all with the eval's data source, so they share a batch key."""
    eval_obj = _get_eval(eval_id)
    form = RunForm(request.POST, snapshots=snapshot_choices())
    if not form.is_valid():
        return _render_detail(request, eval_obj, run_form=form, status=400)
    if not eval_obj.epoch_data_source:
        form.add_error("snapshots", "This eval has no prompts (attune.data_source) to run a snapshot on; "
                                    "create it on the New eval page, or through the API with attune.data_source.")
        return _render_detail(request, eval_obj, run_form=form, status=400)
    try:
        with transaction.atomic():
            for snapshot in form.cleaned_data["snapshots"]:
                fields = run_fields(eval_obj, {"name": form.cleaned_data["name"] or snapshot, "metadata": None,
                                               "data_source": {**eval_obj.epoch_data_source, "model": snapshot}})
                EvalRun.queue(eval_obj, request.user, fields)
    except EvalError as exc:
        form.add_error("snapshots", f"{exc.param}: {exc.message}" if exc.param else exc.message)
        return _render_detail(request, eval_obj, run_form=form, status=400)
    return redirect("eval_detail", eval_id=eval_obj.public_id)


@admin_required
@require_POST
def eval_run_cancel(request, eval_id, run_id):
    eval_obj = _get_eval(eval_id)
    run = get_object_or_404(EvalRun, eval=eval_obj, public_id=run_id)
    run.cancel()
    if request.htmx:
        rows = _result_rows(eval_obj)
        return render(request, "evals/results.html", {"eval": eval_obj, "rows": rows, "names": eval_obj.criteria_names,
                                                      "active": any(not row["run"].ended for row in rows)})
    return redirect("eval_detail", eval_id=eval_obj.public_id)


# --- items side by side ---------------------------------------------------------------------

def _chosen_runs(request, eval_obj):
    """(runs, error) from `runs` (repeated or comma-separated ids); the newest runs when none is given."""
    asked = [part.strip() for value in request.GET.getlist("runs") for part in value.split(",") if part.strip()]
    if not asked:
        return list(eval_obj.runs.order_by("-created_at", "-id")[:4])[::-1], None
    if len(asked) > MAX_COMPARED_RUNS:
        return [], f"runs: at most {MAX_COMPARED_RUNS} runs side by side; {len(asked)} were asked for."
    found = {run.public_id: run for run in eval_obj.runs.filter(public_id__in=asked)}
    missing = [run_id for run_id in asked if run_id not in found]
    if missing:
        return [], f"runs: {missing[0]} is not a run of this eval."
    return [found[run_id] for run_id in dict.fromkeys(asked)], None


def _prompt_of(item):
    sample_input = (item.sample or {}).get("input")
    if sample_input:
        return sample_input
    messages = (item.datasource_item or {}).get("messages")
    if isinstance(messages, list):
        return messages
    return [{"role": "item", "content": json.dumps(item.datasource_item, ensure_ascii=False)}]


@admin_required
@require_GET
def eval_items(request, eval_id):
    eval_obj = _get_eval(eval_id)
    runs, error = _chosen_runs(request, eval_obj)
    only = request.GET.get("only", "")
    if only not in ("", "failed"):
        error = error or f"only: use 'failed' (or leave it out), not {only!r}."
    items = OutputItem.objects.filter(run__in=runs)
    indexes = items.values_list("index", flat=True)
    if only == "failed":
        indexes = indexes.filter(status__in=[OutputItem.FAIL, OutputItem.ERROR])
    page = Paginator(sorted(set(indexes)) if not error else [], ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    by_index = defaultdict(dict)
    for item in items.filter(index__in=list(page.object_list)).select_related("run"):
        by_index[item.index][item.run_id] = item
    rows = []
    for index in page.object_list:
        cells = [by_index[index].get(run.pk) for run in runs]
        first = next(cell for cell in cells if cell is not None)
        rows.append({"index": index, "prompt": _prompt_of(first), "cells": cells})
    query = "&".join([f"runs={run.public_id}" for run in runs] + (["only=failed"] if only == "failed" else []))
    return render(request, "evals/items.html", {"eval": eval_obj, "runs": runs, "rows": rows, "page": page,
                                                "failures_only": only == "failed", "error": error,
                                                "query": query},
                  status=400 if error else 200)


# --- a grader against people -----------------------------------------------------------------

def _prompt_key(messages):
    """A chat's prompt as a comparable key: roles and texts, developer as system, no trailing answer."""
    turns = [("system" if m.get("role") == "developer" else m.get("role"), str(m.get("content")))
             for m in messages or [] if isinstance(m, dict)]
    while turns and turns[-1][0] == "assistant":
        turns.pop()
    return json.dumps(turns, ensure_ascii=False)


def agreement_pairs(task):
    """{(eval, grader name): [(human mean, grader score, item index, snapshot)]}: for each prompt of the
    task and each of its snapshots, people's mean score and the grader's score of the newest completed run
    of that snapshot, matched on the prompt's messages."""
    from playground.models import Score

    items = {item.pk: item for item in task.items.all()}
    keys = {_prompt_key(item.messages): item for item in items.values()}
    human = defaultdict(list)
    for item_id, snapshot, score in Score.objects.filter(output__item__task=task).values_list(
            "output__item_id", "output__snapshot_name", "score"):
        human[(item_id, snapshot)].append(score)
    latest = {}
    for run in EvalRun.objects.filter(model__in=task.snapshot_names, status=EvalRun.COMPLETED).select_related(
            "eval").order_by("created_at", "id"):
        latest[(run.eval_id, run.model)] = run
    pairs = defaultdict(list)
    for run in latest.values():
        for output in run.items.all():
            item = keys.get(_prompt_key(_prompt_of(output)))
            scores = human.get((item.pk, run.model)) if item is not None else None
            if not scores:
                continue
            mean = sum(scores) / len(scores)
            for result in output.results:
                if result.get("error") or result.get("score") is None:
                    continue
                pairs[(run.eval, result.get("name"))].append((mean, float(result["score"]), item.index, run.model))
    return pairs


@admin_required
@require_GET
def eval_agreement(request, task_id):
    from evals.agreement import agreement
    from playground.models import RatingTask

    task = get_object_or_404(RatingTask, public_id=task_id)
    rows = []
    for (eval_obj, grader), pairs in sorted(agreement_pairs(task).items(), key=lambda kv: (kv[0][0].pk, kv[0][1])):
        stats = agreement([p[0] for p in pairs], [p[1] for p in pairs])
        rows.append({"eval": eval_obj, "grader": grader, "pairs": pairs, **stats,
                     "snapshots": sorted({p[3] for p in pairs})})
    return render(request, "evals/agreement.html", {"task": task, "rows": rows})


# --- judge endpoints ---------------------------------------------------------------------

@admin_required
@require_http_methods(["GET", "POST"])
def judge_endpoints(request):
    """External OpenAI-compatible endpoints that model graders may use as judges."""
    from django.contrib import messages

    from evals.forms import JudgeEndpointForm
    from evals.models import JudgeEndpoint

    form = JudgeEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        endpoint = JudgeEndpoint(name=form.cleaned_data["name"], base_url=form.cleaned_data["base_url"])
        endpoint.key = form.cleaned_data["api_key"]
        endpoint.save()
        messages.success(request, f"Judge endpoint {endpoint.name} added: name its models as {endpoint.name}/<model>.")
        return redirect("judge_endpoints")
    return render(request, "evals/judges.html", {"form": form, "endpoints": JudgeEndpoint.objects.order_by("name")})


@admin_required
@require_POST
def judge_endpoint_delete(request, judge_id):
    from django.contrib import messages

    from evals.models import JudgeEndpoint

    endpoint = get_object_or_404(JudgeEndpoint, pk=judge_id)
    endpoint.delete()
    messages.success(request, f"Judge endpoint {endpoint.name} removed; graders that name it no longer validate.")
    return redirect("judge_endpoints")

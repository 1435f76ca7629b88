"""Playground pages: compare snapshots, rate them, rating tasks, the leaderboard.

Blind mode: until the viewer has rated, a blind comparison's page, its
stream and every JSON answer name outputs only by position ("Model A");
the snapshot names go out in the answer to the rating itself.
"""

import csv
import datetime
import io
import json
import logging
import re

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from config.access import admin_required, is_admin, rater_required
from config.spreadsheet import safe_row
from playground.forms import CompareSnapshotsForm, RatingTaskForm
from playground.inference import InferenceError, SamplingParams, get_backend
from playground.inference.limits import HeldStream, TooManyGenerations, take_slot
from playground.leaderboard import head_to_head, leaderboard_rows, task_agreement
from playground.models import (
    Comparison,
    Output,
    Rating,
    RatingError,
    RatingTask,
    Score,
    TaskItem,
    column_label,
)
from playground.snapshots import UnknownModel, first_lineup, list_snapshots, resolve_snapshot
from training.demo import heldout_path

log = logging.getLogger(__name__)

# Helpers ---------------------------------------------------------------------


def _bad_request(message):
    """A 400 in plain text: the message may quote what the request sent, and text is never run as a page."""
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _get_comparison_for_user(request, comparison_id):
    """A comparison is its creator's own: nobody else may stream, rate or read it."""
    comparison = get_object_or_404(Comparison, public_id=comparison_id)
    if comparison.created_by_id != request.user.pk:
        raise PermissionDenied("This comparison belongs to someone else.")
    return comparison


def _get_task_for_user(request, task_id):
    """Admins see every task; an evaluator only the tasks assigned to them."""
    task = get_object_or_404(RatingTask, public_id=task_id)
    if not is_admin(request.user) and not task.is_assigned(request.user):
        raise PermissionDenied("This rating task is not assigned to you.")
    return task


def _columns(comparison, reveal):
    return [{"position": o.position, "label": column_label(o.position),
             **({"snapshot": o.snapshot_name, "error": o.error, **_timing(o)} if reveal else {})}
            for o in comparison.ordered_outputs]


def _timing(output):
    """How fast and how long an output was: shown only with the names, since speed tells a small base
    model from a full fine-tune as surely as a name does."""
    return {"n_tokens": output.n_tokens, "ttft_ms": output.ttft_ms, "tokens_per_second": output.tokens_per_second}


def _output_payload(output, reveal):
    return {"position": output.position, "status": output.status, "text": output.text,
            "error": output.error_for(reveal), "finish_reason": output.finish_reason,
            **(_timing(output) if reveal else {})}


def _sse(data):
    return f"data: {json.dumps(data)}\n\n"


def _whole(text):
    """A small non-negative whole number written in ASCII digits, or None ("²", "-1", 5,000 digits: None)."""
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None


def _read_scores(post, n):
    scores, comments = {}, {}
    for i in range(n):
        raw = post.get(f"score_{i}", "")
        if raw != "":
            try:
                scores[i] = int(raw)
            except ValueError:
                scores[i] = raw
        comment = post.get(f"comment_{i}", "").strip()
        if comment:
            comments[i] = comment[:5000]
    verdict = post.get("verdict", "")
    best = None
    if verdict.startswith("best:"):
        verdict, _, position = verdict.partition(":")
        best = _whole(position)
    return scores, comments, verdict, best


# The compare page ------------------------------------------------------------


# Admins only: evaluators rate the outputs their tasks stored. Sending prompts to snapshots of their own
# choosing would let them match a task's blind columns to names.
@admin_required
@require_GET
def playground(request):
    preselected = []
    name = request.GET.get("snapshot", "").strip()
    if name:
        try:
            preselected.append(resolve_snapshot(name).as_dict())
        except UnknownModel as exc:
            messages.error(request, str(exc))
    first_prompt = {}
    if not name:
        # Nothing asked for: base vs fine-tuned vs an earlier epoch, on a prompt the training never saw.
        preselected = [snapshot.as_dict() for snapshot in first_lineup()]
        first_prompt = _first_heldout_prompt()
    return render(request, "playground/compare_snapshots.html", {
        "preselected": preselected, "first_prompt": first_prompt, "form": CompareSnapshotsForm(),
        "max_snapshots": Comparison.MAX_SNAPSHOTS,
        "recent": Comparison.objects.filter(created_by=request.user)[:10],
    })


def _first_heldout_prompt():
    """{"system", "user"} of the first demo held-out prompt, or {} when the demo is not built."""
    try:
        with heldout_path().open(encoding="utf-8") as handle:
            messages_ = json.loads(handle.readline())["messages"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    by_role = {m.get("role"): m.get("content", "") for m in messages_ if isinstance(m, dict)}
    return {"system": by_role.get("system", ""), "user": by_role.get("user", "")}


@admin_required
@require_GET
def snapshot_search(request):
    raw_epoch = request.GET.get("epoch", "").strip()
    epoch = _whole(raw_epoch)
    if raw_epoch and epoch is None:
        return JsonResponse({"error": {"message": "epoch must be a whole number.", "param": "epoch"}}, status=400)
    found = list_snapshots(query=request.GET.get("q", ""), job=request.GET.get("job", "").strip() or None,
                           suffix=request.GET.get("suffix", "").strip() or None, epoch=epoch, limit=100)
    return JsonResponse({"data": [s.as_dict() for s in found]})


@require_POST
@admin_required
def compare_start(request):
    form = CompareSnapshotsForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": {k: [str(e) for e in v] for k, v in form.errors.items()}}, status=400)
    data = form.cleaned_data
    blind = data["blind"]
    comparison = Comparison.start(request.user, data["snapshots"], data["messages"], data["params"], blind)
    return JsonResponse({
        "id": comparison.public_id, "blind": blind, "columns": _columns(comparison, reveal=not blind),
        "stream_url": reverse("compare_stream", args=[comparison.public_id]),
        "rate_url": reverse("compare_rate", args=[comparison.public_id]),
        "page_url": reverse("comparison_detail", args=[comparison.public_id]),
    })


@rater_required
@require_GET
def compare_stream(request, comparison_id):
    """Server-sent events: {"position", "delta"} as text arrives, {"position", "done", …} per output,
    then {"finished": true}. Positions only: the snapshot names never travel in the stream."""
    comparison = _get_comparison_for_user(request, comparison_id)
    events = None
    if comparison.status == Comparison.PENDING:
        try:
            slot = take_slot(request.user)  # given back when the stream ends or the client leaves
        except TooManyGenerations as exc:
            return JsonResponse({"error": {"message": str(exc), "param": "INFERENCE_MAX_CONCURRENT_PER_USER"}},
                                status=429)
        if Comparison.objects.filter(pk=comparison.pk, status=Comparison.PENDING).update(
                status=Comparison.STREAMING):
            events = HeldStream(_generate_events(comparison), slot)
        else:  # somebody else got there first
            slot.release()
            comparison.refresh_from_db()
    if events is None:
        if comparison.status != Comparison.FINISHED:
            return JsonResponse({"error": {"message": "This comparison is already streaming elsewhere."}},
                                status=409)
        events = _replay_events(comparison)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _replay_events(comparison):
    outputs = await sync_to_async(lambda: comparison.ordered_outputs)()
    for output in outputs:
        if output.text:
            yield _sse({"position": output.position, "delta": output.text})
        yield _sse({**_output_payload(output, not comparison.blind), "done": True})
    yield _sse({"finished": True})


async def _generate_events(comparison):
    outputs = await sync_to_async(lambda: comparison.ordered_outputs)()
    snapshots, runnable = [], []
    for output in outputs:
        try:
            snapshots.append(await sync_to_async(resolve_snapshot)(output.snapshot_name))
            runnable.append(output)
        except UnknownModel as exc:
            event = _error_event(str(exc))
            await sync_to_async(output.record)(event)
            yield _sse({**_output_payload(output, not comparison.blind), "done": True})
    try:
        params = SamplingParams.from_dict(comparison.params)
        if runnable:
            async for event in get_backend().generate(snapshots, comparison.messages, params):
                output = runnable[event.index]
                if event.type == "delta":
                    yield _sse({"position": output.position, "delta": event.text})
                    continue
                await sync_to_async(output.record)(event)
                yield _sse({**_output_payload(output, not comparison.blind), "done": True})
    except InferenceError as exc:
        for output in runnable:
            if output.status == Output.PENDING:
                await sync_to_async(output.record)(_error_event(exc.message))
                yield _sse({**_output_payload(output, not comparison.blind), "done": True})
    finally:
        # Outputs left pending (the browser went away mid-stream) end as cancelled, so rating can go on.
        for output in runnable:
            if output.status == Output.PENDING:
                await sync_to_async(output.record)(_error_event("Generation was interrupted."))
        await sync_to_async(Comparison.objects.filter(pk=comparison.pk).update)(status=Comparison.FINISHED)
    yield _sse({"finished": True})


def _error_event(message):
    from playground.inference import StreamEvent

    return StreamEvent(index=0, type="error", error=message)


@require_POST
@rater_required
def compare_rate(request, comparison_id):
    comparison = _get_comparison_for_user(request, comparison_id)
    if not comparison.all_finished:
        return JsonResponse({"errors": {"__all__": ["Rate once every output has finished."]}}, status=409)
    if comparison.blind and comparison.rating_by(request.user):
        # A verdict given after the names showed would not be blind.
        return JsonResponse({"errors": {"__all__": ["You have rated this blind comparison; the names are shown "
                                                     "now, so the rating is final."]}}, status=409)
    shown = comparison.ordered_outputs
    scores, comments, verdict, best = _read_scores(request.POST, len(shown))
    try:
        Rating.save_for(request.user, shown, scores, comments, verdict, best, comparison=comparison)
    except RatingError as exc:
        return JsonResponse({"errors": exc.errors}, status=400)
    return JsonResponse({"saved": True, "columns": _columns(comparison, reveal=True),
                         "leaderboard_url": reverse("leaderboard")})


@rater_required
@require_GET
def comparison_detail(request, comparison_id):
    comparison = _get_comparison_for_user(request, comparison_id)
    rating = comparison.rating_by(request.user)
    scores = {s.output_id: s for s in rating.scores.all()} if rating else {}
    reveal = comparison.names_visible_to(request.user)
    outputs = [{"output": o, "label": column_label(o.position), "score": scores.get(o.pk),
                "error": o.error_for(reveal)} for o in comparison.ordered_outputs]
    return render(request, "playground/comparison.html", {
        "comparison": comparison, "outputs": outputs, "rating": rating, "reveal": reveal,
    })


# Rating tasks ----------------------------------------------------------------


@rater_required
@require_GET
def rating_tasks(request):
    if is_admin(request.user):
        tasks = RatingTask.objects.all()
    else:
        tasks = request.user.rating_tasks.all()
    rows = [{"task": t, "rated": t.rated_count(request.user), "assigned": t.is_assigned(request.user)}
            for t in tasks.prefetch_related("evaluators")]
    return render(request, "playground/tasks.html", {"rows": rows})


@admin_required
@require_http_methods(["GET", "POST"])
def rating_task_new(request):
    form = RatingTaskForm()
    if request.method == "POST":
        form = RatingTaskForm(request.POST, request.FILES)
        if form.is_valid():
            task = _create_task(request, form.cleaned_data)
            if task is not None:
                from playground.generation import start_generation

                start_generation(task)
                messages.success(request, f"Generating {task.n_items} × {len(task.snapshot_names)} outputs.")
                return redirect("rating_task_detail", task_id=task.public_id)
            form.add_error("prompt_source", "The demo held-out prompts are missing: run `manage.py bootstrap_demo`.")
    return render(request, "playground/task_new.html", {"form": form}, status=400 if form.errors else 200)


def _create_task(request, data):
    if data["prompt_source"] == "demo":
        from playground.forms import read_prompts

        path = heldout_path()
        if not path.exists():
            return None
        prompts, _ = read_prompts(path.read_bytes())
        source = path.name
    else:
        prompts, source = data["prompts"], data["prompts_file"].name
    with transaction.atomic():
        task = RatingTask.objects.create(name=data["name"], created_by=request.user, snapshot_names=data["snapshots"],
                                         params=data["params"], prompt_source=source, n_items=len(prompts))
        task.evaluators.set(data["evaluators"])
        TaskItem.objects.bulk_create([TaskItem(task=task, index=i, messages=p["messages"], expected=p["expected"])
                                      for i, p in enumerate(prompts)])
    return task


@rater_required
@require_GET
def rating_task_detail(request, task_id):
    task = _get_task_for_user(request, task_id)
    if request.htmx and request.GET.get("fragment") == "progress":
        response = render(request, "playground/task_progress.html", {"task": task})
        return response if task.status == RatingTask.GENERATING else HttpResponseStopPolling(response.content)
    items = task.items.all()
    own = {r.item_id: r for r in Rating.objects.filter(item__task=task, rater=request.user)}
    next_item = task.next_item_for(request.user)
    context = {"task": task, "items": [{"item": i, "rating": own.get(i.pk)} for i in items],
               "rated": len(own), "next_item": next_item, "final": task.names_revealed_to(request.user, next_item)}
    if is_admin(request.user):
        ratings = Rating.objects.filter(item__task=task)
        context["n_ratings"] = ratings.count()
        context["raters"] = [{"user": u, "rated": task.rated_count(u)} for u in task.evaluators.all()]
        context["snapshots"] = _task_snapshot_health(task)
        if task.status == RatingTask.READY and any(s["failed"] for s in context["snapshots"]):
            from playground.generation import retryable_items

            context["n_retryable"] = retryable_items(task).count()
    return render(request, "playground/task_detail.html", context)


def _task_snapshot_health(task):
    """Per snapshot of a task: how many of its outputs failed, and the first reason (admins only)."""
    rows = {name: {"name": name, "failed": 0, "reason": None} for name in task.snapshot_names}
    for output in Output.objects.filter(item__task=task, status=Output.ERROR).order_by("item__index"):
        row = rows.get(output.snapshot_name)
        if row is None:
            continue
        row["failed"] += 1
        row["reason"] = row["reason"] or output.error
    return list(rows.values())


@rater_required
@require_http_methods(["GET", "POST"])
def rating_task_rate(request, task_id):
    """The rater's queue: one prompt, its outputs blind and shuffled; rate, then the next one."""
    task = _get_task_for_user(request, task_id)
    if not task.is_assigned(request.user):
        raise PermissionDenied("Only the evaluators assigned to this task rate it.")
    asked = (request.POST if request.method == "POST" else request.GET).get("item", "")
    if asked.strip():
        index = _whole(asked)
        if index is None:
            return _bad_request(f"item must be a prompt number from 0 to {task.n_items - 1}; got {asked[:40]!r}.")
        item = get_object_or_404(TaskItem, task=task, index=index)
    elif request.method == "POST":
        return _bad_request("item: which prompt this rating is for is missing.")
    else:
        item = task.next_item_for(request.user)
        if item is None:
            messages.success(request, f"You have rated all {task.n_items} prompts of {task.name}.")
            return redirect("rating_task_detail", task_id=task.public_id)
    if task.status == RatingTask.GENERATING or not item.generated:
        messages.info(request, "The outputs of this task are still being generated.")
        return redirect("rating_task_detail", task_id=task.public_id)
    shown = task.order_for(request.user, item)
    rating = Rating.objects.filter(item=item, rater=request.user).first()
    errors = {}
    final = task.names_revealed_to(request.user)
    if request.method == "POST":
        if not task.is_open:
            raise PermissionDenied("This rating task is closed: its ratings can no longer change.")
        if final:
            # A rating changed after the names showed would not be blind.
            return HttpResponse("You have rated every prompt of this task, and its leaderboard shows the snapshot "
                                "names now, so your ratings are final.", status=409,
                                content_type="text/plain; charset=utf-8")
        scores, comments, verdict, best = _read_scores(request.POST, len(shown))
        try:
            Rating.save_for(request.user, shown, scores, comments, verdict, best, item=item)
            return redirect(reverse("rating_task_rate", args=[task.public_id]))
        except RatingError as exc:
            errors = exc.errors
    previous = {s.output_id: s for s in rating.scores.all()} if rating else {}
    columns = [{"output": o, "label": column_label(i), "position": i, "score": previous.get(o.pk),
                "error": errors.get(f"score_{i}"), "failure": o.error_for(reveal=False)}
               for i, o in enumerate(shown)]
    best_position = next((i for i, o in enumerate(shown) if rating and rating.best_id == o.pk), None)
    return render(request, "playground/task_rate.html", {
        "task": task, "item": item, "columns": columns, "rating": rating, "errors": errors,
        "rated": task.rated_count(request.user), "best_position": best_position, "final": final,
    }, status=400 if errors else 200)


PREVIEW_PAIRS = 5


@admin_required
@require_http_methods(["GET", "POST"])
def rating_task_preferences(request, task_id):
    """"Make a preference file": the task's ratings as DPO pairs (playground/preferences.py). GET previews
    the pairs for a margin (counts, what was left out, a sample); POST stores them as a data file."""
    task = _get_task_for_user(request, task_id)
    ratings = Rating.objects.filter(item__task=task).select_related("item")
    return _preference_file_page(request, ratings, {"task": task}, f"{task.public_id}-preferences.jsonl",
                                 {"rating_task": task.public_id}, f"the ratings of {task.name}")


# What the comparisons' preference page can narrow its ratings to, from its query.
COMPARISON_FILTERS = ("snapshot", "rater", "since")


@admin_required
@require_http_methods(["GET", "POST"])
def comparison_preferences(request):
    """"Make a preference file" from rated playground comparisons: every rated comparison, or those that
    showed a snapshot, were rated by one user, or made since a day. Previewed and stored as a task's are."""
    query = request.POST if request.method == "POST" else request.GET
    chosen = {name: query.get(name, "").strip()[:300] for name in COMPARISON_FILTERS}
    ratings = Rating.objects.filter(comparison__isnull=False).select_related("comparison")
    if chosen["snapshot"]:
        ratings = ratings.filter(comparison__outputs__snapshot_name=chosen["snapshot"]).distinct()
    if chosen["rater"]:
        ratings = ratings.filter(rater__username=chosen["rater"])
    if chosen["since"]:
        try:
            day = datetime.date.fromisoformat(chosen["since"])
        except ValueError:
            return HttpResponseBadRequest(f"since must be a date as YYYY-MM-DD; got {chosen['since']!r}.",
                                          content_type="text/plain")
        ratings = ratings.filter(comparison__created_at__date__gte=day)
    origin = {"comparisons": {name: value for name, value in chosen.items() if value}}
    return _preference_file_page(request, ratings, {"filters": chosen}, "comparisons-preferences.jsonl", origin,
                                 "rated playground comparisons")


def _preference_file_page(request, ratings, context, filename, origin, source):
    """The preview (GET) or the stored data file (POST) of `ratings` as DPO pairs at the request's margin;
    `origin` goes on the stored file, with the margin and the number of ratings read."""
    from playground.preferences import MARGINS, preference_jsonl, preference_pairs
    from training.datasets import MIN_EXAMPLES, store_upload

    raw = (request.POST if request.method == "POST" else request.GET).get("margin", "1")
    try:
        margin = int(raw)
        pairs, counts = preference_pairs(ratings.prefetch_related("scores__output").order_by("id"), margin=margin)
    except ValueError:  # not a number, or out of range
        return HttpResponseBadRequest(f"margin must be a whole number from {MARGINS.start} to {MARGINS.stop - 1}.",
                                      content_type="text/plain")
    context = {**context, "margin": margin, "margins": list(MARGINS), "counts": counts,
               "sample": pairs[:PREVIEW_PAIRS], "error": None}
    if request.method == "POST":
        if len(pairs) < MIN_EXAMPLES:
            context["error"] = ("No pairs at this margin: nothing was stored." if not pairs else
                                f"{len(pairs)} pair{'s' if len(pairs) > 1 else ''} at this margin, and a training "
                                f"file needs at least {MIN_EXAMPLES}: nothing was stored.") + (
                " Try a smaller margin, or rate more prompts.")
            return render(request, "playground/task_preferences.html", context, status=400)
        data_file, report = store_upload([preference_jsonl(pairs).encode()], filename, owner=request.user)
        data_file.origin = {**origin, "margin": margin, "n_ratings": counts["ratings"]}
        data_file.save(update_fields=["origin"])
        messages.success(request, f"Stored {report.n_examples} preference pairs from {source} as "
                                  f"{data_file.public_id}.")
        return redirect("dataset_detail", file_id=data_file.public_id)
    return render(request, "playground/task_preferences.html", context)


@require_POST
@admin_required
def rating_task_close(request, task_id):
    task = _get_task_for_user(request, task_id)
    task.close()
    messages.success(request, f"{task.name} is closed; its ratings are final.")
    return redirect("rating_task_detail", task_id=task.public_id)


@require_POST
@admin_required
def rating_task_restart(request, task_id):
    from playground.generation import retryable_items, start_generation

    task = _get_task_for_user(request, task_id)
    if task.status in (RatingTask.FAILED,) or task.generation_stalled:
        start_generation(task)
        messages.success(request, "Generation restarted; outputs already stored are kept.")
    elif task.status == RatingTask.READY and request.POST.get("retry") == "failed":
        n = retryable_items(task).count()
        if n:
            start_generation(task, retry_failed=True)
            messages.success(request, f"Generating the outputs of {n} prompts again; prompts someone has "
                                      "rated keep theirs.")
        else:
            messages.info(request, "No unrated prompt has a failed output.")
    else:
        messages.info(request, "Generation is not stalled.")
    return redirect("rating_task_detail", task_id=task.public_id)


# Leaderboard and its export ------------------------------------------------------


def _ratings_for(request, task):
    """The ratings a leaderboard may use. Evaluators see a task's board once their own queue is done; on the
    overall board, the compare page's ratings and those of their own tasks that they finished or that closed."""
    ratings = Rating.objects.prefetch_related(
        Prefetch("scores", queryset=Score.objects.select_related("output"))).select_related("best", "rater")
    if task is not None:
        return ratings.filter(item__task=task)
    if not is_admin(request.user):
        visible = [t.pk for t in request.user.rating_tasks.all() if t.names_revealed_to(request.user)]
        ratings = ratings.filter(Q(item__isnull=True) | Q(item__task__in=visible))
    return ratings


def _leaderboard_task(request):
    task_id = request.GET.get("task", "").strip()
    if not task_id:
        return None
    task = _get_task_for_user(request, task_id)
    if not is_admin(request.user) and not task.names_revealed_to(request.user):
        raise PermissionDenied("The task's leaderboard opens once you have rated all its prompts.")
    return task


# A board is recomputed only when its ratings change; an entry also expires after this long.
LEADERBOARD_CACHE_S = 24 * 3600


def _leaderboard_rows(ratings):
    """(rows, battles) of a queryset of ratings, from the cache when the same ratings were counted before.

    The bootstrap refits the strengths 100 times: cached under a key made from the ratings' ids and update
    times, so a new, changed or deleted rating makes a new key (in every process sharing the cache)."""
    import hashlib

    from django.core.cache import cache

    stamp = sorted(ratings.prefetch_related(None).order_by().values_list("pk", "updated_at"))
    key = "leaderboard:" + hashlib.sha256(repr(stamp).encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = leaderboard_rows(list(ratings))
        cache.set(key, found, LEADERBOARD_CACHE_S)
    return found


@rater_required
@require_GET
def leaderboard(request):
    task = _leaderboard_task(request)
    queryset = _ratings_for(request, task)
    rows, battles = _leaderboard_rows(queryset)
    ratings = list(queryset) if task is not None else None  # the agreement reads every score
    matrix = head_to_head(battles)
    names = [r["snapshot"] for r in rows]
    grid = [{"name": a, "cells": [matrix.get(a, {}).get(b) if a != b else "self" for b in names]} for a in names]
    tasks = RatingTask.objects.all() if is_admin(request.user) else request.user.rating_tasks.all()
    agreement = None
    if task is not None:
        agreement = {"interval": task_agreement(ratings, "interval"),
                     "ordinal": task_agreement(ratings, "ordinal")}
    return render(request, "playground/leaderboard.html", {
        "rows": rows, "grid": grid, "names": names, "task": task, "tasks": tasks, "agreement": agreement,
        "n_ratings": len(ratings) if ratings is not None else queryset.count(), "n_battles": len(battles),
    })


def _rating_records(ratings):
    for rating in ratings:
        for score in rating.scores.all():
            yield {
                "task": rating.item.task.public_id if rating.item_id else "",
                "item": rating.item.index if rating.item_id else "",
                "comparison": rating.comparison.public_id if rating.comparison_id else "",
                "rater": rating.rater.username, "snapshot": score.output.snapshot_name,
                "position": score.position, "label": column_label(score.position), "score": score.score,
                "comment": score.comment, "verdict": rating.verdict,
                "best": rating.best.snapshot_name if rating.best_id else "",
                "is_best": rating.best_id == score.output_id, "output": score.output.public_id,
                "rated_at": rating.updated_at.isoformat(),
            }


@rater_required
@require_GET
def leaderboard_export(request):
    kind, fmt = request.GET.get("kind", "leaderboard"), request.GET.get("format", "csv")
    if kind not in ("leaderboard", "ratings"):
        return _bad_request("kind must be leaderboard or ratings.")
    if fmt not in ("csv", "jsonl"):
        return _bad_request("format must be csv or jsonl.")
    task = _leaderboard_task(request)
    ratings = _ratings_for(request, task).select_related("item__task", "comparison")
    if kind == "ratings":
        if not is_admin(request.user):
            ratings = ratings.filter(rater=request.user)  # an evaluator exports only their own ratings
        records = list(_rating_records(ratings))
    else:
        records, _ = _leaderboard_rows(ratings)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    name = f"{kind}-{task.public_id if task else 'all'}-{stamp}.{fmt}"
    if fmt == "jsonl":
        body = "".join(json.dumps(r) + "\n" for r in records)
        response = HttpResponse(body, content_type="application/x-ndjson")
    else:
        buffer = io.StringIO()
        fields = list(records[0]) if records else ["snapshot"]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(safe_row(r) for r in records)
        response = HttpResponse(buffer.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response

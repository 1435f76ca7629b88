"""Admin pages: datasets and users. Jobs, charts, re-run and compare live here too."""

import itertools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_http_methods

from config.access import admin_required, is_admin
from dashboard.forms import EvaluatorForm, StatsModelForm, UploadForm
from training.datasets import iter_examples, stats_for, store_upload
from training.management.commands.create_user import make_user
from training.models import BaseModel, DataFile


def _get_file(file_id):
    return get_object_or_404(DataFile, public_id=file_id)


def _first_page(*names):
    for name in names:
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


@login_required
def home(request):
    if is_admin(request.user):
        return redirect(_first_page("jobs", "datasets"))
    target = _first_page("playground", "rating_tasks")
    if target:
        return redirect(target)
    return render(request, "error.html", {"code": 200, "title": "Welcome",
                                          "detail": "Ratings pages will appear here."})


@admin_required
@require_http_methods(["GET", "POST"])
def datasets(request):
    form = UploadForm()
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            data_file, report = store_upload(upload.chunks(), upload.name, owner=request.user,
                                             base_model=BaseModel.objects.first())
            if report.ok:
                messages.success(request, f"{data_file.filename}: {report.n_examples} examples, no errors.")
            else:
                messages.error(request, f"{data_file.filename} has {report.n_errors} error(s); "
                                        "it is kept so you can read them, but it cannot start a job.")
            return redirect("dataset_detail", file_id=data_file.public_id)
    files = DataFile.objects.filter(purpose="fine-tune").select_related("owner")
    page = Paginator(files, 50).get_page(request.GET.get("page"))
    default_model = BaseModel.objects.first()
    rows = [(f, f.stats.get(default_model.name, {}) if default_model else {}) for f in page]
    return render(request, "dashboard/datasets.html",
                  {"form": form, "page": page, "rows": rows, "default_model": default_model})


@admin_required
def dataset_detail(request, file_id):
    data_file = _get_file(file_id)
    chosen = StatsModelForm(request.GET or None)
    base_model = chosen.cleaned_data["base_model"] if chosen.is_valid() else None
    base_model = base_model or BaseModel.objects.first()
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
    return FileResponse(open(data_file.full_path, "rb"), as_attachment=True, filename=data_file.filename)


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


def forbidden(request, exception=None):
    detail = str(exception) if exception and str(exception) else "You do not have access to this page."
    return render(request, "error.html", {"code": 403, "title": "Forbidden", "detail": detail}, status=403)


def not_found(request, exception=None):
    return render(request, "error.html", {"code": 404, "title": "Not found",
                                          "detail": "Nothing lives at this address."}, status=404)

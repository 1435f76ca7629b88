"""Routes of the OpenAI-compatible API, mounted at /v1/. Model names contain
`:` (raw or percent-encoded; Django decodes the path before matching)."""

from django.urls import path, re_path

from api import evals, openapi, sweeps, views

urlpatterns = [
    path("files", views.files, name="api_files"),
    path("files/<str:file_id>", views.file_detail, name="api_file"),
    path("files/<str:file_id>/content", views.file_content, name="api_file_content"),
    path("fine_tuning/jobs", views.jobs, name="api_jobs"),
    path("fine_tuning/jobs/<str:job_id>", views.job_detail, name="api_job"),
    path("fine_tuning/jobs/<str:job_id>/cancel", views.job_cancel, name="api_job_cancel"),
    path("fine_tuning/jobs/<str:job_id>/pause", views.job_pause, name="api_job_pause"),
    path("fine_tuning/jobs/<str:job_id>/resume", views.job_resume, name="api_job_resume"),
    path("fine_tuning/jobs/<str:job_id>/events", views.job_events, name="api_job_events"),
    path("fine_tuning/jobs/<str:job_id>/checkpoints", views.job_checkpoints, name="api_job_checkpoints"),
    path("fine_tuning/alpha/graders/validate", evals.graders_validate, name="api_graders_validate"),
    path("fine_tuning/alpha/graders/run", evals.graders_run, name="api_graders_run"),
    path("evals", evals.evals, name="api_evals"),
    path("evals/<str:eval_id>", evals.eval_detail, name="api_eval"),
    path("evals/<str:eval_id>/runs", evals.runs, name="api_eval_runs"),
    path("evals/<str:eval_id>/runs/<str:run_id>", evals.run_detail, name="api_eval_run"),
    path("evals/<str:eval_id>/runs/<str:run_id>/cancel", evals.run_cancel, name="api_eval_run_cancel"),
    path("evals/<str:eval_id>/runs/<str:run_id>/output_items", evals.output_items, name="api_eval_output_items"),
    path("evals/<str:eval_id>/runs/<str:run_id>/output_items/<str:item_id>", evals.output_item_detail,
         name="api_eval_output_item"),
    path("attune/sweeps", sweeps.sweeps, name="api_sweeps"),
    path("attune/sweeps/<str:sweep_id>", sweeps.sweep_detail, name="api_sweep"),
    path("attune/sweeps/<str:sweep_id>/cancel", sweeps.sweep_cancel, name="api_sweep_cancel"),
    path("models", views.models, name="api_models"),
    path("models/<path:model_id>", views.model_detail, name="api_model"),
    path("chat/completions", views.chat_completions, name="api_chat_completions"),
    path("openapi.json", openapi.schema_view, name="api_openapi"),
    re_path(r"^(?P<rest>.*)$", views.unknown_route, name="api_unknown"),
]

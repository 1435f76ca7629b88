"""Routes of the OpenAI-compatible API, mounted at /v1/. Model names contain
`:` (raw or percent-encoded; Django decodes the path before matching)."""

from django.urls import path, re_path

from api import openapi, views

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
    path("models", views.models, name="api_models"),
    path("models/<path:model_id>", views.model_detail, name="api_model"),
    path("chat/completions", views.chat_completions, name="api_chat_completions"),
    path("openapi.json", openapi.schema_view, name="api_openapi"),
    re_path(r"^(?P<rest>.*)$", views.unknown_route, name="api_unknown"),
]

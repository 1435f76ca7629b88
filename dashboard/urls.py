from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.home, name="home"),
    path("datasets/", views.datasets, name="datasets"),
    path("datasets/<str:file_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<str:file_id>/download/", views.dataset_download, name="dataset_download"),
    path("users/", views.users, name="users"),
    path("models/", views.base_models, name="base_models"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/compare/", views.compare_jobs, name="compare_jobs"),
    path("jobs/<str:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<str:job_id>/rerun/", views.job_rerun, name="job_rerun"),
    path("jobs/<str:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<str:job_id>/pause/", views.job_pause, name="job_pause"),
    path("jobs/<str:job_id>/resume/", views.job_resume, name="job_resume"),
    path("sweeps/", views.sweeps, name="sweeps"),
    path("sweeps/<str:sweep_id>/", views.sweep_detail, name="sweep_detail"),
    path("sweeps/<str:sweep_id>/cancel/", views.sweep_cancel, name="sweep_cancel"),
    path("checkpoints/<str:checkpoint_id>/download/", views.checkpoint_download, name="checkpoint_download"),
]

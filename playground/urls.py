from django.urls import path

from playground import views

urlpatterns = [
    path("", views.playground, name="playground"),
    path("snapshots/", views.snapshot_search, name="playground_snapshots"),
    path("preferences/", views.comparison_preferences, name="comparison_preferences"),
    path("compare/", views.compare_start, name="compare_start"),
    path("compare/<str:comparison_id>/", views.comparison_detail, name="comparison_detail"),
    path("compare/<str:comparison_id>/stream/", views.compare_stream, name="compare_stream"),
    path("compare/<str:comparison_id>/rate/", views.compare_rate, name="compare_rate"),
    path("tasks/", views.rating_tasks, name="rating_tasks"),
    path("tasks/new/", views.rating_task_new, name="rating_task_new"),
    path("tasks/<str:task_id>/", views.rating_task_detail, name="rating_task_detail"),
    path("tasks/<str:task_id>/rate/", views.rating_task_rate, name="rating_task_rate"),
    path("tasks/<str:task_id>/close/", views.rating_task_close, name="rating_task_close"),
    path("tasks/<str:task_id>/preferences/", views.rating_task_preferences, name="rating_task_preferences"),
    path("tasks/<str:task_id>/restart/", views.rating_task_restart, name="rating_task_restart"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("leaderboard/export/", views.leaderboard_export, name="leaderboard_export"),
]

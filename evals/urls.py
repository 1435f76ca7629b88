from django.urls import path

from evals import views

urlpatterns = [
    path("", views.evals, name="evals"),
    path("new/", views.eval_new, name="eval_new"),
    path("try/", views.eval_try, name="eval_try"),
    path("judges/", views.judge_endpoints, name="judge_endpoints"),
    path("judges/<int:judge_id>/delete/", views.judge_endpoint_delete, name="judge_endpoint_delete"),
    path("agreement/<str:task_id>/", views.eval_agreement, name="eval_agreement"),
    path("<str:eval_id>/", views.eval_detail, name="eval_detail"),
    path("<str:eval_id>/runs/", views.eval_run_new, name="eval_run_new"),
    path("<str:eval_id>/runs/<str:run_id>/cancel/", views.eval_run_cancel, name="eval_run_cancel"),
    path("<str:eval_id>/items/", views.eval_items, name="eval_items"),
]

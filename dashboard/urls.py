from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.home, name="home"),
    path("datasets/", views.datasets, name="datasets"),
    path("datasets/<str:file_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<str:file_id>/download/", views.dataset_download, name="dataset_download"),
    path("users/", views.users, name="users"),
]

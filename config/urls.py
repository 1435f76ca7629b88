from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("v1/", include("api.urls")),
    path("playground/", include("playground.urls")),
    path("settings/", include("api.page_urls")),
    path("evals/", include("evals.urls")),
    path("", include("training.urls")),
    path("", include("dashboard.urls")),
]

handler403 = "dashboard.views.forbidden"
handler404 = "dashboard.views.not_found"

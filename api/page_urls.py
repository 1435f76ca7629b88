from django.urls import path

from api import pages

urlpatterns = [
    path("api-keys/", pages.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", pages.revoke_api_key, name="api_key_revoke"),
]

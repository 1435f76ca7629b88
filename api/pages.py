"""The API keys settings page: each person creates, sees and revokes their own keys."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from api.models import ApiKey


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. 'CI' or 'laptop'.")


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request):
    form = ApiKeyForm()
    created = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            key, raw = ApiKey.issue(request.user, form.cleaned_data["name"])
            # The key in clear exists only in this response; it is not stored.
            created = {"name": key.name, "key": raw}
            form = ApiKeyForm()
    keys = ApiKey.objects.filter(owner=request.user)
    return render(request, "api/api_keys.html", {"form": form, "keys": keys, "created": created,
                                                 "base_url": request.build_absolute_uri("/v1")})


@require_POST
@login_required
def revoke_api_key(request, key_id):
    key = get_object_or_404(ApiKey, pk=key_id, owner=request.user)
    key.revoke()
    messages.success(request, f"Revoked the key {key.name!r} ({key.prefix}…); it no longer works.")
    return redirect("api_keys")

"""Admin pages of the training app: webhook endpoints and their deliveries."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from config.access import admin_required
from training import webhooks
from training.models import WebhookEndpoint


class WebhookEndpointForm(forms.Form):
    url = forms.URLField(max_length=500, assume_scheme="https",
                         help_text="Where the events are POSTed; it must answer 2xx.")
    description = forms.CharField(max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in WebhookEndpoint.EVENT_TYPES], widget=forms.CheckboxSelectMultiple,
        initial=WebhookEndpoint.EVENT_TYPES, help_text="No event is sent for paused or running jobs.")

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url.startswith(("http://", "https://")):
            raise forms.ValidationError("Use an http:// or https:// URL.")
        return url


def _get_endpoint(endpoint_id):
    return get_object_or_404(WebhookEndpoint, pk=endpoint_id)


@admin_required
def webhooks_page(request):
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        endpoint = WebhookEndpoint.objects.create(
            url=form.cleaned_data["url"], description=form.cleaned_data["description"],
            event_types=form.cleaned_data["event_types"], secret=webhooks.new_secret(), created_by=request.user)
        messages.success(request, f"Endpoint added. Verify its signatures with the secret {endpoint.secret}.")
        return redirect("webhook_detail", endpoint_id=endpoint.pk)
    endpoints = WebhookEndpoint.objects.all()
    return render(request, "training/webhooks.html", {"form": form, "endpoints": endpoints})


@admin_required
def webhook_detail(request, endpoint_id):
    endpoint = _get_endpoint(endpoint_id)
    deliveries = endpoint.deliveries.select_related("job")[:200]
    return render(request, "training/webhook_detail.html", {"endpoint": endpoint, "deliveries": deliveries})


@require_POST
@admin_required
def webhook_toggle(request, endpoint_id):
    endpoint = _get_endpoint(endpoint_id)
    endpoint.enabled = not endpoint.enabled
    endpoint.save(update_fields=["enabled"])
    return redirect("webhook_detail", endpoint_id=endpoint.pk)


@require_POST
@admin_required
def webhook_delete(request, endpoint_id):
    endpoint = _get_endpoint(endpoint_id)
    endpoint.delete()
    messages.success(request, f"Endpoint {endpoint.url} removed with its delivery history.")
    return redirect("webhooks")

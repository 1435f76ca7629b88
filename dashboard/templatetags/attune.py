from django import template
from django.urls import reverse
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, url_name, label):
    """A navigation link, marked current on its own page. A name that names no page raises NoReverseMatch:
    a renamed page must not drop out of the navigation unnoticed."""
    url = reverse(url_name)
    path = context["request"].path
    current = path == url or (url != "/" and path.startswith(url))
    if current:
        return format_html('<a href="{}" class="current" aria-current="page">{}</a>', url, label)
    return format_html('<a href="{}">{}</a>', url, label)


@register.filter
def status_class(status):
    return {
        "succeeded": "ok", "processed": "ok", "running": "run", "queued": "wait", "validating_files": "wait",
        "paused": "wait", "uploaded": "wait", "failed": "bad", "error": "bad", "cancelled": "muted",
    }.get(status, "muted")


@register.filter
def filesize(n):
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024

from django import template

register = template.Library()


@register.filter
def score(value):
    """A score with three decimals, or an en dash when there is none."""
    return "–" if value is None else f"{value:.3f}"


@register.filter
def percent(value):
    return "–" if value is None else f"{value * 100:.0f} %"


@register.filter
def run_class(status):
    return {"completed": "ok", "in_progress": "run", "queued": "wait", "failed": "bad", "canceled": "muted",
            "pass": "ok", "fail": "bad", "error": "wait"}.get(status, "muted")


@register.filter
def at(values, index):
    """values[index] in a template."""
    try:
        return values[index]
    except (IndexError, KeyError, TypeError):
        return None
